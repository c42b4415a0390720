"""Volume rendering: renders of ray batches and full images (compositing itself is in :mod:`models.compositing`).

A full-image render holds rays of one frame: the field is queried at one time ``t``. A training batch may hold
several frames: ``t`` is then a sequence of times, and the rays are grouped by frame in ``len(t)`` equal consecutive
blocks. Sampling and compositing run over the whole batch; only the field lookups go frame by frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .compositing import (
    Times,
    anchor_weights,
    composite_depth,
    composite_rgb,
    over_background,
    per_frame,
    sample_weights,
)
from .sampling import Marched, OccupancySampler, RaySampler

SHADE_BLOCK = 16384  # points per shading pass of a CPU render (shade)


def render_rays(field, sampler: RaySampler, rays_o: Tensor, rays_d: Tensor, t: Times, *, n_samples: int,
                train: bool = False, white_bg: bool = False, generator: torch.Generator | None = None,
                color: bool = True, color_stride: int = 1) -> dict[str, Tensor]:
    """Render one batch of rays of one frame, or of several frames grouped in equal blocks.

    Args:
        field: a :class:`models.fields.StreamTensorBase`.
        sampler: places samples along the rays (:mod:`models.sampling`).
        rays_o, rays_d: ``[n_rays, 3]`` rays in the field's space (NDC when the scene uses it).
        t: time of the frame, in [0, 1]; or one time per frame block of rays.
        n_samples: samples per ray.
        train: jitter the samples.
        white_bg: composite over white.
        generator: random source of the jitter.
        color: False: depth and opacity only (no appearance lookups nor shading).
        color_stride: (batches not marched) colour at every ``color_stride``-th weighted sample and the others of
            :func:`models.compositing.shading_anchors`, interpolated between, as fast renders evaluate it; 1: at
            every weighted sample.

    Returns:
        ``rgb [n_rays, 3]`` (when ``color``), ``depth [n_rays]`` (no gradient), ``acc [n_rays]``; in training also
        ``weights [n_rays, n_samples]`` and ``z_vals [n_rays or 1, n_samples]`` (for losses on the weights).
    """
    if not train and isinstance(sampler, OccupancySampler) and not isinstance(t, Sequence):
        # a render with the fast sampler: march the rays, then shade (models.sampling.OccupancySampler.march_weights)
        stride = sampler.color_stride(field)
        marched = sampler.march_weights(field, rays_o, rays_d, n_samples, t, color_stride=stride if color else 0)
        return composite_marched(field, marched, t, white_bg, color_stride=stride, color=color,
                                 features=lambda points: sampler.app_features(field, points, t))
    samples = sampler(field, rays_o, rays_d, n_samples, train, generator, t=t)
    xyz = field.normalize_coord(samples.xyz)
    weights = sample_weights(field, samples, xyz, t)
    far_value = rays_d[:, 2] if getattr(sampler, "ndc", True) else samples.viewdirs[:, 2]
    with torch.no_grad():
        depth = composite_depth(weights, samples.z_vals, far_value)
    out = {"depth": depth, "acc": weights.sum(-1)}
    if train:  # what training losses on the weights need (full-image renders keep per-ray outputs only)
        out["weights"], out["z_vals"] = weights, samples.z_vals
    if color and color_stride > 1:  # colour at a render's shading anchors, interpolated between them
        ray, index, carried = anchor_weights(weights, field.rayMarch_weight_thres, color_stride)
        shaded = torch.zeros_like(weights, dtype=torch.bool)
        shaded[ray, index] = True  # (xyz[shaded] is in the anchors' row-major order)
        rgb = field.color(xyz[shaded], samples.viewdirs[ray], per_frame(field.app_features, xyz, shaded, t))
        rgb_map = torch.zeros((weights.shape[0], 3), device=weights.device, dtype=weights.dtype)
        out["rgb"] = over_background(rgb_map.index_add(0, ray, carried[:, None] * rgb.to(weights.dtype)),
                                     out["acc"], white_bg)
    elif color:
        app_mask = weights > field.rayMarch_weight_thres
        rgb = torch.zeros((*weights.shape, 3), device=rays_o.device, dtype=rays_o.dtype)
        dirs = samples.viewdirs[:, None, :].expand(xyz.shape)[app_mask]
        rgb[app_mask] = field.color(xyz[app_mask], dirs,
                                    per_frame(field.app_features, xyz, app_mask, t)).to(rgb.dtype)
        out["rgb"] = composite_rgb(weights, rgb, white_bg)
    return out


def composite_marched(field, marched: Marched, t: float, white_bg: bool, *, color_stride: int = 1,
                      color: bool = True, features: Callable[[Tensor], Tensor] | None = None) -> dict[str, Tensor]:
    """:func:`render_rays`' outputs from a marched render (:meth:`OccupancySampler.march_weights`).

    The same compositing as dense renders. Colour is evaluated only where the weight exceeds
    ``rayMarch_weight_thres``, and there at every ``color_stride``-th sample of each ray's run and at every sample
    carrying more than ``HEAVY_WEIGHT`` of its pixel, interpolated in between
    (:func:`models.compositing.shading_anchors`); ``color_stride`` 1 is dense mode's colour exactly. The compiled
    march gives the anchors' weights of that split itself (``marched.anchor_weights``). ``features``: the appearance
    lookup of box-normalized points (``field.app_features`` at ``t`` by default).
    """
    steps, weights = marched.steps, marched.weights
    acc = weights.sum(-1)
    # the release's far value: the ray direction's z (NDC rays as given; unit directions in a box)
    out = {"depth": composite_depth(weights, steps.z_vals, steps.directions[:, 2]), "acc": acc}
    if not color:
        return out
    if marched.anchor_weights is not None:
        ray, index = torch.nonzero(marched.anchor_weights, as_tuple=True)
        anchor_w = marched.anchor_weights[ray, index]
    else:
        ray, index, anchor_w = anchor_weights(weights, field.rayMarch_weight_thres, color_stride)
    points = field.normalize_coord(steps.point(ray, index))
    features = features if features is not None else (lambda part: field.app_features(part, t))
    rgb = shade(field, points, steps.viewdirs[ray], features).to(weights.dtype)
    rgb_map = torch.zeros((weights.shape[0], 3), device=weights.device, dtype=weights.dtype)
    out["rgb"] = over_background(rgb_map.index_add_(0, ray, anchor_w[:, None] * rgb), acc, white_bg)
    return out


def shade(field, points: Tensor, viewdirs: Tensor, features: Callable[[Tensor], Tensor]) -> Tensor:
    """Colour ``[N, 3]`` of a render's shaded points (box-normalized ``[N, 3]``, unit ``viewdirs [N, 3]``), with
    the appearance lookup ``features``; on the CPU ``SHADE_BLOCK`` points at a time, so that the shading MLP's
    activations stay in cache (2.5x faster on this project's CPU than one pass over a chunk's ~150k points)."""
    if points.device.type != "cpu" or points.shape[0] <= SHADE_BLOCK:
        return field.color(points, viewdirs, features(points))
    return torch.cat([field.color(p, d, features(p))
                      for p, d in zip(points.split(SHADE_BLOCK), viewdirs.split(SHADE_BLOCK))])


@torch.no_grad()
def render_chunked(field, sampler: RaySampler, rays_o: Tensor, rays_d: Tensor, t: float, *, n_samples: int,
                   chunk: int = 4096, white_bg: bool = False, device: torch.device | str | None = None,
                   color: bool = True) -> dict[str, Tensor]:
    """Evaluation render of many rays of one frame, ``chunk`` rays at a time; results on the rays' device.

    Args:
        rays_o, rays_d: ``[n_rays, 3]``.
        device: where the field runs (the rays are moved there chunk by chunk); the field's device by default.
        color: False: depth and opacity only.

    Returns:
        ``rgb [n_rays, 3]`` (when ``color``), ``depth [n_rays]``, ``acc [n_rays]``.
    """
    device = device or field.aabb.device
    out: dict[str, list[Tensor]] = {}
    for start in range(0, rays_o.shape[0], chunk):
        part = render_rays(field, sampler, rays_o[start:start + chunk].to(device),
                           rays_d[start:start + chunk].to(device), t, n_samples=n_samples, train=False,
                           white_bg=white_bg, color=color)
        for key, value in part.items():
            out.setdefault(key, []).append(value.to(rays_o.device))
    return {key: torch.cat(values) for key, values in out.items()}


@torch.no_grad()
def render_image(field, sampler: RaySampler, scene, frame: int | None = None, cam: int | None = None, *,
                 c2w: Tensor | None = None, t: float | None = None, n_samples: int | None = None,
                 chunk: int = 4096, white_bg: bool = False, color: bool = True) -> dict[str, Tensor]:
    """Full image of dataset camera ``cam`` (or a free camera ``c2w``) at frame ``frame`` (or time ``t``).

    Args:
        field: the 4D field.
        sampler: ray sampler (:func:`models.sampling.build_sampler`).
        scene: a :class:`dataloader.Scene` (image size, intrinsics, NDC flag, frame times).
        frame: frame index into ``scene.times``; ignored when ``t`` is given.
        cam: camera index along the scene's C axis.
        c2w: ``[3|4, 4]`` free camera in scene space (camera 0's intrinsics), instead of ``cam``.
        t: time in [0, 1] (e.g. for a render path that sweeps time).
        n_samples: samples per ray; the release's full-render count ``field.n_samples_full`` by default.
        color: False: depth and opacity only (e.g. the editor's depth for warping).

    Returns:
        ``rgb [H, W, 3]`` float in [0, 1] (when ``color``), ``depth [H, W]`` (NDC ray parameter when
        ``scene.ndc``), ``acc [H, W]``.
    """
    if t is None:
        if frame is None:
            raise ValueError("render_image needs a frame index or a time t")
        t = float(scene.times[frame])
    if c2w is not None:
        rays_o, rays_d = scene.camera_rays(c2w)
    elif cam is not None:
        rays_o, rays_d = scene.image_rays(cam, frame if frame is not None else 0)
    else:
        raise ValueError("render_image needs a camera index cam or a free camera c2w")
    out = render_chunked(field, sampler, rays_o, rays_d, t, n_samples=n_samples or field.n_samples_full,
                         chunk=chunk, white_bg=white_bg, color=color)
    H, W = scene.height, scene.width
    return {key: value.view(H, W, -1) if key == "rgb" else value.view(H, W) for key, value in out.items()}
