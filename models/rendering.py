"""Volume rendering: compositing as pure functions, and renders of ray batches and full images.

A full-image render holds rays of one frame: the field is queried at one time ``t``. A training batch may hold
several frames: ``t`` is then a sequence of times, and the rays are grouped by frame in ``len(t)`` equal consecutive
blocks. Sampling and compositing run over the whole batch; only the field lookups go frame by frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .sampling import RaySampler, RaySamples, frame_blocks

WEIGHT_EPS = 1e-10


def alpha_weights(sigma: Tensor, dists: Tensor) -> tuple[Tensor, Tensor]:
    """Opacity and compositing weights along rays.

    ``alpha = 1 - exp(-sigma * dists)``; ``T_i = prod_{j<i} (1 - alpha_j + 1e-10)``; ``w = alpha * T``.

    Args:
        sigma: ``[n_rays, n_samples]`` densities.
        dists: ``[n_rays, n_samples]`` sample spacing already multiplied by ``distance_scale``.

    Returns:
        ``alpha [n_rays, n_samples]``, ``weights [n_rays, n_samples]``.
    """
    alpha = 1.0 - torch.exp(-sigma * dists)
    ones = torch.ones_like(alpha[:, :1])
    transmittance = torch.cumprod(torch.cat([ones, 1.0 - alpha + WEIGHT_EPS], dim=-1), dim=-1)[:, :-1]
    return alpha, alpha * transmittance


def composite_rgb(weights: Tensor, rgb: Tensor, white_bg: bool) -> Tensor:
    """``sum w c`` (+ ``1 - sum w`` on a white background), clamped to [0, 1].

    Args:
        weights: ``[n_rays, n_samples]``; rgb: ``[n_rays, n_samples, 3]``.

    Returns:
        ``[n_rays, 3]``.
    """
    rgb_map = torch.sum(weights[..., None] * rgb, dim=-2)
    if white_bg:
        rgb_map = rgb_map + (1.0 - weights.sum(-1, keepdim=True))
    return rgb_map.clamp(0, 1)


def composite_depth(weights: Tensor, z_vals: Tensor, far_value: Tensor) -> Tensor:
    """``sum w z + (1 - sum w) * far_value`` (the release passes the ray direction's z as ``far_value``).

    Args:
        weights: ``[n_rays, n_samples]``; z_vals: ``[n_rays or 1, n_samples]``; far_value: ``[n_rays]``.

    Returns:
        ``[n_rays]``.
    """
    return torch.sum(weights * z_vals, dim=-1) + (1.0 - weights.sum(-1)) * far_value


Times = float | Sequence[float]


def per_frame(fn: Callable[[Tensor, float], Tensor], xyz: Tensor, mask: Tensor, t: Times) -> Tensor:
    """``fn(points, time)`` at the ``mask``-ed samples, in the order of ``xyz[mask]``.

    Args:
        fn: a field lookup (``field.density``, ``field.app_features``) of ``[N, 3]`` points at one time.
        xyz: ``[n_rays, n_samples, 3]`` box-normalized samples; mask: ``[n_rays, n_samples]`` bool.
        t: one time for all rays, or one per frame block of rays (see the module docstring).
    """
    if not isinstance(t, Sequence):
        return fn(xyz[mask], t)
    size, times = frame_blocks(xyz.shape[0], t)
    return torch.cat([fn(x[m], time) for x, m, time in zip(xyz.split(size), mask.split(size), times)])


def sample_weights(field, samples: RaySamples, xyz: Tensor, t: Times) -> Tensor:
    """Compositing weights ``[n_rays, n_samples]`` of ``samples`` at time(s) ``t``: density at the valid samples (and
    inside a release checkpoint's alpha mask), zero elsewhere.

    Args:
        samples: from a ray sampler; xyz: ``samples.xyz`` box-normalized (:meth:`normalize_coord`).
    """
    valid = samples.valid
    if field.alphaMask is not None:
        masked = valid.clone()
        masked[valid] = field.alphaMask.sample_alpha(samples.xyz[valid]) > 0
        valid = masked
    # empty selections are fine below (no `.any()` checks: each would wait for the device)
    sigma = torch.zeros(valid.shape, device=xyz.device, dtype=xyz.dtype)
    sigma[valid] = per_frame(field.density, xyz, valid, t)
    return alpha_weights(sigma, samples.dists * field.distance_scale)[1]


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
    samples = sampler(field, rays_o, rays_d, n_samples, train, generator, t=t)
    xyz = field.normalize_coord(samples.xyz)
    weights = sample_weights(field, samples, xyz, t)

    app_mask = weights > field.rayMarch_weight_thres
    rgb = torch.zeros((*weights.shape, 3), device=rays_o.device, dtype=rays_o.dtype)
    dirs = samples.viewdirs[:, None, :].expand(xyz.shape)[app_mask]
    points = xyz[app_mask]
    rgb[app_mask] = field.color(points, dirs, per_frame(field.app_features, xyz, app_mask, t)).to(rgb.dtype)

    far_value = rays_d[:, 2] if getattr(sampler, "ndc", True) else samples.viewdirs[:, 2]
    with torch.no_grad():
        depth = composite_depth(weights, samples.z_vals, far_value)
    return {"rgb": composite_rgb(weights, rgb, white_bg), "depth": depth, "acc": weights.sum(-1)}


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
        rays_o, rays_d = scene.image_rays(cam)
    else:
        raise ValueError("render_image needs a camera index cam or a free camera c2w")
    out = render_chunked(field, sampler, rays_o, rays_d, t, n_samples=n_samples or field.n_samples_full,
                         chunk=chunk, white_bg=white_bg)
    H, W = scene.height, scene.width
    return {"rgb": out["rgb"].view(H, W, 3), "depth": out["depth"].view(H, W), "acc": out["acc"].view(H, W)}
