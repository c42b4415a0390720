"""Volume rendering: renders of ray batches and full images (compositing itself is in :mod:`models.compositing`).

A full-image render holds rays of one frame: the field is queried at one time ``t``. A training batch may hold
several frames: ``t`` is then a sequence of times, and the rays are grouped by frame in ``len(t)`` equal consecutive
blocks. Sampling and compositing run over the whole batch; only the field lookups go frame by frame.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .compositing import Times, alpha_weights, composite_depth, composite_rgb, per_frame, sample_weights
from .sampling import RaySampler, RaySamples


def render_rays(field, sampler: RaySampler, rays_o: Tensor, rays_d: Tensor, t: Times, *, n_samples: int,
                train: bool = False, white_bg: bool = False,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
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

    Returns:
        ``rgb [n_rays, 3]``, ``depth [n_rays]`` (no gradient), ``acc [n_rays]``.
    """
    marched = None if train or not hasattr(sampler, "march") else sampler.march(field, rays_o, rays_d, n_samples, t)
    if marched is not None:
        return composite_marched(field, *marched, rays_d, t, white_bg, getattr(sampler, "ndc", True))
    samples = sampler(field, rays_o, rays_d, n_samples, train, generator, t=t)
    xyz = field.normalize_coord(samples.xyz)
    # renders with the fast sampler stop each ray once its transmittance is negligible (the dense sampler is the
    # release's reference: every sample)
    stop_below = 0.0 if train else getattr(sampler, "early_stop", 0.0)
    # ... and look the density up in the frame's node volume when the sampler keeps one (the same values)
    volume = sampler.render_volume(field, train, t) if hasattr(sampler, "render_volume") else None
    density = (lambda points, _t: volume.density(field, points)) if volume is not None else None
    weights = sample_weights(field, samples, xyz, t, stop_below=stop_below, density=density)

    app_mask = weights > field.rayMarch_weight_thres
    rgb = torch.zeros((*weights.shape, 3), device=rays_o.device, dtype=rays_o.dtype)
    dirs = samples.viewdirs[:, None, :].expand(xyz.shape)[app_mask]
    points = xyz[app_mask]
    rgb[app_mask] = field.color(points, dirs, per_frame(field.app_features, xyz, app_mask, t)).to(rgb.dtype)

    far_value = rays_d[:, 2] if getattr(sampler, "ndc", True) else samples.viewdirs[:, 2]
    with torch.no_grad():
        depth = composite_depth(weights, samples.z_vals, far_value)
    return {"rgb": composite_rgb(weights, rgb, white_bg), "depth": depth, "acc": weights.sum(-1)}


def composite_marched(field, samples: RaySamples, sigma: Tensor, rays_d: Tensor, t: float, white_bg: bool,
                      ndc: bool) -> dict[str, Tensor]:
    """:func:`render_rays`' outputs from a marched render's densities (:meth:`OccupancySampler.march`): the same
    compositing, with colour evaluated (and summed) only where the weight exceeds ``rayMarch_weight_thres``."""
    weights = alpha_weights(sigma, samples.dists * field.distance_scale)[1]
    ray, index = torch.nonzero(weights > field.rayMarch_weight_thres, as_tuple=True)
    points = field.normalize_coord(samples.xyz[ray, index])
    rgb = field.color(points, samples.viewdirs[ray], field.app_features(points, t)).to(weights.dtype)
    acc = weights.sum(-1)
    rgb_map = torch.zeros((weights.shape[0], 3), device=weights.device, dtype=weights.dtype)
    rgb_map.index_add_(0, ray, weights[ray, index, None] * rgb)
    if white_bg:
        rgb_map = rgb_map + (1.0 - acc[:, None])
    far_value = rays_d[:, 2] if ndc else samples.viewdirs[:, 2]
    depth = composite_depth(weights, samples.z_vals, far_value)
    return {"rgb": rgb_map.clamp(0, 1), "depth": depth, "acc": acc}


@torch.no_grad()
def render_chunked(field, sampler: RaySampler, rays_o: Tensor, rays_d: Tensor, t: float, *, n_samples: int,
                   chunk: int = 4096, white_bg: bool = False, device: torch.device | str | None = None
                   ) -> dict[str, Tensor]:
    """Evaluation render of many rays of one frame, ``chunk`` rays at a time; results on the rays' device.

    Args:
        rays_o, rays_d: ``[n_rays, 3]``.
        device: where the field runs (the rays are moved there chunk by chunk); the field's device by default.

    Returns:
        ``rgb [n_rays, 3]``, ``depth [n_rays]``, ``acc [n_rays]``.
    """
    device = device or field.aabb.device
    out: dict[str, list[Tensor]] = {"rgb": [], "depth": [], "acc": []}
    for start in range(0, rays_o.shape[0], chunk):
        part = render_rays(field, sampler, rays_o[start:start + chunk].to(device),
                           rays_d[start:start + chunk].to(device), t, n_samples=n_samples, train=False,
                           white_bg=white_bg)
        for key in out:
            out[key].append(part[key].to(rays_o.device))
    return {key: torch.cat(values) for key, values in out.items()}


@torch.no_grad()
def render_image(field, sampler: RaySampler, scene, frame: int | None = None, cam: int | None = None, *,
                 c2w: Tensor | None = None, t: float | None = None, n_samples: int | None = None,
                 chunk: int = 4096, white_bg: bool = False) -> dict[str, Tensor]:
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

    Returns:
        ``rgb [H, W, 3]`` float in [0, 1], ``depth [H, W]`` (NDC ray parameter when ``scene.ndc``), ``acc [H, W]``.
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
                         chunk=chunk, white_bg=white_bg)
    H, W = scene.height, scene.width
    return {"rgb": out["rgb"].view(H, W, 3), "depth": out["depth"].view(H, W), "acc": out["acc"].view(H, W)}
