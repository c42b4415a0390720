"""Fitting a stream TensoRF field to a scene's images; shared by ``stream_train.py`` and the editing program.

The :class:`Trainer` reads colours from ``scene.images`` at every step, so another process may replace images
while it fits (the editing loop). Schedules follow the release (``../shared/spec/stream-tensorf.md``): Adam (0.9, 0.99),
``lr *= lr_decay_target_ratio ** (1 / n_iters)`` after every step, TV weights decayed by the same factor before
each use, grid upsampling after the iterations of ``upsamp_list`` with the optimizer rebuilt at the initial
learning rates, periodic test evaluation, a checkpoint every ``n_iters // 10`` iterations. With ``sampling = fast``
the first ``occupancy_warmup`` iterations sample densely; then the occupancy grid of the fast sampler is rebuilt
from the field every ``occupancy_every`` iterations (and after each upsampling, when the grid resolution changes).
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from common.atomic import remove_stale_temporaries
from common.image_io import depth_to_color, to_uint8, write_rgb

from .checkpoint import checkpoint_name, save_checkpoint
from .compositing import distortion
from .fields import N_to_reso, StreamTensorBase, n_samples_for, voxel_schedule
from .occupancy import FeatureVolumes
from .pixel_batches import MotionSampler, UniformSampler
from .registry import build_model
from .regularizers import density_l1, orthogonality, tv_loss
from .rendering import render_image, render_rays
from .sampling import ImportanceSampler, MarchedSampler, OccupancySampler, RaySampler, build_sampler
from .settings import FitSettings

log = logging.getLogger(__name__)

def field_from_args(args: argparse.Namespace, scene) -> StreamTensorBase:
    """A new field for ``scene`` from the release's options (grid at ``N_voxel_init`` in the scene box)."""
    reso = N_to_reso(args.N_voxel_init, scene.scene_box)
    return build_model(
        args.model_name, scene.scene_box, reso, density_n_comp=args.n_lamb_sigma, appearance_n_comp=args.n_lamb_sh,
        app_dim=args.data_dim_color, near_far=scene.near_far, shadingMode=args.shadingMode,
        alphaMask_thres=args.alpha_mask_thre, density_shift=args.density_shift, distance_scale=args.distance_scale,
        rayMarch_weight_thres=args.rm_weight_mask_thre, pos_pe=args.pos_pe, view_pe=args.view_pe,
        fea_pe=args.fea_pe, featureC=args.featureC, step_ratio=args.step_ratio, fea2denseAct=args.fea2denseAct,
        num_frames=scene.num_frames, ld_per_frame=args.ld_per_frame)


def psnr_from_mse(mse: float) -> float:
    return -10.0 * math.log10(max(mse, 1e-12))


class Trainer:
    """Fits ``field`` to ``scene.images``, one batch of one frame per step.

    Args:
        field: the field (moved to ``device``).
        scene: a :class:`dataloader.Scene`; colours are read from ``scene.images`` at every step.
        settings: schedules and loss weights.
        device: where the field runs.
        run_dir: where checkpoints, TensorBoard logs and periodic test renders go; None writes nothing.
        start_iteration: first iteration to run (the saved iteration + 1 when resuming).
        optimizer_state: an optimizer ``state_dict`` to resume Adam's moments.
        tensorboard: write TensorBoard scalars into ``run_dir``.

    Attributes:
        iteration: the next iteration to run.
    """

    def __init__(self, field: StreamTensorBase, scene, settings: FitSettings, *, device: str | torch.device = "cpu",
                 run_dir: str | Path | None = None, start_iteration: int = 0, optimizer_state: dict | None = None,
                 tensorboard: bool = True):
        self.device = torch.device(device)
        self.field = field.to(self.device)
        self.scene = scene
        self.settings = settings
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.iteration = self.start_iteration = int(start_iteration)
        self.generator = torch.Generator().manual_seed(settings.seed + self.iteration)
        self.sampler = build_sampler(settings.sampling, scene.ndc, **settings.sampler_options())
        self.dense_sampler = build_sampler("dense", scene.ndc)
        self.importance: dict | None = None  # ImportanceSampler options, when training batches are resampled
        self.volumes: FeatureVolumes | None = None  # the coarse pass's node feature volumes, rebuilt periodically
        self._polish_volumes = False  # the volumes were rebuilt for the polish
        if isinstance(self.sampler, OccupancySampler) and settings.importance_fine > 0:
            if scene.ndc:
                self.volumes = FeatureVolumes(scene.num_frames, settings.importance_volumes_mib)
                self.importance = {"coarse_ratio": settings.importance_coarse, "fine_ratio": settings.importance_fine,
                                   "uniform_mix": settings.importance_uniform, "min_fine": settings.importance_min_fine,
                                   "volumes": self.volumes, "compiled": settings.fit_compiled}
            else:
                log.info("importance sampling is for NDC scenes only: fitting with the occupancy grid alone")
        self.pixel_sampler: UniformSampler | None = None
        factor = settings.lr_factor
        voxels = voxel_schedule(settings.N_voxel_init, settings.N_voxel_final, len(settings.upsamp_list))
        self.upsample_at = dict(zip(settings.upsamp_list, voxels))
        self.n_samples = min(int(settings.nSamples), n_samples_for(self.field.gridSize, settings.step_ratio))
        self.tv_density = settings.TV_weight_density * factor**self.iteration
        self.tv_app = settings.TV_weight_app * factor**self.iteration
        self.optimizer = self._build_optimizer(self.lr_scale_at(self.iteration))
        if optimizer_state is not None:
            try:
                self.optimizer.load_state_dict(optimizer_state)
            except ValueError as err:
                log.warning("optimizer state not restored (%s); Adam restarts with fresh moments", err)
        self.writer = None
        if self.run_dir is not None:
            remove_stale_temporaries(self.run_dir, "ckpt-*.th")
        if self.run_dir is not None and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir))
        self.recent_psnr: list[float] = []
        self.test_psnr: float | None = None
        self.written: set[Path] = set()  # checkpoints this trainer wrote (the only ones it may remove)

    # -- schedules -------------------------------------------------------------------------------------------
    def lr_scale_at(self, iteration: int) -> float:
        """Learning-rate multiplier (of ``lr_init``/``lr_basis``) at the start of ``iteration``."""
        s = self.settings
        done = [u for u in s.upsamp_list if u < iteration]
        if done:
            last = max(done)
            base = 1.0 if s.lr_upsample_reset else s.lr_decay_target_ratio ** (last / s.n_iters)
            return base * s.lr_factor ** (iteration - 1 - last)
        return s.lr_factor**iteration

    def _build_optimizer(self, scale: float) -> torch.optim.Optimizer:
        groups = self.field.param_groups(self.settings.lr_init * scale, self.settings.lr_basis * scale)
        # the fused kernel (CPU and CUDA) is the same update in one pass: 1 ms a step at 128^3 on a CPU, not 6
        fused = self.device.type in ("cpu", "cuda")
        return torch.optim.Adam(groups, betas=(0.9, 0.99), fused=fused)

    def _pixel_sampler(self) -> UniformSampler:
        start = self.settings.uniform_sampling_from
        uniform = 0 <= start <= self.iteration
        if self.pixel_sampler is None or (uniform and isinstance(self.pixel_sampler, MotionSampler)):
            kind = UniformSampler if uniform else MotionSampler
            log.info("pixel sampling: %s from iteration %d", kind.__name__, self.iteration)
            per_frame = max(1, self.settings.batch_size // self.settings.batch_frames)
            self.pixel_sampler = kind(self.scene, per_frame, generator=self.generator)
        return self.pixel_sampler

    def upsample(self, n_voxels: int) -> None:
        """Resize the grid to hold ``n_voxels`` and rebuild the optimizer (at the initial rates when
        ``lr_upsample_reset``)."""
        s = self.settings
        reso = N_to_reso(n_voxels, self.field.aabb.cpu())
        self.n_samples = min(int(s.nSamples), n_samples_for(reso, s.step_ratio))
        self.field.upsample(reso)
        scale = 1.0 if s.lr_upsample_reset else s.lr_decay_target_ratio ** (self.iteration / s.n_iters)
        self.optimizer = self._build_optimizer(scale)

    def ray_sampler(self) -> RaySampler:
        """The ray sampler of the current iteration: dense during the occupancy warm-up, then the fast one, whose
        grid is rebuilt from the field every ``occupancy_every`` iterations; with ``importance_fine > 0`` (NDC) either
        is the coarse pass of an :class:`models.sampling.ImportanceSampler`, except in the last ``importance_polish``
        share of ``n_iters`` (the polish: the model then fits at the dense positions its renders look at,
        :class:`models.sampling.MarchedSampler`, its volumes rebuilt as it starts)."""
        s = self.settings
        if not isinstance(self.sampler, OccupancySampler):
            return self.sampler
        if self.volumes is not None and self.iteration % max(1, s.occupancy_every) == 0:
            self.volumes.clear()
        if self.iteration < s.occupancy_warmup:
            sampler = self.dense_sampler
        else:
            if self.sampler.grid is None or (self.iteration - s.occupancy_warmup) % max(1, s.occupancy_every) == 0:
                grid = self.sampler.refresh(self.field)
                if self.writer is not None:
                    self.writer.add_scalar("train/occupancy", grid.fraction, self.iteration)
            sampler = self.sampler
        polish = round(s.importance_polish * s.n_iters)
        polishing = polish > 0 and self.iteration >= s.n_iters - polish
        if not self.importance:
            return sampler
        if not polishing:
            return ImportanceSampler(sampler, **self.importance)
        if sampler is self.sampler and self.volumes is not None:
            if not self._polish_volumes:  # the polish's first marched batch reads the field as it is now
                self.volumes.clear()
                self._polish_volumes = True
            return MarchedSampler(self.sampler, self.volumes, compiled=s.fit_compiled)
        return sampler

    # -- one step --------------------------------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        """Run iteration ``self.iteration``: one batch (of ``batch_frames`` frames), one optimizer step, the
        schedules; then advance.

        Returns:
            ``iteration``, ``mse``, ``psnr`` and the regularizer values of this step.
        """
        s, field_, scene = self.settings, self.field, self.scene
        pixel_sampler = self._pixel_sampler()
        batches = [pixel_sampler() for _ in range(s.batch_frames)]
        white_bg = s.white_bkgd or bool(torch.rand(1, generator=self.generator) < 0.5)
        ray_sampler = self.ray_sampler()
        # every frame's rays in one call (a call per frame costs 3x as much in small operations)
        frames = torch.cat([torch.full_like(b.cams, b.frame) for b in batches])
        origins, directions = scene.rays(frames, *(torch.cat([getattr(b, k) for b in batches])
                                                   for k in ("cams", "ys", "xs")))[:2]
        target = torch.cat([scene.rgb(b.frame, b.cams, b.ys, b.xs) for b in batches]).to(self.device)
        times = [float(scene.times[b.frame]) for b in batches]
        # the polish (the fast or marched sampler, with importance sampling configured) fits colour as renders shade
        polishing = self.importance is not None and isinstance(ray_sampler, (OccupancySampler, MarchedSampler))
        stride = self.sampler.color_stride(field_) if polishing and s.importance_polish_anchors else 1
        # one render of all frames' rays (grouped by frame in equal blocks); the field's lookups in compiled loops
        # during the step only (renders keep the PyTorch operators: the dense reference)
        before, field_.compiled_lookups = getattr(field_, "compiled_lookups", False), bool(s.fit_compiled)
        try:
            out = render_rays(field_, ray_sampler, origins.to(self.device), directions.to(self.device),
                              times[0] if len(times) == 1 else times, n_samples=self.n_samples, train=True,
                              white_bg=white_bg, generator=self.generator, color_stride=stride)
        finally:
            field_.compiled_lookups = before
        mse = F.mse_loss(out["rgb"], target)
        total = mse
        stats = {}
        if s.distortion_weight > 0:
            reg = distortion(out["weights"], out["z_vals"]).mean()
            total = total + s.distortion_weight * reg
            stats["reg_distortion"] = reg.item()
        if s.Ortho_weight > 0:
            reg = orthogonality(field_)
            total = total + s.Ortho_weight * reg
            stats["reg"] = reg.item()
        if s.L1_weight_inital > 0:
            reg = density_l1(field_)
            total = total + s.L1_weight_inital * reg
            stats["reg_l1"] = reg.item()
        if self.tv_density > 0:
            self.tv_density *= s.lr_factor
            reg = tv_loss(field_, "density", compiled=bool(s.fit_compiled)) * self.tv_density
            total = total + reg
            stats["reg_tv_density"] = reg.item()
        if self.tv_app > 0:
            self.tv_app *= s.lr_factor
            reg = tv_loss(field_, "app", compiled=bool(s.fit_compiled)) * self.tv_app
            total = total + reg
            stats["reg_tv_app"] = reg.item()
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        # renders' cached volumes compare this (a fused step leaves the tensors' version counters as they were)
        field_.optimizer_steps = getattr(field_, "optimizer_steps", 0) + 1
        for group in self.optimizer.param_groups:
            group["lr"] = group["lr"] * s.lr_factor

        iteration = self.iteration
        if iteration in self.upsample_at:
            self.upsample(self.upsample_at[iteration])
        self.iteration += 1
        mse_value = mse.item()
        return {"iteration": iteration, "mse": mse_value, "psnr": psnr_from_mse(mse_value), **stats}

    # -- loop ------------------------------------------------------------------------------------------------
    def train(self, n: int | None = None, progress: bool = True) -> dict[str, float]:
        """Run ``n`` steps (default: up to ``settings.n_iters``) with logging, periodic test renders and
        checkpoints (the last two only with a ``run_dir``).

        Returns:
            The last step's stats, plus ``test_psnr`` when a test evaluation ran.
        """
        s = self.settings
        end = s.n_iters if n is None else self.iteration + n
        stats: dict[str, float] = {}
        # the bar shows the real iteration out of the total, also after a resume
        bar = tqdm(total=end, initial=self.iteration, disable=not progress, miniters=s.progress_refresh_rate,
                   dynamic_ncols=True)
        while self.iteration < end:
            stats = self.after_step(self.step())
            if stats["iteration"] % s.progress_refresh_rate == 0:
                test = f"{self.test_psnr:.2f}" if self.test_psnr is not None else "-"
                bar.set_description(f"Iteration {stats['iteration']:05d}: train_psnr = "
                                    f"{np.mean(self.recent_psnr):.2f} test_psnr = {test} mse = {stats['mse']:.6f}")
                self.recent_psnr = []
            bar.update(1)
        bar.close()
        if self.writer is not None:
            self.writer.flush()
        return stats

    def close(self) -> None:
        """Close the TensorBoard writer (its thread writes into the run directory until then)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def after_step(self, stats: dict[str, float]) -> dict[str, float]:
        """What follows every step of a run (:meth:`train`'s loop, or a caller's own loop such as the edit's):
        TensorBoard scalars, the periodic test evaluation and the periodic checkpoint (the last two only with a
        ``run_dir``). Returns ``stats``, with ``test_psnr`` when an evaluation ran."""
        s = self.settings
        iteration = stats["iteration"]
        self.recent_psnr.append(stats["psnr"])
        if self.writer is not None:
            self.writer.add_scalar("train/PSNR", stats["psnr"], iteration)
            self.writer.add_scalar("train/mse", stats["mse"], iteration)
            for key, value in stats.items():
                if key.startswith("reg"):
                    self.writer.add_scalar(f"train/{key}", value, iteration)
        if s.vis_every > 0 and s.N_vis != 0 and iteration % s.vis_every == s.vis_every - 1:
            self.test_psnr = self.evaluate(s.N_vis, prefix=f"{iteration:06d}_", n_samples=self.n_samples)
            stats["test_psnr"] = self.test_psnr
            if self.writer is not None:
                self.writer.add_scalar("test/psnr", self.test_psnr, iteration)
        if self.run_dir is not None and iteration % s.checkpoint_period == 0:
            self.save()
        return stats

    @torch.no_grad()
    def evaluate(self, n_vis: int = -1, prefix: str = "", n_samples: int | None = None,
                 save: bool = True) -> float:
        """Mean PSNR of the test cameras against ``scene.images`` at ``n_vis`` evenly spaced frames (-1: all).

        Renders go to ``{run_dir}/imgs_vis/{prefix}cam{XX}_{frame:03d}.png`` (colour | depth) when ``save``.
        """
        scene = self.scene
        if isinstance(self.sampler, OccupancySampler):
            self.sampler.refresh(self.field)
        step = 1 if n_vis < 0 else max(scene.num_frames // max(n_vis, 1), 1)
        frames = list(range(0, scene.num_frames, step))
        psnrs = []
        for cam in scene.test_cams:
            for frame in frames:
                out = render_image(self.field, self.sampler, scene, frame, cam, n_samples=n_samples,
                                   chunk=self.settings.chunk, white_bg=self.settings.white_bkgd)
                mse = torch.mean((out["rgb"].cpu() - scene.image(frame, cam)) ** 2).item()
                psnrs.append(psnr_from_mse(mse))
                if save and self.run_dir is not None:
                    rgb = to_uint8(out["rgb"])
                    depth = depth_to_color(out["depth"].cpu().numpy(), scene.near_far)
                    write_rgb(self.run_dir / "imgs_vis" / f"{prefix}cam{scene.cam_ids[cam]:02d}_{frame:03d}.png",
                                np.concatenate([rgb, depth], axis=1))
        return float(np.mean(psnrs)) if psnrs else float("nan")

    # -- checkpoints -----------------------------------------------------------------------------------------
    def save(self, path: str | Path | None = None, keep_others: bool = False) -> Path | None:
        """Checkpoint after the last completed iteration (``{run_dir}/ckpt-{iteration}.th``, atomically), with the
        optimizer state; older ``ckpt-*.th`` of the run dir are then removed unless ``keep_others`` (not when
        ``path`` is given)."""
        if self.iteration == self.start_iteration and path is None:
            # nothing new: a resumed checkpoint (perhaps the user's own file, under this very name) stays as it is
            log.info("no iteration completed since iteration %d: nothing to checkpoint", self.start_iteration)
            return None
        auto = path is None
        if auto:
            if self.run_dir is None:
                raise ValueError("Trainer.save needs a path when the trainer has no run_dir")
            path = self.run_dir / checkpoint_name(self.iteration - 1)
            if path.exists() and path not in self.written:  # another run's checkpoint under this name: kept aside
                kept, n = path.with_name(path.name + ".kept"), 1
                while kept.exists():
                    kept, n = path.with_name(f"{path.name}.kept{n}"), n + 1
                path.replace(kept)
                log.warning("%s was not written by this run: moved to %s before saving", path, kept)
        path = save_checkpoint(self.field, path, iteration=self.iteration - 1, optimizer=self.optimizer)
        if auto and not keep_others:
            # only checkpoints this trainer wrote: a resumed-from or earlier run's checkpoint is never removed
            for old in self.written - {path}:
                old.unlink(missing_ok=True)
            self.written = {path}
        elif auto:
            self.written.add(path)
        log.info("checkpoint saved: %s", path)
        return path
