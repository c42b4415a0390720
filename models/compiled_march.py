"""A fast render's ray march, and its appearance lookups, as compiled CPU loops (numba).

:meth:`models.sampling.OccupancySampler.march` walks the rays with PyTorch operators, a segment of samples at a
time: each step makes whole ``[rays, segment]`` arrays (points, box test, cells, lookups, scatter), and most of a
CPU render's time goes into those passes rather than into the lookups themselves. Here each ray is walked once,
sample by sample, in compiled code (rays split over the CPU's threads): the box test, the occupancy cell, the
trilinear lookup of the time's node volume, the density, the compositing weight, and the stop once the ray's
transmittance is below the threshold, with nothing stored but the weights. The arithmetic is that of the PyTorch
march (the same float32 points, the grid and volume indexing of ``grid_sample`` with ``align_corners=True``, the
same segments for the early stop), so both give the same weights up to float rounding
(``tests/test_models_occupancy.py``).

The shaded samples' appearance features (VM fields) are looked up the same way (:class:`TimeAppearance`): the
plane and line channels live at the frame's time, kept channels-last for the frame, and one loop per point over
the three plane x line products, the basis matrix and the shading MLP staying in PyTorch.

Used for CPU renders when numba is installed (it is in ``requirements.txt``); without it, on other devices, and
for fields without a time volume, the PyTorch march runs. ``--render_compiled 0`` turns it off.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch
from torch import Tensor

from .fields import MAT_MODE, VEC_MODE
from .occupancy import factors_version

try:  # optional: the PyTorch march is the fallback
    import numba
except ImportError:  # pragma: no cover - numba is in requirements.txt
    numba = None

_LAUNCH = threading.Lock()  # numba's default thread pool takes one parallel launch at a time
f32 = np.float32


def usable(rays: Tensor, volume: Tensor) -> bool:
    """Whether the compiled march can render these rays (float32 on the CPU) in this node volume (2 nodes or more
    per axis), numba being installed."""
    return (numba is not None and rays.device.type == "cpu" and rays.dtype == torch.float32
            and volume.device.type == "cpu" and min(volume.shape) >= 2)


def _host(t: Tensor, dtype=torch.float32) -> np.ndarray:
    """A CPU tensor as a contiguous numpy array of ``dtype`` (no copy when it already is one)."""
    return t.detach().to(dtype).contiguous().numpy()


def _set_threads() -> None:
    """numba's threads: torch's CPU thread count (a process limited to 1 thread stays at 1)."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def _njit(**options):
    """numba's ``njit`` (compiled on first call, cached on disk); without numba, the plain function."""

    def decorate(fn):
        if numba is None:
            return fn
        try:
            return numba.njit(cache=True, **options)(fn)
        except RuntimeError:  # no writable folder for numba's cache: compiled again by each process
            return numba.njit(**options)(fn)

    return decorate


@_njit(inline="always")
def _bilinear(volume, z, y0, x0, fy, fx, gy, gx):
    """Node slice ``z`` of a ``[Y, X, Z]`` volume between nodes ``(y0, x0)`` and ``(y0 + 1, x0 + 1)``; ``f`` the
    fractions towards the upper node, ``g = 1 - f``."""
    return (gy * (gx * volume[y0, x0, z] + fx * volume[y0, x0 + 1, z])
            + fy * (gx * volume[y0 + 1, x0, z] + fx * volume[y0 + 1, x0 + 1, z]))


@_njit(inline="always")
def _corner(coord, size):
    """Lower node and fraction towards the next one of box-normalized ``coord`` on an axis of ``size`` nodes, as
    ``grid_sample`` with ``align_corners=True`` places it; the lower node is clamped to ``[0, size - 2]``, so a point
    on (or rounded just past) the last node reads that node."""
    position = (coord + f32(1.0)) / f32(2.0) * f32(size - 1)
    node = min(max(int(math.floor(position)), 0), size - 2)
    return node, position - f32(node)


@_njit(inline="always")
def _feature(volume, x, y, w):
    """``grid_sample``'s trilinear lookup of a node volume at a box-normalized point; the volume is indexed
    ``[Y, X, Z]`` (z innermost: the nodes a ray meets one after the other lie side by side in memory, see
    :func:`march_weights`)."""
    y0, fy = _corner(y, volume.shape[0])
    x0, fx = _corner(x, volume.shape[1])
    z0, fz = _corner(w, volume.shape[2])
    gx, gy, gz = f32(1.0) - fx, f32(1.0) - fy, f32(1.0) - fz
    return gz * _bilinear(volume, z0, y0, x0, fy, fx, gy, gx) + fz * _bilinear(volume, z0 + 1, y0, x0, fy, fx, gy, gx)


@_njit(inline="always")
def _occupied(occupied, half, top, factor, x, y, w):
    """:meth:`models.occupancy.OccupancyGrid.lookup_normalized` of one point."""
    cx = int(min(max(half[0] + x * half[0], f32(0.0)), top[0]))
    cy = int(min(max(half[1] + y * half[1], f32(0.0)), top[1]))
    cz = int(min(max(half[2] + w * half[2], f32(0.0)), top[2]))
    if factor[0] != 1 or factor[1] != 1 or factor[2] != 1:  # a pooled grid (an integer division costs)
        cx, cy, cz = cx // factor[0], cy // factor[1], cz // factor[2]
    return occupied[cz, cy, cx]


@_njit(inline="always")
def _anchor_weights(weights, i, last, thres, heavy, stride, anchors):
    """:func:`models.compositing.shading_anchors` of ray ``i``, its weight split included: ``anchors[i, j]`` gets the
    weight shaded sample ``j`` carries (its own, and its share of each weighted sample between it and the shaded
    samples next to it); unshaded samples stay 0."""
    previous = -1
    for j in range(last + 1):
        w = weights[i, j]
        if not w > thres:
            continue
        if not (previous < 0 or j == last or j % stride == 0 or w > heavy):
            continue
        anchors[i, j] += w  # a shaded sample: first, last, on the stride, or heavy
        if previous >= 0:  # the weighted samples since the previous shaded one, split between the two
            span = f32(j - previous)
            for k in range(previous + 1, j):
                v = weights[i, k]
                if v > thres:
                    share = f32(k - previous) / span
                    anchors[i, previous] += v * (f32(1.0) - share)
                    anchors[i, j] += v * share
        previous = j


@_njit(parallel=True, nogil=True)
def _march(origins, directions, box_origins, box_directions, z_vals, dists, aabb, volume, occupied, half, top,
           factor, relu, shift, limit, segment, thres, heavy, stride, weights, anchors):
    """Each ray's weights (and, with ``stride`` > 0, its shading anchors' weights), into ``weights`` and
    ``anchors`` (``[n_rays, n_samples]``, zeros on entry); see :func:`march_weights`."""
    n_rays, n_samples = weights.shape
    shared = z_vals.shape[0] == 1  # NDC: one row of ray parameters for all rays
    eps = f32(1e-10)
    for i in numba.prange(n_rays):
        transmittance = f32(1.0)
        optical_depth = f32(0.0)
        countdown = segment
        last = -1  # the ray's last sample above the weight threshold
        for j in range(n_samples):
            z = z_vals[0, j] if shared else z_vals[i, j]
            inside = True
            for a in range(3):  # the dense sampler's box test, on the same float32 point
                p = origins[i, a] + directions[i, a] * z
                if not (aabb[0, a] <= p <= aabb[1, a]):  # NaN is outside
                    inside = False
            if inside:
                x = box_origins[i, 0] + box_directions[i, 0] * z
                y = box_origins[i, 1] + box_directions[i, 1] * z
                w = box_origins[i, 2] + box_directions[i, 2] * z
                if _occupied(occupied, half, top, factor, x, y, w):
                    feature = _feature(volume, x, y, w)
                    if relu:
                        sigma = max(feature, f32(0.0))
                    else:  # softplus, linear above 20 as torch's
                        v = feature + shift
                        sigma = v if v > f32(20.0) else f32(math.log1p(math.exp(v)))
                    if sigma > 0:
                        step = sigma * dists[i, j]
                        alpha = f32(1.0) - f32(math.exp(-step))
                        weight = alpha * transmittance
                        weights[i, j] = weight
                        if weight > thres:
                            last = j
                        transmittance = transmittance * (f32(1.0) - alpha + eps)
                        optical_depth += step
            countdown -= 1
            if countdown == 0:  # the end of a segment: is the ray still seen?
                if optical_depth >= limit:
                    break
                countdown = segment
        if stride > 0 and last >= 0:
            _anchor_weights(weights, i, last, thres, heavy, stride, anchors)


def march_weights(steps, dists: Tensor, aabb: Tensor, volume: Tensor, grid, fea2dense: str, shift: float,
                  early_stop: float, segment: int, anchors: tuple[float, float, int] | None = None
                  ) -> tuple[Tensor, Tensor | None]:
    """A render's compositing weights, as :meth:`models.sampling.OccupancySampler.march` followed by
    :func:`models.compositing.alpha_weights` gives them, and its shading anchors.

    Args:
        steps: the render's :class:`models.sampling.RaySteps`.
        dists: ``[n_rays, n_samples]`` spacing already multiplied by ``distance_scale``.
        aabb: ``[2, 3]`` the field's box.
        volume: ``[Z, Y, X]`` the time's node feature volume (:class:`models.occupancy.TimeVolume`), best stored
            z innermost (:func:`models.occupancy.z_innermost`; another layout is copied to it at each call); grid:
            its occupancy grid (None: every sample in the box is looked at, as the importance sampler's coarse
            pass).
        fea2dense: ``relu`` or ``softplus``; shift: the density shift (softplus).
        early_stop: transmittance below which a ray stops, checked every ``segment`` samples; 0: never.
        anchors: ``(weight threshold, heavy weight, stride)`` of :func:`models.compositing.shading_anchors`, to have
            the anchors' weights too; None: weights only.

    Returns:
        ``weights [n_rays, n_samples]``, and ``anchor_weights [n_rays, n_samples]`` (None without ``anchors``): the
        weight each shaded sample carries once the weights of the samples between shaded ones are split between
        them, 0 at samples not shaded.
    """
    box = steps.normalized(aabb)
    n_rays, n_samples = dists.shape
    if grid is None:  # every cell occupied: one cell, which every point falls in
        occupied, half, top = np.ones((1, 1, 1), dtype=np.bool_), np.full(3, 0.5, dtype=np.float32), np.zeros(3, f32)
        factor = np.ones(3, dtype=np.int64)
    else:
        occupied, half, top = _host(grid.occupied, torch.bool), _host(grid._half), _host(grid._top_f)
        factor = np.asarray(grid.factor, dtype=np.int64)
    weights = np.zeros((n_rays, n_samples), dtype=np.float32)
    thres, heavy, stride = anchors if anchors is not None else (0.0, 0.0, 0)
    anchor_weights = np.zeros((n_rays, n_samples) if stride > 0 else (1, 1), dtype=np.float32)
    limit = -math.log(early_stop) if early_stop > 0 else math.inf
    with _LAUNCH:
        _set_threads()
        _march(_host(steps.origins), _host(steps.directions), _host(box.origins), _host(box.directions),
               _host(steps.z_vals), _host(dists), _host(aabb), _host(volume.permute(1, 2, 0)), occupied, half, top,
               factor, fea2dense == "relu", f32(shift), float(limit), int(segment), f32(thres), f32(heavy),
               int(stride), weights, anchor_weights)
    return torch.from_numpy(weights), torch.from_numpy(anchor_weights) if stride > 0 else None


@_njit(inline="always")
def _pair(plane, line, u, v, w, out, n, offset):
    """Channels ``offset ..`` of ``out[n]``: ``plane [res_v, res_u, C]`` at ``(u, v)`` (bilinear) times ``line
    [res_w, C]`` at ``w`` (linear), as ``grid_sample`` with ``align_corners=True`` reads them."""
    v0, fv = _corner(v, plane.shape[0])
    u0, fu = _corner(u, plane.shape[1])
    w0, fw = _corner(w, line.shape[0])
    gu, gv, gw = f32(1.0) - fu, f32(1.0) - fv, f32(1.0) - fw
    for c in range(plane.shape[2]):
        bilinear = (gv * (gu * plane[v0, u0, c] + fu * plane[v0, u0 + 1, c])
                    + fv * (gu * plane[v0 + 1, u0, c] + fu * plane[v0 + 1, u0 + 1, c]))
        out[n, offset + c] = bilinear * (gw * line[w0, c] + fw * line[w0 + 1, c])


@_njit(parallel=True, nogil=True)
def _vm_products(points, plane0, plane1, plane2, line0, line1, line2, out):
    """The VM field's plane x line products at box-normalized ``points [N, 3]`` into ``out [N, C0 + C1 + C2]``
    (pair 0: plane (x, y), line z; pair 1: plane (x, z), line y; pair 2: plane (y, z), line x)."""
    c0, c1 = plane0.shape[2], plane1.shape[2]
    for n in numba.prange(points.shape[0]):
        x, y, z = points[n, 0], points[n, 1], points[n, 2]
        _pair(plane0, line0, x, y, z, out, n, 0)
        _pair(plane1, line1, x, z, y, out, n, c0)
        _pair(plane2, line2, y, z, x, out, n, c0 + c1)


class TimeAppearance:
    """A VM field's appearance factors at one time, channels last, for compiled lookups of appearance features.

    Rebuilt when the time or the field's appearance factors change (:func:`models.occupancy.factors_version`); the
    basis matrix is applied by the field's own module at each lookup.
    """

    def __init__(self, budget_mib: float = 512):
        self.budget_mib = float(budget_mib)
        self._key: tuple | None = None
        self._factors: list[np.ndarray] = []

    def usable(self, field, points: Tensor) -> bool:
        """Whether the compiled lookup applies: numba, a VM field (``live_factors``) of 2 nodes or more per axis
        whose live appearance factors fit in the budget, float32 points on the CPU."""
        if not (numba is not None and hasattr(field, "live_factors") and points.device.type == "cpu"
                and points.dtype == torch.float32 and min(field.gridSize) >= 2):
            return False
        res = field.gridSize
        values = sum(n * (res[a] * res[b] + res[v]) for n, (a, b), v in zip(field.app_n_comp, MAT_MODE, VEC_MODE))
        return values * 4 / 2**20 <= self.budget_mib

    def features(self, field, points: Tensor, t: float) -> Tensor:
        """``field.app_features(points, t)`` (up to float rounding): ``[N, app_dim]`` at box-normalized points
        ``[N, 3]`` inside the box (a render's shaded samples; beyond ``[-1, 1]`` this extends the edge cells where
        ``grid_sample`` reads zeros)."""
        key = (float(t), factors_version(field, "app"))
        if key != self._key:
            self._key, self._factors = None, []  # the previous time's are freed first
            with torch.no_grad():
                planes, lines = field.live_factors("app", float(t))
                self._factors = ([_host(p[0].permute(1, 2, 0)) for p in planes]
                                 + [_host(v[0, :, :, 0].T) for v in lines])
            self._key = key
        out = np.empty((points.shape[0], sum(p.shape[2] for p in self._factors[:3])), dtype=np.float32)
        with _LAUNCH:
            _set_threads()
            _vm_products(_host(points), *self._factors, out)
        return field.basis_mat(torch.from_numpy(out))


def warm_up() -> None:
    """Compile both loops now (or load them from numba's disk cache): a few seconds, once per installation, that
    otherwise fall on the first render of each process started before the cache exists."""
    if numba is None:
        return
    volume = np.zeros((2, 2, 2), dtype=np.float32)
    rays, steps = np.zeros((1, 3), dtype=np.float32), np.zeros((1, 2), dtype=np.float32)
    box = np.array([[-1, -1, -1], [1, 1, 1]], dtype=np.float32)
    half, top = np.full(3, 0.5, dtype=np.float32), np.zeros(3, dtype=np.float32)
    with _LAUNCH:
        _march(rays, rays, rays, rays, steps, steps, box, volume, np.ones((1, 1, 1), dtype=np.bool_), half, top,
               np.ones(3, dtype=np.int64), True, f32(0.0), math.inf, 64, f32(1e-4), f32(0.03), 4, np.zeros_like(steps),
               np.zeros_like(steps))
        plane, line = np.zeros((2, 2, 1), dtype=np.float32), np.zeros((2, 1), dtype=np.float32)
        _vm_products(rays, plane, plane, plane, line, line, line, np.zeros((1, 3), dtype=np.float32))
