"""Regularizers on the stored factors of a stream TensoRF field: TV, L1 (density), orthogonality.

Each works on every stored channel (not only the ones live at some time), as in the release.
"""

from __future__ import annotations

import torch
from torch import Tensor

PLANE_TV_SCALE = 1e-2
LINE_TV_SCALE = 1e-3


def total_variation(x: Tensor) -> Tensor:
    """Mean squared difference between neighbours along H and W of ``x [B, C, H, W]``, ``2 * (h + w) / B``.

    An axis of size 1 (the W axis of a line factor) contributes 0; the release's formula divides 0 by 0 there.
    """
    batch, _, h, w = x.shape
    total = x.new_zeros(())
    if h > 1:
        total = total + (x[:, :, 1:, :] - x[:, :, :-1, :]).pow(2).sum() / x[:, :, 1:, :].numel() * batch
    if w > 1:
        total = total + (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).sum() / x[:, :, :, 1:].numel() * batch
    return 2.0 * total / batch


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
