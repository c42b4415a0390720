"""The VM field's plane x line products and their gradients as compiled CPU loops (numba), for fits on the CPU.

``StreamTensorVMSplit._products`` with PyTorch operators makes, per frame of a batch and per factor, a channel
selection of the stored factor (``index_select``, a blend), a ``grid_sample`` and a product; backward makes a
zero gradient of the whole stored factor per lookup, ``grid_sample``'s backward into it and an ``index_add_``.
At a CPU fit's few thousand to few hundred thousand points per step, those passes take about twice as long as the
loops here (``benchmarks/bench_fit_step.py``; the lookups were about 40% of a fast fit's step). Here one lookup of
all the batch's frames computes the products in one compiled loop per factor pair, every channel of every pair
with its plane's and line's values read from the stored factors as ``grid_sample`` reads them (``align_corners=True``,
zeros outside the grid), the live channels of each frame's time and the blend of an entering channel exactly as
:meth:`models.streaming.ChannelStream.select` picks them. When gradients are needed the forward keeps those values
(two more ``[live channels, points]`` float32 arrays until the backward: about 26 MB per 100k points of the demo
config's appearance), and the backward writes each stored channel's gradient once from them, in a loop that owns the
channel (no two threads write the same memory).

The results equal the PyTorch operators' up to float rounding, values and gradients
(``tests/test_models_fields.py``). Used for float32 points on the CPU that need no gradient themselves (the
samples' positions are not learned), with numba installed; ``--fit_compiled 0`` turns it off.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .compiled_march import _LAUNCH, _host, _njit, _set_threads, numba
from .fields import MAT_MODE, VEC_MODE

f32 = np.float32


def usable(field, xyz: Tensor) -> bool:
    """Whether the compiled lookups apply: numba, the field's ``compiled_lookups`` switch on, float32 points on the
    CPU that need no gradient, and float32 CPU factors of the field's grid size (2 nodes or more per axis)."""
    if not (numba is not None and getattr(field, "compiled_lookups", False) and xyz.device.type == "cpu"
            and xyz.dtype == torch.float32 and not xyz.requires_grad and min(field.gridSize) >= 2):
        return False
    res = field.gridSize
    for kind in ("density", "app"):
        for i, (plane, line) in enumerate(zip(field.planes(kind), field.lines(kind))):
            a, b = MAT_MODE[i]
            if not all(f.device.type == "cpu" and f.dtype == torch.float32 for f in (plane, line)):
                return False
            if tuple(plane.shape[-2:]) != (res[b], res[a]) or tuple(line.shape[-2:]) != (res[VEC_MODE[i]], 1):
                return False
    return True


@_njit(inline="always")
def _axis(coord, size):
    """The lower node of box-normalized ``coord`` on an axis of ``size`` nodes and the weights of it and the next
    node, as ``grid_sample`` with ``align_corners=True`` and zero padding reads the axis: a node outside the grid
    gets weight 0 (the index is moved inside, so that the loops read memory that exists)."""
    position = (coord + f32(1.0)) / f32(2.0) * f32(size - 1)
    if not (f32(-1.0) < position < f32(size)):  # both nodes outside (NaN too)
        return 0, f32(0.0), f32(0.0)
    node = int(math.floor(position))
    fraction = position - f32(node)
    if node < 0:  # only the upper node (node 0) is in the grid
        return 0, fraction, f32(0.0)
    if node > size - 2:  # only the lower node (the last one) is in the grid
        return size - 2, f32(0.0), f32(1.0) - fraction
    return node, f32(1.0) - fraction, fraction


@_njit(parallel=True, nogil=True)
def _axes(points, res, index, lo, hi):
    """:func:`_axis` of every point ``[N, 3]`` on the axes of a grid of ``res`` nodes, into ``[N, 3]`` arrays."""
    for n in numba.prange(points.shape[0]):
        for a in range(3):
            index[n, a], lo[n, a], hi[n, a] = _axis(points[n, a], res[a])


@_njit(inline="always")
def _plane_value(plane, s, ia, ib, la, ha, lb, hb):
    return (lb * (la * plane[s, ib, ia] + ha * plane[s, ib, ia + 1])
            + hb * (la * plane[s, ib + 1, ia] + ha * plane[s, ib + 1, ia + 1]))


@_njit(inline="always")
def _line_value(line, s, iv, lv, hv):
    return lv * line[s, iv] + hv * line[s, iv + 1]


@_njit(inline="always")
def _live_values(plane, line, s0, s1, w0, w1, ia, ib, iv, la, ha, lb, hb, lv, hv):
    """A live channel's plane and line values at a point: ``w0`` x stored channel ``s0`` (+ ``w1`` x ``s1``, a
    blend)."""
    p = w0 * _plane_value(plane, s0, ia, ib, la, ha, lb, hb)
    q = w0 * _line_value(line, s0, iv, lv, hv)
    if w1 != 0:
        p += w1 * _plane_value(plane, s1, ia, ib, la, ha, lb, hb)
        q += w1 * _line_value(line, s1, iv, lv, hv)
    return p, q


@_njit(parallel=True, nogil=True)
def _pair_forward(plane, line, a, b, v, index, lo, hi, starts, source, mix, out, keep, plane_out, line_out):
    """``out[k, n]`` = plane x line product of live channel ``k`` at point ``n``, for one factor pair: ``plane
    [S, res_b, res_a]`` read at axes ``(a, b)``, ``line [S, res_v]`` at axis ``v``; with ``keep``, the two factors'
    values into ``plane_out`` and ``line_out`` (for the backward). Points ``starts[f] .. starts[f + 1]`` are at
    frame ``f``, whose live channel ``k`` is ``mix[f, k, 0]`` x stored channel ``source[f, k, 0]`` + ``mix[f, k,
    1]`` x ``source[f, k, 1]`` (the second weight 0 unless the channel is blended)."""
    n_frames, n_live = source.shape[0], source.shape[1]
    for item in numba.prange(n_frames * n_live):
        f, k = item // n_live, item % n_live
        s0, s1, w0, w1 = source[f, k, 0], source[f, k, 1], mix[f, k, 0], mix[f, k, 1]
        for n in range(starts[f], starts[f + 1]):
            ia, ib, iv = index[n, a], index[n, b], index[n, v]
            la, ha, lb, hb, lv, hv = lo[n, a], hi[n, a], lo[n, b], hi[n, b], lo[n, v], hi[n, v]
            p, q = _live_values(plane, line, s0, s1, w0, w1, ia, ib, iv, la, ha, lb, hb, lv, hv)
            out[k, n] = p * q
            if keep:
                plane_out[k, n], line_out[k, n] = p, q


@_njit(parallel=True, nogil=True)
def _pair_backward(a, b, v, index, lo, hi, starts, mix, uses, use_starts, grad, plane_values, line_values,
                   grad_plane, grad_line):
    """Gradients of one pair's stored plane and line (into ``grad_plane [S, res_b, res_a]``, ``grad_line [S,
    res_v]``, zeros on entry) from ``grad [K, N]`` of :func:`_pair_forward`'s ``out``, with the live channels'
    plane and line values it saved. Stored channel ``s`` is used as ``uses[u] = (frame, live channel, term)`` for
    ``u`` in ``use_starts[s] .. use_starts[s + 1]``; each thread owns whole channels."""
    for s in numba.prange(grad_plane.shape[0]):
        for u in range(use_starts[s], use_starts[s + 1]):
            f, k, term = uses[u, 0], uses[u, 1], uses[u, 2]
            w = mix[f, k, term]
            for n in range(starts[f], starts[f + 1]):
                g = grad[k, n]
                if g == 0:
                    continue
                ia, ib, iv = index[n, a], index[n, b], index[n, v]
                la, ha, lb, hb, lv, hv = lo[n, a], hi[n, a], lo[n, b], hi[n, b], lo[n, v], hi[n, v]
                # d out / d (plane value), d out / d (line value), times the mix
                gp, gq = g * line_values[k, n] * w, g * plane_values[k, n] * w
                grad_plane[s, ib, ia] += gp * lb * la
                grad_plane[s, ib, ia + 1] += gp * lb * ha
                grad_plane[s, ib + 1, ia] += gp * hb * la
                grad_plane[s, ib + 1, ia + 1] += gp * hb * ha
                grad_line[s, iv] += gq * lv
                grad_line[s, iv + 1] += gq * hv


class _Pair:
    """One factor pair's stored factors as numpy views and its channel mix at a lookup's frames."""

    def __init__(self, plane: Tensor, line: Tensor, axes: tuple[int, int, int], stream, times: tuple[float, ...]):
        self.plane, self.line = _host(plane)[0], _host(line)[0, :, :, 0]
        self.axes = axes
        mixes = [stream.mix(t) for t in times]
        self.source = np.ascontiguousarray(np.stack([m[0] for m in mixes]))  # [F, K, 2]
        self.mix = np.ascontiguousarray(np.stack([m[1] for m in mixes]))
        # per stored channel, the (frame, live channel, term) that read it: the backward's work list
        f, k, term = np.nonzero(self.mix)
        channel = self.source[f, k, term]
        order = np.argsort(channel, kind="stable")
        self.uses = np.ascontiguousarray(np.stack([f, k, term], axis=1)[order].astype(np.int64))
        self.use_starts = np.searchsorted(channel[order], np.arange(self.plane.shape[0] + 1)).astype(np.int64)

    @property
    def live(self) -> int:
        return self.source.shape[1]


class _Products(torch.autograd.Function):
    """Products of all three pairs ``[K0 + K1 + K2, N]`` (pair-major), with gradients of the stored factors."""

    @staticmethod
    def forward(ctx, points: Tensor, res: np.ndarray, starts: np.ndarray, pairs: list[_Pair], keep: bool,
                *factors: Tensor) -> Tensor:
        n = points.shape[0]
        index = np.empty((n, 3), dtype=np.int32)
        lo, hi = np.empty((n, 3), dtype=np.float32), np.empty((n, 3), dtype=np.float32)
        out = np.empty((sum(p.live for p in pairs), n), dtype=np.float32)
        plane_values, line_values = (np.empty_like(out), np.empty_like(out)) if keep else (out, out)
        with _LAUNCH:
            _set_threads()
            _axes(_host(points), res, index, lo, hi)
            row = 0
            for pair in pairs:
                rows = slice(row, row + pair.live)
                _pair_forward(pair.plane, pair.line, *pair.axes, index, lo, hi, starts, pair.source, pair.mix,
                              out[rows], keep, plane_values[rows], line_values[rows])
                row += pair.live
        ctx.lookup = (index, lo, hi, starts, pairs, plane_values, line_values)
        ctx.save_for_backward(*factors)
        return torch.from_numpy(out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        factors = ctx.saved_tensors  # (autograd checks that no factor was changed in place since the forward)
        index, lo, hi, starts, pairs, plane_values, line_values = ctx.lookup
        grad = _host(grad)
        grads_plane, grads_line, row = [], [], 0
        with _LAUNCH:
            _set_threads()
            for pair in pairs:
                rows = slice(row, row + pair.live)
                grad_plane, grad_line = np.zeros_like(pair.plane), np.zeros_like(pair.line)
                _pair_backward(*pair.axes, index, lo, hi, starts, pair.mix, pair.uses, pair.use_starts, grad[rows],
                               plane_values[rows], line_values[rows], grad_plane, grad_line)
                grads_plane.append(torch.from_numpy(grad_plane))
                grads_line.append(torch.from_numpy(grad_line))
                row += pair.live
        grads = [g.view(f.shape) for g, f in zip(grads_plane + grads_line, factors)]
        return (None, None, None, None, None, *grads)


def vm_products(field, kind: str, xyz: Tensor, times: tuple[float, ...], counts: tuple[int, ...]) -> Tensor:
    """``torch.cat(field._products(xyz, t, kind))`` for points at several frames at once: ``[K0 + K1 + K2, N]``.

    Args:
        field: a :class:`models.fields.StreamTensorVMSplit` (:func:`usable`).
        kind: ``density`` or ``app``.
        xyz: ``[N, 3]`` box-normalized points, the first ``counts[0]`` at ``times[0]``, and so on.
    """
    if len(times) != len(counts) or sum(counts) != xyz.shape[0]:  # (the loops do not check their indices)
        raise ValueError(f"{len(times)} times with point counts {list(counts)} do not describe {xyz.shape[0]} points")
    streams = field.density_streams if kind == "density" else field.app_streams
    planes, lines = field.planes(kind), field.lines(kind)
    pairs = [_Pair(planes[i], lines[i], (*MAT_MODE[i], VEC_MODE[i]), streams[i], times) for i in range(3)]
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    res = np.asarray(field.gridSize, dtype=np.int64)
    # the factors' values at the points are kept for the backward only when there will be one
    keep = torch.is_grad_enabled() and any(f.requires_grad for f in planes + lines)
    return _Products.apply(xyz.detach(), res, starts, pairs, keep, *planes, *lines)


def warm_up() -> None:
    """Compile the loops now (or load them from numba's disk cache)."""
    if numba is None:
        return
    points = np.zeros((1, 3), dtype=np.float32)
    index, lo, hi = np.zeros((1, 3), dtype=np.int32), np.zeros((1, 3), dtype=np.float32), np.zeros((1, 3),
                                                                                                   dtype=np.float32)
    plane, line = np.zeros((1, 2, 2), dtype=np.float32), np.zeros((1, 2), dtype=np.float32)
    starts, source = np.array([0, 1], dtype=np.int64), np.zeros((1, 1, 2), dtype=np.int64)
    mix, out = np.ones((1, 1, 2), dtype=np.float32), np.zeros((1, 1), dtype=np.float32)
    uses, use_starts = np.zeros((1, 3), dtype=np.int64), np.array([0, 1], dtype=np.int64)
    with _LAUNCH:
        _axes(points, np.full(3, 2, dtype=np.int64), index, lo, hi)
        _pair_forward(plane, line, 0, 1, 2, index, lo, hi, starts, source, mix, out, True, out.copy(), out.copy())
        _pair_backward(0, 1, 2, index, lo, hi, starts, mix, uses, use_starts, out, out, out, np.zeros_like(plane),
                       np.zeros_like(line))
