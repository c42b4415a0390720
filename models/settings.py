"""The fitting loop's settings: defaults and option help written once; ``models/config.py`` builds the
command-line options from these fields (the release's key names)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from common.settings import setting, settings_from_args

FAST_BATCH_FRAMES = 4  # frames per batch with fast sampling: better test PSNR per second than 1 or 12 (bench_train)


@dataclass
class FitSettings:
    """Options of the fitting loop (the release's names)."""

    # optimisation
    n_iters: int = setting(30000, "training iterations")
    batch_size: int = setting(4096, "rays per iteration (all of one frame)")
    lr_init: float = setting(0.02, "learning rate of the planes and lines")
    lr_basis: float = setting(1e-3, "learning rate of the basis matrix and shading MLP")
    lr_decay_iters: int = setting(-1, "iterations over which lr decays to lr * ratio; -1: n_iters")
    lr_decay_target_ratio: float = setting(0.1, "lr decay target ratio")
    lr_upsample_reset: bool = setting(True, "1: reset lr to the initial values after each upsampling")
    L1_weight_inital: float = setting(0.0, "weight of the L1 norm of the density factors")
    Ortho_weight: float = setting(0.0, "weight of the orthogonality of the line factors")
    TV_weight_density: float = setting(0.0, "weight of the TV of the density factors")
    TV_weight_app: float = setting(0.0, "weight of the TV of the appearance factors")
    distortion_weight: float = setting(
        0.0, "weight of mip-NeRF 360's distortion loss (weight spread along each ray, in NDC or ray units); it "
        "gathers each pixel's weight on a surface instead of a fog: crisper depth for the editor's warps and faster "
        "fast-mode renders; 0: off (the release)")
    seed: int = setting(20211202, "random seed (the release's value by default)")
    white_bkgd: bool = setting(False, "composite over white in training and renders", action="store_true")
    # grid and sampling
    N_voxel_init: int = setting(100**3, "initial voxel count of the grid")
    N_voxel_final: int = setting(300**3, "final voxel count of the grid")
    upsamp_list: list[int] = setting([], "iterations after which the grid is upsampled")
    nSamples: int = setting(1_000_000, "cap on the training samples per ray")
    step_ratio: float = setting(0.5, "sampling step in voxels")
    sampling: str = setting(
        "fast", "ray sampler (models.sampling.SAMPLERS): dense (the release's, every sample) or fast (skips cells of "
        "an occupancy grid that are empty at every time; in NDC, fits at fewer samples placed by a coarse pass, see "
        "--importance_*)")
    occupancy_warmup: int = setting(200, "fast sampling: iterations of dense sampling before the first occupancy "
                                         "grid")
    occupancy_every: int = setting(100, "fast sampling: rebuild the occupancy grid from the field every this many "
                                        "iterations")
    occupancy_alpha: float = setting(1e-4, "fast sampling: a cell is empty when its opacity over one sampling step "
                                           "stays below this at every time")
    occupancy_cells: int = setting(256, "fast sampling: occupancy-grid cells per axis at most")
    occupancy_dilate: int = setting(0, "fast sampling: grow the occupied cells by this many cells")
    occupancy_min_transmittance: float = setting(
        1e-4, "fast sampling: also skip samples behind matter opaque at every time, once the transmittance is surely "
        "below this; 0: off")
    occupancy_render_mib: float = setting(
        512.0, "fast sampling: renders of one frame use the density volume of that time at the grid nodes (exact) "
        "and its occupancy grid when it fits in this many MiB (CPU renders: that time's appearance factors too); "
        "0: off")
    render_color_voxels: float = setting(
        2.0, "fast sampling, renders: evaluate colour about every this many grid cells along a ray (every "
        "round(this / step_ratio) samples of its weighted run, and at the run's ends) and interpolate it in between; "
        "0: at every sample, as dense renders do")
    render_compiled: bool = setting(
        True, "fast sampling, CPU renders: march the rays and look up the appearance in compiled loops (numba; the "
        "same results as the PyTorch operators up to float rounding); 0: PyTorch operators")
    fit_compiled: bool = setting(
        True, "CPU fits: the VM field's factor lookups and their gradients, the importance sampler's coarse pass and "
        "the TV regularizer in compiled loops (numba; the PyTorch operators' results up to float rounding, a fit's "
        "step 1.6-1.8x faster); 0: PyTorch operators")
    importance_fine: float = setting(
        0.05, "fast sampling, NDC: fit each batch at this share of the dense sample count, drawn where a coarse pass "
        "puts the weight (0: fit at the dense positions)")
    importance_coarse: float = setting(0.25, "fast sampling: share of the dense sample count of the coarse pass "
                                             "(density only, no gradients)")
    importance_uniform: float = setting(0.3, "fast sampling: share of the fine samples' probability spread evenly "
                                             "along the ray")
    importance_min_fine: int = setting(16, "fast sampling: fine samples per ray at least")
    importance_polish: float = setting(
        0.03, "fast sampling: share of n_iters at the end fitted at the dense positions a fast render looks at "
        "(each frame marched through its node volume: occupied cells, density above zero, in front of the early stop), "
        "so the model fits the quadrature its renders use")
    importance_polish_anchors: bool = setting(
        True, "fast sampling: the polish fits colour where fast renders evaluate it (every --render_color_voxels "
        "cells and at heavy samples, interpolated between), not at every weighted sample; 0: every weighted sample")
    importance_volumes_mib: float = setting(
        512.0, "fast sampling: memory for the coarse pass's per-frame density volumes at the grid nodes (exact, "
        "rebuilt every occupancy_every iterations); when one volume per frame does not fit, the coarse pass "
        "evaluates the field; 0: off")
    frames_per_batch: int = setting(
        0, f"frames whose rays share one batch (batch_size / this rays each); 0: 1 with --sampling dense (the "
        f"release's one frame per batch), {FAST_BATCH_FRAMES} with fast")
    uniform_sampling_from: int = setting(-1, "iteration from which pixels are drawn uniformly instead of "
                                             "motion-aware; -1: never")
    # outputs
    ckpt_every: int = setting(-1, "checkpoint period in iterations; -1: n_iters // 10")
    N_vis: int = setting(5, "test images rendered at each periodic evaluation; -1: all frames")
    vis_every: int = setting(10000, "periodic test evaluation every this many iterations")
    progress_refresh_rate: int = setting(10, "progress bar update period in iterations")
    chunk: int = setting(4096, "rays per chunk in full-image renders")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FitSettings:
        """Settings from parsed options (missing ones keep their defaults)."""
        return settings_from_args(cls, args)

    @property
    def decay_iters(self) -> int:
        return self.lr_decay_iters if self.lr_decay_iters > 0 else self.n_iters

    @property
    def lr_factor(self) -> float:
        """Per-step multiplier of the learning rates and TV weights."""
        return self.lr_decay_target_ratio ** (1 / self.decay_iters)

    @property
    def checkpoint_period(self) -> int:
        return self.ckpt_every if self.ckpt_every > 0 else max(1, self.n_iters // 10)

    @property
    def batch_frames(self) -> int:
        """Frames per training batch (``frames_per_batch``, or the sampler's default)."""
        if self.frames_per_batch > 0:
            return self.frames_per_batch
        return FAST_BATCH_FRAMES if self.sampling == "fast" else 1

    def sampler_options(self) -> dict:
        """Constructor options of the ray sampler ``sampling`` (:func:`models.sampling.build_sampler`)."""
        if self.sampling != "fast":
            return {}
        return {"alpha_thres": self.occupancy_alpha, "max_cells": self.occupancy_cells,
                "dilation": self.occupancy_dilate, "min_transmittance": self.occupancy_min_transmittance,
                "render_volume_mib": self.occupancy_render_mib, "color_voxels": self.render_color_voxels,
                "compiled": self.render_compiled}
