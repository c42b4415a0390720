"""Depth-based warping: carry an (edited) source view into a target view through 3D points.

Every target pixel is unprojected with the target's depth to a world point, projected into the source camera, and
the source image is sampled there (bilinear). The source's own 3D point at that spot is sampled too; where the two
points disagree by more than a threshold the target sees a surface the source does not (occlusion), and the pixel
is masked out. Several sources are averaged, each weighted by the share of the target it covers.

Conventions: :mod:`dataloader.cameras` (OpenGL camera-to-world, pixel (i, j)'s centre at (i, j), z-depth).
Depth is either world z-depth (equal to the ray parameter along :func:`dataloader.cameras.rays_from_pixels`
rays, whose camera-space z component is -1) or, with ``ndc=True``, the NDC ray parameter t in [0, 1) of the
release's forward-facing NDC; cameras must then live in the world that NDC is defined in (the recentred scene
space of a ``Scene`` with ``ndc``). Images are float ``[3, H, W]`` in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from dataloader.cameras import ndc_depth_to_points, project_points, rays_from_pixels, unproject_depth

from .warp import sample_at

DEFAULT_REL_DISTANCE = 0.02


@dataclass
class View:
    """One camera view: its image, depth and camera.

    Attributes:
        image: ``[3, H, W]`` in [0, 1] (the edited image for a source; unused for a target).
        depth: ``[H, W]`` world z-depth, or NDC ray parameter when the warp is called with ``ndc=True``.
        K: ``[3, 3]`` intrinsics; c2w: ``[3|4, 4]`` OpenGL camera-to-world.
    """

    image: Tensor | None
    depth: Tensor
    K: Tensor
    c2w: Tensor


def depth_to_points(depth: Tensor, K: Tensor, c2w: Tensor, ndc: bool = False) -> Tensor:
    """World points ``[H, W, 3]`` of every pixel of a depth map ``[H, W]`` (z-depth, or NDC t with ``ndc``)."""
    depth = depth.float()
    if not ndc:
        return unproject_depth(depth, K.float(), c2w.float())
    H, W = depth.shape
    ys, xs = torch.meshgrid(torch.arange(H, device=depth.device), torch.arange(W, device=depth.device),
                            indexing="ij")
    rays_o, rays_d = rays_from_pixels(xs.reshape(-1), ys.reshape(-1), K.float().to(depth.device),
                                      c2w.float().to(depth.device))
    return ndc_depth_to_points(depth.reshape(-1), rays_o, rays_d).reshape(H, W, 3)


def warp_by_points(source_image: Tensor, source_points: Tensor, target_points: Tensor, source_xy: Tensor,
                   max_distance: Tensor | float) -> tuple[Tensor, Tensor]:
    """Sample a source view where target pixels land, keeping pixels whose 3D points agree.

    Args:
        source_image: ``[C, Hs, Ws]``.
        source_points: ``[Hs, Ws, 3]`` world points of the source's pixels.
        target_points: ``[H, W, 3]`` world points of the target's pixels.
        source_xy: ``[H, W, 2]`` where each target pixel lands in the source (pixel index coordinates, x first).
        max_distance: largest accepted distance between the two points (world units), scalar or ``[H, W]``.

    Returns:
        ``image [C, H, W]`` (0 where masked) and bool ``mask [H, W]``.
    """
    Hs, Ws = source_points.shape[:2]
    x, y = source_xy[..., 0], source_xy[..., 1]
    inside = (x >= 0) & (x <= Ws - 1) & (y >= 0) & (y <= Hs - 1) & torch.isfinite(source_xy).all(-1)
    xy = torch.where(inside[..., None], source_xy, torch.zeros_like(source_xy))
    image = sample_at(source_image.float(), xy)
    seen = sample_at(source_points.permute(2, 0, 1).float(), xy).permute(1, 2, 0)
    distance = (seen - target_points.float()).norm(dim=-1)
    mask = inside & (distance < max_distance) & torch.isfinite(target_points).all(-1)
    return image * mask[None], mask


def depth_warp(target: View, source: View, ndc: bool = False, max_distance: float | None = None,
               rel_distance: float = DEFAULT_REL_DISTANCE) -> tuple[Tensor, Tensor]:
    """Warp ``source.image`` into the target camera with both views' depths.

    Args:
        target: the target camera and depth (its image is not used).
        source: the source image, depth and camera.
        ndc: depths are NDC ray parameters (cameras in the NDC scene space).
        max_distance: occlusion threshold in world units; None uses ``rel_distance`` times the target's z-depth.
        rel_distance: relative occlusion threshold (used when ``max_distance`` is None).

    Returns:
        ``image [3, H, W]`` (0 where masked) and bool ``mask [H, W]``, True where the source sees the target's
        surface.
    """
    if source.image is None:
        raise ValueError("depth_warp: the source View needs an image to warp")
    target_points = depth_to_points(target.depth, target.K, target.c2w, ndc)
    source_points = depth_to_points(source.depth, source.K, source.c2w, ndc).to(target_points)
    source_xy, z_in_source = project_points(target_points, source.K.float(), source.c2w.float())
    source_xy = torch.where((z_in_source > 0)[..., None], source_xy, torch.full_like(source_xy, float("nan")))
    if max_distance is None:
        _, z_target = project_points(target_points, target.K.float(), target.c2w.float())
        max_distance = rel_distance * z_target.abs()
    return warp_by_points(source.image.to(target_points), source_points, target_points, source_xy, max_distance)


def combine_warps(images: Sequence[Tensor], masks: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Average warps of several sources, each weighted by its coverage (share of the target it reaches).

    Args:
        images: ``[3, H, W]`` each; masks: bool ``[H, W]`` each.

    Returns:
        ``image [3, H, W]`` (0 where no source reaches) and bool ``mask [H, W]`` (any source reaches).
    """
    weights = [m.float() * m.float().mean() for m in masks]
    total = torch.stack(weights).sum(0)
    image = sum(w[None] * img for w, img in zip(weights, images)) / total.clamp_min(1e-12)[None]
    mask = total > 0
    return image * mask[None], mask


def depth_warp_views(target: View, sources: Sequence[View], ndc: bool = False, max_distance: float | None = None,
                     rel_distance: float = DEFAULT_REL_DISTANCE) -> tuple[Tensor, Tensor]:
    """Warp several sources into the target (:func:`depth_warp`) and combine them (:func:`combine_warps`).

    Returns:
        ``image [3, H, W]`` and bool ``mask [H, W]``.
    """
    if not sources:
        raise ValueError("depth_warp_views: give at least one source view")
    warps = [depth_warp(target, s, ndc=ndc, max_distance=max_distance, rel_distance=rel_distance) for s in sources]
    return combine_warps([w[0] for w in warps], [w[1] for w in warps])
