"""Backward warping by optical flow, the forward-backward consistency mask, and filling from a warp.

Conventions (the same as RAFT's and :mod:`dataloader.cameras`):
- Flow is in pixels; ``flow[..., 0]`` is x (columns), ``flow[..., 1]`` is y (rows).
- Pixel (column i, row j) has its centre at pixel index coordinates (i, j); sampling uses
  ``grid_sample(..., align_corners=True)`` with ``x_norm = 2 x / (W - 1) - 1``, so integer coordinates hit pixel
  centres exactly.
- A flow ``[H, W, 2]`` belongs to the pixels of the image it starts from: ``flow_ab[y, x]`` is how far pixel
  ``(x, y)`` of image ``a`` moves to reach the same surface point in image ``b``.
- Images are float CHW ``[C, H, W]`` (or batched ``[N, C, H, W]``), values in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

FlowFn = Callable[[Tensor, Tensor], Tensor]


def pixel_grid(height: int, width: int, device: torch.device | str | None = None) -> Tensor:
    """Pixel index coordinates ``[H, W, 2]`` (x, y) of every pixel centre."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                            torch.arange(width, device=device, dtype=torch.float32), indexing="ij")
    return torch.stack([xs, ys], dim=-1)


def sample_at(image: Tensor, coords: Tensor, mode: str = "bilinear", padding_mode: str = "border") -> Tensor:
    """Sample an image at continuous pixel index coordinates.

    Pixel (i, j)'s centre is at (i, j); ``align_corners=True``. Out-of-image coordinates follow
    ``padding_mode`` (``"border"`` repeats the edge pixels, ``"zeros"`` gives 0).

    Args:
        image: ``[C, H, W]`` or ``[N, C, H, W]``.
        coords: ``[h, w, 2]`` or ``[N, h, w, 2]`` (x, y) positions in ``image``.

    Returns:
        ``[C, h, w]`` or ``[N, C, h, w]``, the dtype of ``image``.
    """
    batched = image.dim() == 4
    img = image if batched else image[None]
    grid = coords if coords.dim() == 4 else coords[None]
    grid = grid.to(device=img.device, dtype=torch.float32)
    if grid.shape[0] != img.shape[0]:
        grid = grid.expand(img.shape[0], *grid.shape[1:])
    H, W = img.shape[-2:]
    scale = torch.tensor([2.0 / max(W - 1, 1), 2.0 / max(H - 1, 1)], device=grid.device)
    out = F.grid_sample(img.float(), grid * scale - 1.0, mode=mode, padding_mode=padding_mode, align_corners=True)
    out = out.to(image.dtype)
    return out if batched else out[0]


def warp_by_flow(image: Tensor, flow: Tensor, mode: str = "bilinear", padding_mode: str = "border") -> Tensor:
    """Backward warping: ``out[:, y, x] = image[:, y + flow[y, x, 1], x + flow[y, x, 0]]`` (bilinear).

    To carry image ``a`` into the frame of image ``b``, pass ``flow_ba`` (the flow of ``b``'s pixels into ``a``).
    Samples falling outside ``image`` repeat its border (``padding_mode="border"``) or are 0 (``"zeros"``);
    :func:`flow_inside` tells which pixels those are.

    Args:
        image: ``[C, H, W]`` or ``[N, C, H, W]``, the image to sample.
        flow: ``[h, w, 2]`` or ``[N, h, w, 2]`` pixels, x first, on the output's pixel grid.

    Returns:
        ``[C, h, w]`` or ``[N, C, h, w]``.
    """
    h, w = flow.shape[-3:-1]
    coords = pixel_grid(h, w, flow.device) + flow.float()
    return sample_at(image, coords, mode=mode, padding_mode=padding_mode)


def flow_inside(flow: Tensor, height: int | None = None, width: int | None = None) -> Tensor:
    """Bool ``[..., h, w]``: pixels whose target ``x + flow`` falls on a pixel of a ``height x width`` image.

    A pixel covers its centre +- 0.5, so targets in ``[-0.5, width - 0.5] x [-0.5, height - 0.5]`` are inside
    (the default size is the flow's own).
    """
    h, w = flow.shape[-3:-1]
    height, width = height or h, width or w
    target = pixel_grid(h, w, flow.device) + flow.float()
    x, y = target[..., 0], target[..., 1]
    return (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)


def consistency_mask(flow: Tensor, flow_back: Tensor, alpha1: float = 0.5, alpha2: float = 0.5) -> Tensor:
    """Forward-backward check: True where ``flow`` is reliable.

    For pixel ``x`` of image ``a`` with ``flow = flow_ab`` and ``flow_back = flow_ba``, the round trip
    ``e = flow(x) + flow_back(x + flow(x))`` is near zero where the surface is visible in both images. A pixel is
    reliable when ``|e| < alpha1 * (|flow(x)| + |flow_back(x + flow(x))|) + alpha2`` (the release's rule and
    constants, norms in pixels) and its target lies inside ``b``.

    Args:
        flow: ``[H, W, 2]`` flow of ``a``'s pixels into ``b``.
        flow_back: ``[H, W, 2]`` flow of ``b``'s pixels into ``a``.
        alpha1: tolerance relative to the flow magnitudes.
        alpha2: tolerance in pixels.

    Returns:
        Bool ``[H, W]`` on ``a``'s pixels.
    """
    if flow.shape != flow_back.shape:
        raise ValueError(f"consistency_mask: flow {tuple(flow.shape)} and flow_back {tuple(flow_back.shape)} "
                         "must have the same [H, W, 2] shape; compute both on the same image pair")
    back_at_target = warp_by_flow(flow_back.permute(2, 0, 1).float(), flow).permute(1, 2, 0)
    error = (flow.float() + back_at_target).norm(dim=-1)
    bound = alpha1 * (flow.float().norm(dim=-1) + back_at_target.norm(dim=-1)) + alpha2
    return (error < bound) & flow_inside(flow)


def fill_from_warp(current: Tensor, warped: Tensor, mask: Tensor) -> Tensor:
    """Take ``warped`` where ``mask`` holds and keep ``current`` elsewhere.

    Args:
        current, warped: ``[C, H, W]`` (or ``[N, C, H, W]``).
        mask: bool ``[H, W]`` (or ``[N, H, W]``); a float mask in [0, 1] blends the two.

    Returns:
        The same shape as ``current``.
    """
    m = mask.unsqueeze(-3).to(current.device)
    if m.dtype == torch.bool:
        return torch.where(m, warped.to(current), current)
    return current + m.to(current.dtype) * (warped.to(current) - current)


def reliable_mask(flow_dst_src: Tensor, flow_src_dst: Tensor, src: Tensor | None = None, dst: Tensor | None = None,
                  alpha1: float = 0.5, alpha2: float = 0.5, photometric_threshold: float | None = 0.05) -> Tensor:
    """Where a warp of ``src`` into ``dst`` (by ``flow_dst_src``) can be trusted: bool ``[H, W]`` on ``dst``'s pixels.

    A pixel passes :func:`consistency_mask` and, when ``src``/``dst`` are given and ``photometric_threshold`` is
    not None, warping the *original* ``src`` reproduces the original ``dst`` there (largest channel difference
    below the threshold). The photometric test is an addition to the release: smooth flows such as DIS stay
    forward-backward consistent across occlusion boundaries, so the first test alone misses most occlusions.

    Args:
        flow_dst_src: ``[H, W, 2]`` flow of ``dst``'s pixels into ``src``.
        flow_src_dst: ``[H, W, 2]`` flow of ``src``'s pixels into ``dst``.
        src, dst: ``[3, H, W]`` original (unedited) images in [0, 1], for the photometric test.
        alpha1, alpha2: constants of :func:`consistency_mask`.
        photometric_threshold: colour tolerance in [0, 1] units, or None to skip the test.
    """
    mask = consistency_mask(flow_dst_src, flow_src_dst, alpha1, alpha2)
    if photometric_threshold is not None and src is not None and dst is not None:
        src, dst = src.to(flow_dst_src.device).float(), dst.to(flow_dst_src.device).float()
        mask &= (warp_by_flow(src, flow_dst_src) - dst).abs().amax(0) < photometric_threshold
    return mask


def propagate_by_flow(edited_src: Tensor, src: Tensor, dst: Tensor, flow: FlowFn, alpha1: float = 0.5,
                      alpha2: float = 0.5, photometric_threshold: float | None = 0.05) -> tuple[Tensor, Tensor]:
    """Carry an edit of ``src`` into the frame of ``dst``, with flow computed on the unedited images.

    Args:
        edited_src: ``[C, H, W]`` the edited version of ``src``.
        src, dst: ``[3, H, W]`` original (unedited) images in [0, 1].
        flow: a flow estimator ``flow(a, b) -> [H, W, 2]`` (see :func:`ip2p_models.flow.make_flow`).
        alpha1, alpha2, photometric_threshold: see :func:`reliable_mask`.

    Returns:
        ``warped [C, H, W]`` (``edited_src`` seen from ``dst``) and bool ``mask [H, W]``, True where reliable.
    """
    flow_dst_src = flow(dst, src).to(edited_src.device)
    flow_src_dst = flow(src, dst).to(edited_src.device)
    warped = warp_by_flow(edited_src, flow_dst_src)
    return warped, reliable_mask(flow_dst_src, flow_src_dst, src, dst, alpha1, alpha2, photometric_threshold)
