"""Occupancy grid over the scene box, for all times: which cells may hold density, so samples elsewhere are skipped.

Built from the field itself, exactly: inside one cell of the field's grid (between 8 neighbouring grid nodes) the
density feature is the trilinear interpolation of the node values (each plane x line product is bilinear x linear),
so its extremes over the cell are at the cell's corners. Over time, within one row of the stream table each
factor's live channels are a linear blend of the row's two ends, so the feature (a sum of products of 2 or 3 such
factors) is a convex combination of the products with each factor taken at either end (:func:`probe_times`):
their extremes bound every time in [0, 1]. A cell is occupied when that maximum gives a density whose opacity over
one sampling step (``field.step_size * field.distance_scale``) exceeds ``alpha_thres``. Density and opacity are
monotone in the feature, so a sample in an empty cell, at any time in [0, 1], has opacity at most ``alpha_thres``:
skipping it changes nothing above that level. With ``fea2denseAct = relu`` and ``alpha_thres = 0`` the skipped
samples have density exactly 0 and renders are those of dense sampling.

The same argument with minima gives a lower bound of the density in each cell at every time (``floor``). Summed
along a ray it bounds the transmittance from above, so samples behind surfaces that are opaque at every time (the
background, and the unconstrained space behind it) can be skipped with a known bound on what they could add
(:meth:`OccupancyGrid.visible`).

Cells are indexed ``[z, y, x]`` like the field's node volume (:meth:`StreamTensorBase.node_density_feature`); a
grid larger than ``max_cells`` per axis is max-pooled down (still conservative).

:class:`FeatureVolumes`, the other cache built from the field's grid nodes, holds the density feature itself (one
volume per time) for the coarse pass of the importance sampler.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .compositing import frame_blocks
from .streaming import table_rows

log = logging.getLogger(__name__)

NODE_BUDGET = 2**24  # grid nodes evaluated at once while building (64 MiB of float32 per buffer)


def probe_times(num_frames: int, ld_per_frame: float, factor_kinds: int = 2) -> list[tuple[float, ...]]:
    """Per-factor-kind times at which the density is evaluated so that its extremes bound every time in [0, 1].

    Row ``r`` of ``R`` rows of the stream table serves times ``[r/R, (r+1)/R)``; at ``(r+1)/R`` the next row starts
    with the channels row ``r`` blends into (the table is continuous, see ``tests/test_models_streaming.py``). Every
    combination of the two ends over the factor kinds is returned; without streaming one time is enough.
    """
    if ld_per_frame == 0 or num_frames <= 1:  # one frame: its time 0 only (the table's next row is never used)
        return [(0.0,) * factor_kinds]
    rows = table_rows(num_frames, ld_per_frame)
    combos = set()
    for r in range(rows):
        for choice in itertools.product((r / rows, (r + 1) / rows), repeat=factor_kinds):
            combos.add(choice)
    return sorted(combos)


def feature_threshold(field, alpha_thres: float) -> float:
    """Density feature above which a point's opacity over one sampling step exceeds ``alpha_thres``."""
    sigma = -math.log1p(-alpha_thres) / (field.step_size * field.distance_scale)
    if field.fea2denseAct == "relu":
        return sigma
    if sigma <= 0:
        return -math.inf
    return math.log(math.expm1(sigma)) - field.density_shift  # softplus(f + shift) > sigma


class OccupancyGrid:
    """Boolean cells ``[Zc, Yc, Xc]`` over the box ``aabb``; see the module docstring.

    Args:
        occupied: bool ``[Zc, Yc, Xc]``.
        floor: float ``[Zc, Yc, Xc]`` lower bound of the density in each cell at every time.
        aabb: ``[2, 3]`` box (min, max) of the field.
        node_reso: the field's grid resolution ``(x, y, z)`` the cells were built on (``reso - 1`` cells per axis).
        factor: field cells per grid cell ``(x, y, z)`` (pooling of large grids).
    """

    def __init__(self, occupied: Tensor, floor: Tensor, aabb: Tensor, node_reso: Sequence[int],
                 factor: Sequence[int]):
        self.occupied = occupied.contiguous()  # (cells of a z-innermost volume come in its layout)
        self.floor = floor.contiguous()
        self.aabb = aabb.to(occupied.device)
        self.node_reso = [int(v) for v in node_reso]
        self.factor = [int(v) for v in factor]
        reso = torch.tensor(self.node_reso, device=occupied.device, dtype=torch.float32)
        # box space -> field-grid units: units = xyz * scale + offset (one fused pass in cell_index)
        self._scale = (reso - 1) / (self.aabb[1] - self.aabb[0]).float()
        self._offset = -self.aabb[0].float() * self._scale
        # box-normalized points ([-1, 1] in the box) -> field-grid units
        self._half = (reso - 1) / 2
        self._top = (reso - 2).long().clamp(min=0)
        self._zero = torch.zeros_like(self._top)
        self._top_f, self._zero_f = self._top.float(), self._zero.float()
        self._factor = torch.tensor(self.factor, device=occupied.device, dtype=torch.long)
        self._strides = torch.tensor([1, occupied.shape[2], occupied.shape[1] * occupied.shape[2]],
                                     device=occupied.device, dtype=torch.long)

    @property
    def fraction(self) -> float:
        """Share of occupied cells."""
        return float(self.occupied.float().mean())

    def cell_index(self, xyz: Tensor) -> Tensor:
        """Flat cell index (into ``occupied.view(-1)``) of box-space points ``[..., 3]``; points outside are
        clamped to the nearest cell."""
        return self._flat_cell(torch.addcmul(self._offset, xyz.float(), self._scale))

    def lookup(self, xyz: Tensor) -> Tensor:
        """Occupancy of box-space points ``[..., 3]`` -> bool ``[...]``."""
        return torch.take(self.occupied, self.cell_index(xyz))

    def lookup_normalized(self, points: Tensor) -> Tensor:
        """Occupancy of box-normalized points ``[..., 3]`` (``[-1, 1]`` inside the box; points outside read the
        nearest cell) -> bool ``[...]``."""
        return torch.take(self.occupied, self._flat_cell(torch.addcmul(self._half, points.float(), self._half)))

    def _flat_cell(self, units: Tensor) -> Tensor:
        """Flat cell index of points in field-grid units ``[..., 3]`` (float32; clamped in place)."""
        # clamped while still float (half the memory of int64); truncation is then the floor
        cell = units.clamp_(min=self._zero_f, max=self._top_f).long()
        if self.factor != [1, 1, 1]:
            cell = cell // self._factor
        x, y, z = cell.unbind(-1)  # no reduction over the last (size 3) axis
        return z.mul(self._strides[2]).add_(y, alpha=int(self._strides[1])).add_(x)

    def visible(self, cells: Tensor, valid: Tensor, dists: Tensor, min_transmittance: float) -> Tensor:
        """Samples whose transmittance may still exceed ``min_transmittance`` (an upper bound from ``floor``).

        The samples left out lie behind matter opaque at every time: together they carry at most
        ``min_transmittance`` of the ray's weight.

        Args:
            cells: long ``[n_rays, n_samples]`` from :meth:`cell_index`.
            valid: bool ``[n_rays, n_samples]`` samples inside the box.
            dists: ``[n_rays, n_samples]`` sample spacing already multiplied by ``distance_scale``.
            min_transmittance: in (0, 1).

        Returns:
            bool ``[n_rays, n_samples]``.
        """
        depth = (torch.take(self.floor, cells) * dists).masked_fill_(~valid, 0.0)
        before = torch.cumsum(depth, dim=-1).sub_(depth)  # optical depth in front of each sample
        return before < -math.log(min_transmittance)

    @classmethod
    @torch.no_grad()
    def from_field(cls, field, *, alpha_thres: float = 1e-4, max_cells: int = 256, dilation: int = 0,
                   times: Sequence[float | Sequence[float]] | None = None) -> OccupancyGrid:
        """Build the grid of ``field`` over all times.

        Args:
            field: a :class:`models.fields.StreamTensorBase`.
            alpha_thres: opacity over one sampling step below which a cell counts as empty.
            max_cells: cells per axis at most (larger grids are max-pooled).
            dilation: grow the occupied cells by this many cells (lets surfaces move into empty space while fitting
                edited images).
            times: times to evaluate, each a float or per-factor-kind times (default :func:`probe_times`, which
                bounds every time in [0, 1]).
        """
        if times is None:
            times = probe_times(field.num_frames, field.ld_per_frame, field.factor_kinds)
        times = [(t,) * field.factor_kinds if isinstance(t, (int, float)) else tuple(t) for t in times]
        threshold = feature_threshold(field, alpha_thres)
        res_x, res_y, res_z = field.gridSize
        shape = (res_z - 1, res_y - 1, res_x - 1)
        cells = torch.zeros(shape, dtype=torch.bool, device=field.aabb.device)
        floor = torch.zeros(shape, dtype=torch.float32, device=field.aabb.device)
        step = max(1, NODE_BUDGET // (res_x * res_y) - 1)
        for z0 in range(0, res_z - 1, step):
            z1 = min(res_z, z0 + step + 1)  # nodes z0..z1-1 bound cells z0..z1-2
            node_max = node_min = None
            for t in times:
                feature = field.node_density_feature(t, z0, z1)
                node_max = feature if node_max is None else torch.maximum(node_max, feature)
                node_min = feature if node_min is None else torch.minimum(node_min, feature)
            cells[z0:z1 - 1] = corner_reduce(node_max > threshold, torch.logical_or)
            floor[z0:z1 - 1] = field.activate_density(corner_reduce(node_min.float(), torch.minimum))
        grid = cls._pooled(field, cells, floor, max_cells, dilation)
        log.debug("occupancy grid %s: %.1f%% occupied over %d times", list(grid.occupied.shape), 100 * grid.fraction,
                  len(times))
        return grid

    @classmethod
    @torch.no_grad()
    def from_volume(cls, field, volume: Tensor, *, alpha_thres: float = 1e-4, max_cells: int = 256) -> OccupancyGrid:
        """The grid of one time from the field's node feature volume ``[Z, Y, X]`` at that time (see
        :class:`TimeVolume`): tighter than :meth:`from_field`'s, which holds for every time."""
        cells = corner_reduce(volume > feature_threshold(field, alpha_thres), torch.logical_or)
        floor = field.activate_density(corner_reduce(volume.float(), torch.minimum))
        return cls._pooled(field, cells, floor, max_cells, 0)

    @classmethod
    def _pooled(cls, field, cells: Tensor, floor: Tensor, max_cells: int, dilation: int) -> OccupancyGrid:
        """The grid of ``field`` from full-resolution ``cells`` and ``floor``: dilated, then max-pooled (min-pooled
        for the floor) to at most ``max_cells`` per axis."""
        if dilation > 0:
            size = 2 * dilation + 1
            cells = F.max_pool3d(cells.float()[None, None], size, stride=1, padding=dilation)[0, 0] > 0
        res_x, res_y, res_z = field.gridSize
        factor = [max(1, math.ceil(n / max_cells)) for n in (res_x - 1, res_y - 1, res_z - 1)]
        if factor != [1, 1, 1]:
            kernel = (factor[2], factor[1], factor[0])
            cells = F.max_pool3d(cells.float()[None, None], kernel, stride=kernel, ceil_mode=True)[0, 0] > 0
            floor = -F.max_pool3d(-floor[None, None], kernel, stride=kernel, ceil_mode=True)[0, 0]
        return cls(cells, floor, field.aabb.detach(), field.gridSize, factor)


def corner_reduce(nodes: Tensor, op: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Each cell's reduction of its 8 corner nodes: ``nodes [Z, Y, X]`` -> ``[Z-1, Y-1, X-1]``, ``op`` pairwise along
    one axis after the other. ``torch.maximum`` / ``torch.minimum`` give exactly ``max_pool3d(kernel_size=2,
    stride=1)`` / ``-max_pool3d(-nodes, ...)`` (on the CPU about 50x faster: 2.6 against 123 ms on a 2M-node grid)."""
    for axis in range(3):
        size = nodes.shape[axis]
        nodes = op(nodes.narrow(axis, 0, size - 1), nodes.narrow(axis, 1, size - 1))
    return nodes


def z_innermost(volume: Tensor) -> Tensor:
    """A CPU node volume ``[Z, Y, X]`` stored with Z the innermost axis (same shape and values; GPU volumes as they
    are). The compiled march (:mod:`models.compiled_march`) reads it as ``[Y, X, Z]`` without a copy: NDC rays run
    mostly along z, so the nodes one ray meets lie side by side in memory. A batch's scattered rays then march
    2.5x faster than through the Z-outermost volume, where each step along z jumps a whole slice."""
    if volume.device.type != "cpu":
        return volume
    return volume.permute(1, 2, 0).contiguous().permute(2, 0, 1)


def volumes_fit(field, count: int, budget_mib: float) -> bool:
    """Whether ``count`` node volumes of ``field`` (float32, one value per grid node) fit in ``budget_mib``, and the
    field has no release alpha mask (whose zeroed regions a node volume would not know)."""
    size_mib = count * math.prod(int(v) for v in field.gridSize) * 4 / 2**20
    return 0 < size_mib <= budget_mib and getattr(field, "alphaMask", None) is None


def volume_lookup(volume: Tensor, xyz: Tensor) -> Tensor:
    """Trilinear lookup of a node volume ``[Z, Y, X]`` at box-normalized points ``[..., 3]`` -> float32 ``[...]``."""
    grid = xyz.reshape(1, -1, 1, 1, 3).to(torch.float32)
    return F.grid_sample(volume[None, None], grid, align_corners=True).view(xyz.shape[:-1])


class FeatureVolumes:
    """The field's density feature at its grid nodes, one volume per time, for the coarse pass of
    :class:`ImportanceSampler`.

    Inside a cell of the field's grid the density feature is the trilinear interpolation of its node values (see
    :mod:`models.occupancy`), so a trilinear lookup in a node volume gives the field's feature exactly, as it was
    when the volume was built: the coarse pass then costs one 3D lookup per sample instead of six plane and line
    lookups. Volumes are built when a time is first asked for and dropped by :meth:`clear` (the trainer does so
    every ``occupancy_every`` iterations) or when the field or its grid size changes. They are used only while one
    volume per frame fits in ``budget_mib``; otherwise (and for fields with a release alpha mask) the coarse pass
    evaluates the field itself.

    Args:
        num_times: distinct times that will be asked for (the scene's frames).
        budget_mib: memory the volumes may take together; 0 turns them off.
    """

    def __init__(self, num_times: int, budget_mib: float):
        self.num_times, self.budget_mib = max(1, int(num_times)), float(budget_mib)
        self._volumes: dict[float, Tensor] = {}
        self._built_for: tuple | None = None

    def usable(self, field) -> bool:
        """Whether the volumes of ``field`` at every time fit in the budget (and the field has no alpha mask)."""
        return volumes_fit(field, self.num_times, self.budget_mib)

    def clear(self) -> None:
        """Drop every volume (they are rebuilt from the field when next used)."""
        self._volumes.clear()

    def volume(self, field, t: float) -> Tensor:
        """``[1, 1, Z, Y, X]`` node feature volume of ``field`` at time ``t``."""
        key = (field_identity(field), tuple(int(v) for v in field.gridSize))
        if key != self._built_for:
            self._volumes.clear()
            self._built_for = key
        t = float(t)
        if t not in self._volumes:
            with torch.no_grad():
                volume = field.node_density_feature((t,) * field.factor_kinds).float()
                self._volumes[t] = z_innermost(volume)[None, None]
        return self._volumes[t]

    def feature(self, field, xyz: Tensor, t: float | Sequence[float]) -> Tensor:
        """Density feature ``[n_rays, n_samples]`` at box-normalized points ``xyz [n_rays, n_samples, 3]`` (``[-1, 1]``
        in the box) at time ``t``, or at one time per equal block of rays (as in :func:`models.rendering.render_rays`).
        """
        size, times = frame_blocks(xyz.shape[0], t)
        values = []
        for block, time in zip(xyz.split(size), times):
            values.append(volume_lookup(self.volume(field, time)[0, 0], block))
        return torch.cat(values).to(xyz.dtype)


_FIELD_SERIALS = itertools.count()


def field_identity(field) -> tuple[int, int]:
    """Tells field objects apart for the caches built from them: ``id`` (a copy has its own) and a serial number
    given on first use (``id`` alone is reused by a field made after another was freed, often at the same size)."""
    serial = field.__dict__.get("_cache_serial")
    if serial is None:
        serial = field.__dict__["_cache_serial"] = next(_FIELD_SERIALS)
    return id(field), serial


def factors_version(field, kind: str = "density") -> tuple:
    """Identifies the state of ``field``'s density (or appearance, ``kind`` ``app``): the field, its grid size, the
    in-place version counters of those factors (an upsampling or a loaded state dict changes them) and its count of
    optimizer steps (a fused optimizer step changes the values without counting a version:
    :class:`models.fitting.Trainer` counts it)."""
    factors = field.planes(kind) + field.lines(kind)
    return (field_identity(field), tuple(int(v) for v in field.gridSize), tuple(p._version for p in factors),
            getattr(field, "optimizer_steps", 0))


class TimeVolume:
    """What a render of one frame reuses: the field's density feature at its grid nodes at the frame's time, and
    the occupancy grid of that time alone.

    A trilinear lookup in the node volume is the field's density feature (see :class:`FeatureVolumes`), at one
    single-channel 3D lookup per sample instead of six plane and line lookups over every channel. The grid of one
    time is tighter than the one that holds for all times, so fewer samples are evaluated at all. Both are built on
    first use for a time and rebuilt when the time or the field's density changes (:func:`factors_version`), so a
    field being fitted between renders is never rendered from a stale copy.

    Args:
        budget_mib: largest volume kept (grid nodes x 4 bytes); a larger field renders without it.
        alpha_thres, max_cells: of the time's :class:`OccupancyGrid`.
    """

    def __init__(self, budget_mib: float, alpha_thres: float = 1e-4, max_cells: int = 256):
        self.budget_mib, self.alpha_thres, self.max_cells = float(budget_mib), float(alpha_thres), int(max_cells)
        self.volume: Tensor | None = None
        self.grid: OccupancyGrid | None = None
        self._key: tuple | None = None

    def usable(self, field) -> bool:
        """Whether ``field``'s node volume fits in the budget (and it has no release alpha mask)."""
        return volumes_fit(field, 1, self.budget_mib)

    def update(self, field, t: float) -> TimeVolume:
        """Make the volume and grid those of ``field`` at time ``t`` (a no-op when they already are)."""
        key = (float(t), factors_version(field))
        if key != self._key:
            self.volume = self.grid = None  # the old volume is freed before the new one is built
            with torch.no_grad():
                self.volume = z_innermost(field.node_density_feature((float(t),) * field.factor_kinds).float())
            self.grid = OccupancyGrid.from_volume(field, self.volume, alpha_thres=self.alpha_thres,
                                                  max_cells=self.max_cells)
            self._key = key
        return self

    def density(self, field, points: Tensor) -> Tensor:
        """Density ``[N]`` of ``field`` at box-normalized points ``[N, 3]`` (at the time of the last update)."""
        return field.activate_density(volume_lookup(self.volume, points).to(points.dtype))
