"""Regularizers on the stored factors of a stream TensoRF field: TV, L1 (density), orthogonality.

Each works on every stored channel (not only the ones live at some time), as in the release.
"""

from __future__ import annotations

import torch
from torch import Tensor

PLANE_TV_SCALE = 1e-2
LINE_TV_SCALE = 1e-3


class _TotalVariation(torch.autograd.Function):
    """TV value and gradient in one pass over the neighbour differences (autograd through slices costs about four
    times as much: a full-size zero tensor and a copy per slice in the backward)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
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
    def backward(ctx, grad_output: Tensor) -> Tensor:
        (grad,) = ctx.saved_tensors
        return grad * grad_output


def total_variation(x: Tensor) -> Tensor:
    """Mean squared difference between neighbours along H and W of ``x [B, C, H, W]``, ``2 * (h + w) / B``.

    An axis of size 1 (the W axis of a line factor) contributes 0; the release's formula divides 0 by 0 there.
    """
    if x.dim() != 4:
        raise ValueError(f"total_variation expects a [B, C, H, W] factor, got shape {tuple(x.shape)}")
    return _TotalVariation.apply(x)


def tv_loss(field, kind: str) -> Tensor:
    """``sum TV(plane) * 1e-2 + TV(line) * 1e-3`` over the ``kind`` (``density`` / ``app``) factors."""
    total = field.aabb.new_zeros(())
    for plane in field.planes(kind):
        total = total + total_variation(plane) * PLANE_TV_SCALE
    for line in field.lines(kind):
        total = total + total_variation(line) * LINE_TV_SCALE
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
