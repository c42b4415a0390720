"""Regularizers on the stored factors of a stream TensoRF field: TV, L1 (density), orthogonality.

Each works on every stored channel (not only the ones live at some time), as in the release.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .compiled_march import _LAUNCH, _host, _njit, _set_threads, numba

PLANE_TV_SCALE = 1e-2
LINE_TV_SCALE = 1e-3


@_njit(parallel=True, nogil=True)
def _compiled_tv(x, scale_h, scale_w, grad, totals):
    """TV of each map of ``x [M, H, W]`` into ``totals [M]`` (float64) and its gradient into ``grad``, one pass per
    map: each element's differences with its four neighbours (``scale_*``: 2 / the count of an axis's
    differences)."""
    n_maps, h, w = x.shape
    for m in numba.prange(n_maps):
        total = 0.0
        for i in range(h):
            for j in range(w):
                v = x[m, i, j]
                g = np.float32(0.0)
                if i > 0:
                    g += scale_h * (v - x[m, i - 1, j])
                if i < h - 1:
                    d = x[m, i + 1, j] - v
                    total += scale_h * d * d
                    g -= scale_h * d
                if j > 0:
                    g += scale_w * (v - x[m, i, j - 1])
                if j < w - 1:
                    d = x[m, i, j + 1] - v
                    total += scale_w * d * d
                    g -= scale_w * d
                grad[m, i, j] = np.float32(2.0) * g
        totals[m] = total


def _tv_compiled(x: Tensor) -> tuple[Tensor, Tensor]:
    """:class:`_TotalVariation`'s value and gradient from :func:`_compiled_tv` (float32 CPU ``x``)."""
    b, c, h, w = x.shape
    maps = _host(x).reshape(b * c, h, w)
    grad, totals = np.empty_like(maps), np.empty(b * c, dtype=np.float64)
    scale_h = np.float32(2.0 / (b * c * (h - 1) * w) if h > 1 else 0.0)
    scale_w = np.float32(2.0 / (b * c * h * (w - 1)) if w > 1 else 0.0)
    with _LAUNCH:
        _set_threads()
        _compiled_tv(maps, scale_h, scale_w, grad, totals)
    return x.new_tensor(totals.sum()), torch.from_numpy(grad).view(x.shape)


def warm_up() -> None:
    """Compile the TV loop now (or load it from numba's disk cache)."""
    if numba is not None:
        _tv_compiled(torch.zeros(1, 1, 2, 2))


class _TotalVariation(torch.autograd.Function):
    """TV value and gradient in one pass over the neighbour differences (autograd through slices costs about four
    times as much: a full-size zero tensor and a copy per slice in the backward); with ``compiled``, a float32 CPU
    factor in one compiled loop (half the time of the PyTorch passes here)."""

    @staticmethod
    def forward(ctx, x: Tensor, compiled: bool) -> Tensor:
        if compiled and numba is not None and x.device.type == "cpu" and x.dtype == torch.float32:
            total, grad = _tv_compiled(x)
            ctx.save_for_backward(grad)
            return total
        _, _, h, w = x.shape
        grad = torch.zeros_like(x)
        total = x.new_zeros(())
        for axis, size in ((2, h), (3, w)):
            if size < 2:
                continue
            diff = x.narrow(axis, 1, size - 1) - x.narrow(axis, 0, size - 1)
            scale = 2.0 / diff.numel()
            flat = diff.reshape(-1)
            total = total + scale * torch.dot(flat, flat)
            diff.mul_(2.0 * scale)
            grad.narrow(axis, 1, size - 1).add_(diff)
            grad.narrow(axis, 0, size - 1).sub_(diff)
        ctx.save_for_backward(grad)
        return total

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None]:
        (grad,) = ctx.saved_tensors
        return grad * grad_output, None


def total_variation(x: Tensor, compiled: bool = False) -> Tensor:
    """Mean squared difference between neighbours along H and W of ``x [B, C, H, W]``, ``2 * (h + w) / B``.

    An axis of size 1 (the W axis of a line factor) contributes 0; the release's formula divides 0 by 0 there.
    ``compiled``: a float32 CPU ``x`` in a compiled loop when numba is installed (the same value and gradient up
    to float rounding).
    """
    if x.dim() != 4:
        raise ValueError(f"total_variation expects a [B, C, H, W] factor, got shape {tuple(x.shape)}")
    return _TotalVariation.apply(x, compiled)


def tv_loss(field, kind: str, compiled: bool = False) -> Tensor:
    """``sum TV(plane) * 1e-2 + TV(line) * 1e-3`` over the ``kind`` (``density`` / ``app``) factors (``compiled``:
    see :func:`total_variation`)."""
    total = field.aabb.new_zeros(())
    for plane in field.planes(kind):
        total = total + total_variation(plane, compiled) * PLANE_TV_SCALE
    for line in field.lines(kind):
        total = total + total_variation(line, compiled) * LINE_TV_SCALE
    return total


def density_l1(field) -> Tensor:
    """``sum mean|plane| + mean|line|`` over the density factors."""
    total = field.aabb.new_zeros(())
    for factor in field.planes("density") + field.lines("density"):
        total = total + factor.abs().mean()
    return total


def line_orthogonality(lines: list[Tensor]) -> Tensor:
    """Mean absolute off-diagonal of ``V V^T`` per line factor ``[1, C, L, 1]`` (channels pushed apart)."""
    total = lines[0].new_zeros(())
    for line in lines:
        vectors = line.view(line.shape[1], line.shape[2])
        gram = vectors @ vectors.T
        off_diagonal = gram[~torch.eye(gram.shape[0], dtype=torch.bool, device=gram.device)]
        total = total + off_diagonal.abs().mean()
    return total


def orthogonality(field) -> Tensor:
    """Orthogonality of the density and appearance lines (``Ortho_weight``)."""
    return line_orthogonality(field.lines("density")) + line_orthogonality(field.lines("app"))
