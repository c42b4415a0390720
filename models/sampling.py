"""Ray sampling: where along each ray the field is evaluated. Pure functions plus small sampler objects.

Two spaces, as in the release: forward-facing NDC (``steps_ndc``: evenly spaced in [near, far], jittered in
training) and a world box (``steps_box``: fixed steps from the ray's entry into the box). A sampler object
(:data:`SAMPLERS`, chosen by ``--sampling``) wraps them, plugged into :func:`models.rendering.render_rays` without
touching fields or compositing:

- ``dense``: the release's sampling, every sample evaluated.
- ``fast``: the same sample positions, but samples in cells of an occupancy grid that hold no density at any time
  are marked invalid, so neither density nor colour is evaluated there (:class:`OccupancySampler`). In training
  (NDC scenes), :class:`ImportanceSampler` goes further: a coarse pass without gradients evaluates the density at a
  share of those positions, and the batch is fitted at fewer samples drawn where the coarse weights are; the last
  iterations of a fit (the polish) take the samples a fast render looks at (:class:`MarchedSampler`).

Renders (``train=False``) always use the dense positions, so test views, paths and depth for editing are those of
the release's sampling whatever the training sampler was.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import torch
from torch import Tensor

from common.errors import UserError

from . import compiled_march
from .compositing import HEAVY_WEIGHT, Times, alpha_weights, frame_blocks, sample_weights
from .occupancy import FeatureVolumes, OccupancyGrid, TimeVolume, factors_version

EARLY_STOP_SEGMENT = 64  # samples per step of a render's ray march (OccupancySampler.march)


class SamplingError(UserError, ValueError):
    """A sampling option out of its range, or an unknown sampler name."""


@dataclass
class RaySamples:
    """Samples along a batch of rays.

    Attributes:
        xyz: ``[n_rays, n_samples, 3]`` box-space points.
        z_vals: ``[n_rays or 1, n_samples]`` ray parameters (shared by all rays in NDC).
        dists: ``[n_rays, n_samples]`` distance to the next sample (last = 0), before ``distance_scale``.
        viewdirs: ``[n_rays, 3]`` unit ray directions.
        valid: ``[n_rays, n_samples]`` bool, False outside the box.
    """

    xyz: Tensor
    z_vals: Tensor
    dists: Tensor
    viewdirs: Tensor
    valid: Tensor


def inside_box(xyz: Tensor, aabb: Tensor) -> Tensor:
    """``[..., 3]`` points -> ``[...]`` bool, True inside the closed box ``aabb [2, 3]``."""
    return ~((aabb[0] > xyz) | (xyz > aabb[1])).any(dim=-1)


def next_distances(z_vals: Tensor) -> Tensor:
    """``z_{i+1} - z_i`` with 0 for the last sample, ``[..., S]`` -> ``[..., S]``."""
    return torch.cat([z_vals[..., 1:] - z_vals[..., :-1], torch.zeros_like(z_vals[..., :1])], dim=-1)


@dataclass
class RaySteps:
    """Where samples lie along rays before any point is made: sample ``j`` of ray ``i`` is at
    ``origins[i] + directions[i] * z_vals[i or 0, j]``. A marched render (:meth:`OccupancySampler.march`) makes the
    points of the rays and samples it looks at only; :meth:`samples` makes all of them.

    Attributes:
        origins, directions: ``[n_rays, 3]`` (NDC: the rays as given; box: unit directions).
        z_vals: ``[n_rays or 1, n_samples]`` ray parameters.
        dists: ``[n_rays, n_samples]`` distance to the next sample (last = 0), before ``distance_scale``.
        viewdirs: ``[n_rays, 3]`` unit ray directions.
    """

    origins: Tensor
    directions: Tensor
    z_vals: Tensor
    dists: Tensor
    viewdirs: Tensor

    def z(self, rays: Tensor, part: slice) -> Tensor:
        """``[len(rays) or 1, samples in part]`` ray parameters of samples ``part`` of rays ``rays``."""
        return self.z_vals[:, part] if self.z_vals.shape[0] == 1 else self.z_vals[rays, part]

    def points(self, rays: Tensor, z: Tensor) -> Tensor:
        """``[len(rays), S, 3]`` points of rays ``rays`` at ray parameters ``z [len(rays) or 1, S]`` (:meth:`z`)."""
        return self.origins[rays, None, :] + self.directions[rays, None, :] * z[..., None]

    def point(self, ray: Tensor, index: Tensor) -> Tensor:
        """``[N, 3]`` box-space points of samples ``index`` of rays ``ray`` (both ``[N]``)."""
        z = self.z_vals[0, index] if self.z_vals.shape[0] == 1 else self.z_vals[ray, index]
        return self.points(ray, z[:, None])[:, 0]

    def split(self, size: int) -> list[RaySteps]:
        """The steps of consecutive blocks of ``size`` rays."""
        parts = [slice(start, start + size) for start in range(0, self.origins.shape[0], size)]
        return [replace(self, origins=self.origins[p], directions=self.directions[p], dists=self.dists[p],
                        z_vals=self.z_vals if self.z_vals.shape[0] == 1 else self.z_vals[p], viewdirs=self.viewdirs[p])
                for p in parts]

    def normalized(self, aabb: Tensor) -> RaySteps:
        """The same steps with points in box-normalized coordinates (``[-1, 1]`` inside ``aabb``)."""
        scale = 2.0 / (aabb[1] - aabb[0])
        return replace(self, origins=(self.origins - aabb[0]) * scale - 1, directions=self.directions * scale)

    def cube_range(self) -> tuple[Tensor, Tensor]:
        """``[n_rays]`` ray parameters where each ray enters and leaves the cube ``[-1, 1]^3`` (of normalized steps;
        enter > leave for a ray that misses it)."""
        with torch.no_grad():
            flat = self.directions == 0
            safe = torch.where(flat, torch.ones_like(self.directions), self.directions)
            a, b = (-1 - self.origins) / safe, (1 - self.origins) / safe
            # a ray parallel to a face: inside that slab for every t, or never
            slab = self.origins.abs() <= 1
            low = torch.where(flat, torch.where(slab, -math.inf, math.inf), torch.minimum(a, b))
            high = torch.where(flat, torch.where(slab, math.inf, -math.inf), torch.maximum(a, b))
            return low.amax(-1), high.amin(-1)

    def samples(self, aabb: Tensor) -> RaySamples:
        """Every sample's point, valid where it lies inside ``aabb``."""
        xyz = self.origins[:, None, :] + self.directions[:, None, :] * self.z_vals[..., None]
        return RaySamples(xyz=xyz, z_vals=self.z_vals, dists=self.dists, viewdirs=self.viewdirs,
                          valid=inside_box(xyz, aabb))


@dataclass
class Marched:
    """A marched render's rays (:meth:`OccupancySampler.march_weights`).

    Attributes:
        steps: where the samples lie.
        weights: ``[n_rays, n_samples]`` compositing weights (0 at samples not looked at).
        anchor_weights: ``[n_rays, n_samples]`` or None: the weight each shaded sample carries in
            :func:`models.compositing.shading_anchors`' split, 0 at samples not shaded (None: not computed; the
            renderer derives them from ``weights``).
    """

    steps: RaySteps
    weights: Tensor
    anchor_weights: Tensor | None = None


def inside_range(steps: RaySteps, rays: Tensor, start: int, z: Tensor, enter: Tensor, leave: Tensor,
                 aabb: Tensor) -> Tensor:
    """Which samples ``start ..`` of rays ``rays`` (ray parameters ``z [len(rays), S]``) lie inside ``aabb``, from each
    ray's interval ``[enter, leave]`` (:meth:`RaySteps.cube_range`, all rays) instead of a test per point and axis.

    A sample within rounding of the interval's ends (a box-mode ray's first sample lies on the face it enters by)
    is decided by :func:`inside_box` on its point, as the dense sampler decides it.
    """
    lo, hi = enter[rays, None], leave[rays, None]
    slack = 1e-5 * (1 + torch.maximum(lo.abs(), hi.abs()).clamp(max=1e30))
    inside = (z >= lo - slack) & (z <= hi + slack)
    ray, index = torch.nonzero(inside & ((z < lo + slack) | (z > hi - slack)), as_tuple=True)
    inside[ray, index] = inside_box(steps.point(rays[ray], index + start), aabb)
    return inside


def steps_ndc(rays_o: Tensor, rays_d: Tensor, near: float, far: float, n_samples: int, train: bool,
              generator: torch.Generator | None = None) -> RaySteps:
    """Evenly spaced NDC samples, jittered in training by one random row shared by the batch.

    Args:
        rays_o, rays_d: ``[n_rays, 3]`` NDC rays (directions not normalized).
        near, far: sampling range of the ray parameter.
        n_samples: samples per ray.
        train: add the jitter ``U[0, (far - near) / n_samples)`` per sample position.
        generator: random source of the jitter.

    Returns:
        Steps with ``dists`` scaled by ``|rays_d|`` and unit ``viewdirs``.
    """
    z_vals = torch.linspace(near, far, n_samples, device=rays_o.device, dtype=rays_o.dtype).unsqueeze(0)
    if train:
        jitter = torch.rand(z_vals.shape, generator=generator, device=generator.device if generator else None)
        z_vals = z_vals + jitter.to(z_vals) * ((far - near) / n_samples)
    norm = torch.linalg.norm(rays_d, dim=-1, keepdim=True)
    return RaySteps(origins=rays_o, directions=rays_d, z_vals=z_vals, dists=next_distances(z_vals) * norm,
                    viewdirs=rays_d / norm)


def steps_box(rays_o: Tensor, rays_d: Tensor, near: float, far: float, n_samples: int, step: float, aabb: Tensor,
              train: bool, generator: torch.Generator | None = None) -> RaySteps:
    """Samples every ``step`` from where a ray enters the box (clamped to [near, far]); one jitter per ray.

    Args:
        rays_o, rays_d: ``[n_rays, 3]`` world rays; directions are normalized here, so ``z_vals`` are distances.
        near, far: clamp of the entry parameter.
        n_samples: samples per ray.
        step: spacing of the samples.
        aabb: ``[2, 3]`` box, where the samples start.
        train: shift each ray's samples by ``U[0, 1) * step``.
        generator: random source of the jitter.
    """
    viewdirs = rays_d / torch.linalg.norm(rays_d, dim=-1, keepdim=True)
    vec = torch.where(viewdirs == 0, torch.full_like(viewdirs, 1e-6), viewdirs)
    rate_a = (aabb[1] - rays_o) / vec
    rate_b = (aabb[0] - rays_o) / vec
    t_min = torch.minimum(rate_a, rate_b).amax(-1).clamp(min=near, max=far)
    steps = torch.arange(n_samples, device=rays_o.device, dtype=rays_o.dtype)[None].expand(rays_o.shape[0], -1)
    if train:
        jitter = torch.rand((rays_o.shape[0], 1), generator=generator, device=generator.device if generator else None)
        steps = steps + jitter.to(steps)
    z_vals = t_min[:, None] + step * steps
    return RaySteps(origins=rays_o, directions=viewdirs, z_vals=z_vals, dists=next_distances(z_vals),
                    viewdirs=viewdirs)


class RaySampler(Protocol):
    """What :func:`models.rendering.render_rays` needs from a sampler (``t``: the batch's time, for samplers that
    look at the field's density)."""

    def __call__(self, field, rays_o: Tensor, rays_d: Tensor, n_samples: int, train: bool,
                 generator: torch.Generator | None = None, t: float = 0.0) -> RaySamples: ...


class DenseSampler:
    """The release's sampling: every ray gets ``n_samples`` samples (NDC or box), nothing is skipped.

    Args:
        ndc: rays are in NDC (``ndc_ray = 1``).
    """

    def __init__(self, ndc: bool):
        self.ndc = ndc

    def __call__(self, field, rays_o: Tensor, rays_d: Tensor, n_samples: int, train: bool,
                 generator: torch.Generator | None = None, t: float = 0.0) -> RaySamples:
        return self.steps(field, rays_o, rays_d, n_samples, train, generator).samples(field.aabb)

    def steps(self, field, rays_o: Tensor, rays_d: Tensor, n_samples: int, train: bool = False,
              generator: torch.Generator | None = None) -> RaySteps:
        """The samples' positions along the rays, before their points are made."""
        near, far = field.near_far
        if self.ndc:
            return steps_ndc(rays_o, rays_d, near, far, n_samples, train, generator)
        return steps_box(rays_o, rays_d, near, far, n_samples, field.step_size, field.aabb, train, generator)


class OccupancySampler:
    """Dense sample positions; samples in empty cells of an :class:`models.occupancy.OccupancyGrid` are invalid.

    The grid lives here. It is built from the field on first use, and again when the field's grid resolution
    changed or a different field is rendered; :meth:`refresh` rebuilds it on demand (the trainer does so
    periodically, as the field changes while fitting).

    Args:
        ndc: rays are in NDC (``ndc_ray = 1``).
        alpha_thres: opacity over one sampling step below which a cell counts as empty.
        max_cells: cells per axis at most.
        dilation: cells added around the occupied ones.
        min_transmittance: also skip samples whose transmittance is surely below this (behind matter that is
            opaque at every time; they carry at most this much of a ray's weight together); 0 turns it off.
        render_volume_mib: renders (``train=False``, one time) use a :class:`models.occupancy.TimeVolume` of the
            frame's time when the field's node volume fits in this many MiB: the occupancy grid of that time and the
            density looked up in one volume; 0 turns it off (the all-times grid and the field's own lookups). The
            compiled appearance lookups of CPU renders keep that time's appearance factors within the same budget.
        color_voxels: renders evaluate colour about every this many grid cells along a ray's weighted run (every
            ``round(color_voxels / step_ratio)`` samples, and at the run's first and last), and interpolate it
            linearly in between (:func:`models.compositing.shading_anchors`); 0: at every weighted sample, as dense
            mode does.
        compiled: CPU renders with a time volume march in one compiled loop, and CPU renders of VM fields look
            their appearance up in another (:mod:`models.compiled_march`), when numba is installed; False: always
            the PyTorch march (:meth:`march`) and the field's own lookups.
    """

    def __init__(self, ndc: bool, *, alpha_thres: float = 1e-4, max_cells: int = 256, dilation: int = 0,
                 min_transmittance: float = 1e-4, render_volume_mib: float = 512, color_voxels: float = 2.0,
                 compiled: bool = True):
        if not color_voxels >= 0:
            raise SamplingError(f"--render_color_voxels must be 0 (colour at every sample) or more, got {color_voxels}")
        self.ndc = ndc
        self.dense = DenseSampler(ndc)
        self.alpha_thres, self.max_cells, self.dilation = float(alpha_thres), int(max_cells), int(dilation)
        self.min_transmittance = float(min_transmittance)
        # renders stop each ray once its transmittance is below this (march)
        self.early_stop = float(min_transmittance)
        self.color_voxels = float(color_voxels)
        self.compiled = bool(compiled)
        self.grid: OccupancyGrid | None = None
        self._built_version: tuple | None = None  # factors_version of the field the grid was built from
        self.time_volume = TimeVolume(render_volume_mib, self.alpha_thres, self.max_cells)
        self.appearance = compiled_march.TimeAppearance(render_volume_mib)

    def color_stride(self, field) -> int:
        """Samples between colour evaluations in ``field``'s renders (``color_voxels`` in sampling steps)."""
        return max(1, round(self.color_voxels / field.step_ratio))

    def refresh(self, field) -> OccupancyGrid:
        """Rebuild the grid from ``field`` now."""
        self.grid = OccupancyGrid.from_field(field, alpha_thres=self.alpha_thres, max_cells=self.max_cells,
                                             dilation=self.dilation)
        self._built_version = factors_version(field)
        return self.grid

    def grid_for(self, field) -> OccupancyGrid:
        """The grid, rebuilt first when it was made for another field or grid resolution."""
        # (field, grid size): the first two entries of its version; training refreshes it periodically, not per step
        if self.grid is None or self._built_version[:2] != factors_version(field)[:2]:
            self.refresh(field)
        return self.grid

    def render_volume(self, field, t: float) -> TimeVolume | None:
        """The time volume of a render of ``field`` at time ``t``, or None (a field too large for the budget)."""
        return self.time_volume.update(field, float(t)) if self.time_volume.usable(field) else None

    def march_weights(self, field, rays_o: Tensor, rays_d: Tensor, n_samples: int, t: float,
                      color_stride: int = 0, segment: int = EARLY_STOP_SEGMENT) -> Marched:
        """A render's compositing weights at the dense positions: :meth:`march`'s densities composited, or the same
        weights from the compiled march (CPU renders with a time volume, see :mod:`models.compiled_march`), which
        also gives the shading anchors' weights of ``color_stride`` > 0 (0: weights only)."""
        volume = self.render_volume(field, t)
        if self.compiled and volume is not None and compiled_march.usable(rays_o, volume.volume):
            steps = self.dense.steps(field, rays_o, rays_d, n_samples)
            anchors = (field.rayMarch_weight_thres, HEAVY_WEIGHT, color_stride) if color_stride > 0 else None
            weights, anchor_weights = compiled_march.march_weights(
                steps, steps.dists * field.distance_scale, field.aabb, volume.volume, volume.grid,
                field.fea2denseAct, field.density_shift, self.early_stop, segment, anchors)
            return Marched(steps, weights, anchor_weights)
        steps, sigma = self.march(field, rays_o, rays_d, n_samples, t, segment)
        return Marched(steps, alpha_weights(sigma, steps.dists * field.distance_scale)[1])

    def app_features(self, field, points: Tensor, t: float) -> Tensor:
        """A render's appearance features at box-normalized ``points [N, 3]`` inside the box: ``field.app_features``,
        or the same from the compiled lookup (CPU renders of VM fields, :class:`models.compiled_march.TimeAppearance`).
        """
        if self.compiled and self.appearance.usable(field, points):
            return self.appearance.features(field, points, t)
        return field.app_features(points, t)

    def march(self, field, rays_o: Tensor, rays_d: Tensor, n_samples: int, t: float,
              segment: int = EARLY_STOP_SEGMENT) -> tuple[RaySteps, Tensor]:
        """A render's densities at the dense positions, marched ``segment`` samples at a time over the rays still
        seen (early ray termination).

        In each segment, only the rays whose transmittance is still above ``early_stop`` are looked at, and of
        their samples only those inside the box and in occupied cells: of the time's occupancy grid, with the
        density looked up in the time's volume (:meth:`render_volume`); or, when the volume does not fit, of the
        all-times grid with the field's own lookups. Samples never looked at have density 0 (empty cells, or behind
        transmittance ``early_stop``: together at most that share of a ray's weight). ``early_stop`` 0 looks at
        every ray to its end.

        Returns:
            ``(steps, sigma [n_rays, n_samples])``.
        """
        volume = self.render_volume(field, t)
        if volume is not None:
            grid, density = volume.grid, (lambda points: volume.density(field, points))
        else:
            # a render sees the field as it is now (training batches use the periodically refreshed grid)
            if self.grid is None or self._built_version != factors_version(field):
                self.refresh(field)
            grid, density = self.grid, (lambda points: field.density(points, t))
        steps = self.dense.steps(field, rays_o, rays_d, n_samples)
        box = steps.normalized(field.aabb)  # points go straight to the lookups, in box-normalized coordinates
        enter, leave = box.cube_range()
        dists = steps.dists * field.distance_scale
        sigma = torch.zeros(dists.shape, device=rays_o.device, dtype=rays_o.dtype)
        optical_depth = torch.zeros(dists.shape[0], device=rays_o.device, dtype=rays_o.dtype)
        active = torch.arange(dists.shape[0], device=rays_o.device)
        limit = -math.log(self.early_stop) if self.early_stop > 0 else math.inf
        for start in range(0, n_samples, segment):
            part = slice(start, start + segment)
            z = box.z(active, part)
            points = box.points(active, z)
            look = inside_range(steps, active, start, z, enter, leave, field.aabb) & grid.lookup_normalized(points)
            if field.alphaMask is not None:  # a release checkpoint's mask (such fields have no time volume)
                world = (points[look] + 1) * ((field.aabb[1] - field.aabb[0]) / 2) + field.aabb[0]
                look[look.clone()] = field.alphaMask.sample_alpha(world) > 0
            where = torch.nonzero(look.view(-1)).squeeze(1)
            block = torch.zeros(look.shape, device=rays_o.device, dtype=rays_o.dtype)
            block.view(-1).index_copy_(0, where, density(points.view(-1, 3).index_select(0, where)).to(block.dtype))
            sigma[:, part].index_copy_(0, active, block)
            if limit < math.inf:
                depth = optical_depth[active] + (block * dists[:, part].index_select(0, active)).sum(-1)
                optical_depth[active] = depth
                active = active[depth < limit]
                if active.numel() == 0:
                    break
        return steps, sigma

    def __call__(self, field, rays_o: Tensor, rays_d: Tensor, n_samples: int, train: bool,
                 generator: torch.Generator | None = None, t: Times = 0.0) -> RaySamples:
        samples = self.dense(field, rays_o, rays_d, n_samples, train, generator)
        grid = self.grid_for(field)
        cells = grid.cell_index(samples.xyz)
        valid = samples.valid & torch.take(grid.occupied, cells)
        if self.min_transmittance > 0:
            dists = samples.dists.expand(valid.shape) * field.distance_scale
            valid = valid & grid.visible(cells, samples.valid, dists, self.min_transmittance)
        return replace(samples, valid=valid)


def sample_pdf(edges: Tensor, weights: Tensor, n_samples: int, uniform_mix: float, train: bool,
                generator: torch.Generator | None = None) -> Tensor:
    """Ray parameters drawn from piecewise-constant densities over bins (inverse transform, stratified).

    Args:
        edges: ``[n_rays, B + 1]`` increasing bin edges.
        weights: ``[n_rays, B]`` non-negative bin weights (need not sum to 1).
        n_samples: samples per ray.
        uniform_mix: share of the probability spread evenly over the bins, so every bin keeps being sampled.
        train: one uniform draw inside each of the ``n_samples`` strata; else the strata's centres.
        generator: random source of the draws.

    Returns:
        ``[n_rays, n_samples]`` sorted ray parameters inside ``[edges[:, 0], edges[:, -1]]``.
    """
    n_rays, bins = weights.shape
    pdf = weights + 1e-8
    pdf = (1.0 - uniform_mix) * pdf / pdf.sum(-1, keepdim=True) + uniform_mix / bins
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], dim=-1)
    cdf = cdf / cdf[:, -1:]
    if train:
        offsets = torch.rand((n_rays, n_samples), generator=generator,
                             device=generator.device if generator else None).to(cdf)
    else:
        offsets = torch.full((n_rays, n_samples), 0.5, dtype=cdf.dtype, device=cdf.device)
    u = (torch.arange(n_samples, dtype=cdf.dtype, device=cdf.device) + offsets) / n_samples
    index = torch.searchsorted(cdf.contiguous(), u.contiguous(), right=True).clamp(1, bins)
    cdf_lo, cdf_hi = cdf.gather(1, index - 1), cdf.gather(1, index)
    edge_lo, edge_hi = edges.gather(1, index - 1), edges.gather(1, index)
    share = (u - cdf_lo) / (cdf_hi - cdf_lo).clamp(min=1e-12)
    return (edge_lo + share.clamp(0, 1) * (edge_hi - edge_lo)).sort(dim=-1).values


class ImportanceSampler:
    """Training samples where the field's weights are: a coarse pass, then fewer samples with gradients.

    1. the ``coarse`` sampler places ``coarse_ratio * n_samples`` samples (the release's NDC positions, thinned by
       the occupancy grid when ``coarse`` is an :class:`OccupancySampler`); their density is evaluated without
       gradients and composited into weights;
    2. ``fine_ratio * n_samples`` (at least ``min_fine``) ray parameters are drawn from those weights (each coarse
       sample's weight spread over the interval up to the next one, ``uniform_mix`` of the mass spread evenly, so
       empty-looking space keeps being visited and density can still grow there);
    3. the returned samples are those, each spanning the distance to the next one (the last one to ``far``).

    Only training batches (``train=True``) of NDC rays are resampled; renders get ``coarse``'s dense positions, so
    they are the release's renders of the same field.

    Args:
        coarse: the sampler of the coarse pass and of renders.
        coarse_ratio, fine_ratio: coarse and fine samples as a share of the dense count ``n_samples``.
        uniform_mix: share of the fine samples' probability spread evenly along the ray.
        min_fine: fine samples at least (short rays lose quality with too few).
        volumes: node feature volumes for the coarse pass (:class:`FeatureVolumes`); the coarse samples are then
            the dense positions (the volumes hold about zero density in empty cells) and their density is looked up
            in the volumes. None, or volumes not :meth:`~FeatureVolumes.usable` for the field: the field is
            evaluated at ``coarse``'s samples.
        compiled: with volumes, float32 CPU rays are marched through them in a compiled loop
            (:func:`models.compiled_march.march_weights`); False: PyTorch operators.
    """

    def __init__(self, coarse: RaySampler, *, coarse_ratio: float = 0.25, fine_ratio: float = 0.05,
                 uniform_mix: float = 0.3, min_fine: int = 16, volumes: FeatureVolumes | None = None,
                 compiled: bool = True):
        if not (0 < coarse_ratio <= 1 and 0 < fine_ratio <= 1 and 0 <= uniform_mix <= 1):
            raise SamplingError(f"importance sampling needs coarse_ratio and fine_ratio in (0, 1] and uniform_mix in "
                                f"[0, 1] (--importance_coarse {coarse_ratio}, --importance_fine {fine_ratio}, "
                                f"--importance_uniform {uniform_mix})")
        self.coarse = coarse
        self.ndc = getattr(coarse, "ndc", True)
        self.coarse_ratio, self.fine_ratio, self.uniform_mix = coarse_ratio, fine_ratio, uniform_mix
        self.min_fine = int(min_fine)
        self.volumes = volumes
        self.compiled = compiled

    def __call__(self, field, rays_o: Tensor, rays_d: Tensor, n_samples: int, train: bool,
                 generator: torch.Generator | None = None, t: float = 0.0) -> RaySamples:
        if not train or not self.ndc:
            return self.coarse(field, rays_o, rays_d, n_samples, train, generator, t=t)

        near, far = field.near_far
        n_coarse = max(2, round(n_samples * self.coarse_ratio))
        n_fine = min(n_samples, max(2, self.min_fine, round(n_samples * self.fine_ratio)))
        with torch.no_grad():
            if self.volumes is not None and self.volumes.usable(field):
                coarse = getattr(self.coarse, "dense", self.coarse).steps(field, rays_o, rays_d, n_coarse, train,
                                                                          generator)
                weights = self._volume_weights(field, coarse, t)
            else:
                coarse = self.coarse(field, rays_o, rays_d, n_coarse, train, generator, t=t)
                weights = sample_weights(field, coarse, field.normalize_coord(coarse.xyz), t)
            z = coarse.z_vals.expand(rays_o.shape[0], -1)
            end = (z[:, -1:] + (far - near) / n_coarse).clamp(max=far)
            z_vals = sample_pdf(torch.cat([z, end], -1), weights, n_fine, self.uniform_mix, train, generator)
            following = torch.cat([z_vals[:, 1:], torch.full_like(z_vals[:, :1], far)], dim=-1)
        xyz = rays_o[:, None, :] + rays_d[:, None, :] * z_vals[..., None]
        norm = torch.linalg.norm(rays_d, dim=-1, keepdim=True)
        return RaySamples(xyz=xyz, z_vals=z_vals, dists=(following - z_vals) * norm, viewdirs=rays_d / norm,
                          valid=inside_box(xyz, field.aabb))

    def _volume_weights(self, field, steps: RaySteps, t: Times) -> Tensor:
        """The coarse samples' compositing weights ``[n_rays, n_coarse]``, their density read in the frames' node
        volumes: one compiled march per frame block for float32 CPU rays (:func:`models.compiled_march.march_weights`
        without an occupancy grid nor early stop: the same weights up to float rounding), else PyTorch operators."""
        weights = march_frame_blocks(field, steps, t, self.volumes, None, 0.0, 1) if self.compiled else None
        if weights is None:
            samples = steps.samples(field.aabb)
            feature = self.volumes.feature(field, field.normalize_coord(samples.xyz), t)
            return alpha_weights(field.activate_density(feature) * samples.valid,
                                 steps.dists * field.distance_scale)[1]
        return weights


def march_frame_blocks(field, steps: RaySteps, t: Times, volumes: FeatureVolumes, grid: OccupancyGrid | None,
                       early_stop: float, segment: int) -> Tensor | None:
    """Compositing weights ``[n_rays, n_samples]`` of ``steps``, each frame block of rays (one per time of ``t``)
    marched through its frame's node volume in the compiled loop (:func:`models.compiled_march.march_weights`, with
    ``grid``, ``early_stop`` and ``segment``); None when the loop cannot take these rays or volumes."""
    size, times = frame_blocks(steps.origins.shape[0], t)
    blocks = [volumes.volume(field, time)[0, 0] for time in times]
    if not all(compiled_march.usable(steps.origins, volume) for volume in blocks):
        return None
    return torch.cat([compiled_march.march_weights(block, block.dists * field.distance_scale, field.aabb, volume,
                                                   grid, field.fea2denseAct, field.density_shift, early_stop,
                                                   segment)[0]
                      for block, volume in zip(steps.split(size), blocks)])


class MarchedSampler:
    """Training samples at the dense positions a fast render looks at: the polish's sampler (the last
    ``--importance_polish`` share of a fast fit, where the model fits the quadrature of its renders).

    Each frame block of a batch is marched through that frame's node volume (:class:`FeatureVolumes`) in the
    occupancy grid of ``sampler`` with its early stop, as a render marches (:meth:`OccupancySampler.march_weights`);
    the samples returned valid are those the march gives a weight: inside the box, in an occupied cell, of density
    above zero, and not behind the point where the ray's transmittance fell below the early stop (checked every
    ``EARLY_STOP_SEGMENT`` samples, as renders check it). Renders give the others no weight; with the ``relu``
    density, those in front of the stop get no gradient either. On the large benchmark scene this keeps 213 of the
    393 samples a ray that :class:`OccupancySampler` keeps with the all-times grid.

    The volumes hold the field as it was when they were built (the trainer rebuilds them when the polish starts and
    every ``occupancy_every`` iterations): until the next rebuild, a sample whose density was zero then (or whose
    opacity rounded to zero, softplus) stays out, as the importance sampler's coarse pass misses density that grew
    since. With ``compiled`` and float32 CPU rays the march is :func:`models.compiled_march.march_weights`; else the
    same march in PyTorch operators (the same samples up to float rounding). Renders, and fields whose volumes do not
    fit their budget, get ``sampler``'s own samples.

    Args:
        sampler: the fast sampler (its grid, dense positions and early stop).
        volumes: the frames' node volumes.
        compiled: march in the compiled loop when it can (``--fit_compiled``).
    """

    def __init__(self, sampler: OccupancySampler, volumes: FeatureVolumes, compiled: bool = True):
        self.sampler, self.volumes, self.compiled = sampler, volumes, bool(compiled)
        self.ndc = sampler.ndc

    def __call__(self, field, rays_o: Tensor, rays_d: Tensor, n_samples: int, train: bool,
                 generator: torch.Generator | None = None, t: Times = 0.0) -> RaySamples:
        if not (train and self.volumes.usable(field)):
            return self.sampler(field, rays_o, rays_d, n_samples, train, generator, t=t)
        steps = self.sampler.dense.steps(field, rays_o, rays_d, n_samples, train, generator)
        samples = steps.samples(field.aabb)
        with torch.no_grad():
            weights = self.weights(field, steps, samples, t)
        return replace(samples, valid=weights > 0)

    def weights(self, field, steps: RaySteps, samples: RaySamples, t: Times) -> Tensor:
        """The march's compositing weights ``[n_rays, n_samples]`` of ``steps`` (whose points are ``samples``), one
        frame block of rays per time of ``t``; 0 at the samples it does not look at."""
        grid, stop = self.sampler.grid_for(field), self.sampler.early_stop
        weights = (march_frame_blocks(field, steps, t, self.volumes, grid, stop, EARLY_STOP_SEGMENT)
                   if self.compiled else None)
        if weights is not None:
            return weights
        xyz, dists = field.normalize_coord(samples.xyz), steps.dists * field.distance_scale
        sigma = field.activate_density(self.volumes.feature(field, xyz, t))
        sigma = sigma * (samples.valid & grid.lookup_normalized(xyz))
        weights = alpha_weights(sigma, dists)[1]
        if stop > 0:  # behind a segment whose end the ray reached below the early stop's transmittance: not looked at
            depth = torch.cumsum(sigma * dists, dim=-1)[:, EARLY_STOP_SEGMENT - 1::EARLY_STOP_SEGMENT]
            first = torch.ones((depth.shape[0], 1), dtype=torch.bool, device=depth.device)  # the first segment
            seen = torch.cat([first, depth < -math.log(stop)], dim=-1)
            weights = weights * seen.repeat_interleave(EARLY_STOP_SEGMENT, dim=1)[:, :weights.shape[1]]
        return weights


SAMPLERS: dict[str, Callable[..., RaySampler]] = {"dense": DenseSampler, "fast": OccupancySampler}


def build_sampler(name: str, ndc: bool, **options) -> RaySampler:
    """The sampler registered under ``name`` (``--sampling``); ``options`` go to its constructor (for ``fast``:
    ``alpha_thres``, ``max_cells``, ``dilation``, ``min_transmittance``, ``render_volume_mib``, ``color_voxels``,
    ``compiled``)."""
    if name not in SAMPLERS:
        raise SamplingError(f"unknown sampling {name!r}: choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name](ndc=ndc, **options)
