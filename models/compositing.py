"""Compositing as pure functions: opacity, weights, colour and depth along rays, and per-frame field lookups.

No dependency on samplers or renderers (both import this module). A training batch may hold several frames: ``t``
is then a sequence of times and the rays are grouped by frame in ``len(t)`` equal consecutive blocks
(:func:`frame_blocks`); only the field lookups go frame by frame (:func:`per_frame`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .fields import FrameTimes

if TYPE_CHECKING:
    from .sampling import RaySamples

WEIGHT_EPS = 1e-10
# renders that interpolate colour (shading_anchors) shade every sample carrying more than this share of its pixel
HEAVY_WEIGHT = 0.03


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
    return over_background(torch.sum(weights[..., None] * rgb, dim=-2), weights.sum(-1), white_bg)


def over_background(rgb_map: Tensor, acc: Tensor, white_bg: bool) -> Tensor:
    """Composited colours ``[n_rays, 3]`` of opacity ``acc [n_rays]`` over the background (white: ``+ 1 - acc``;
    black: as they are), clamped to [0, 1]."""
    if white_bg:
        rgb_map = rgb_map + (1.0 - acc[:, None])
    return rgb_map.clamp(0, 1)


def composite_depth(weights: Tensor, z_vals: Tensor, far_value: Tensor) -> Tensor:
    """``sum w z + (1 - sum w) * far_value`` (the release passes the ray direction's z as ``far_value``).

    Args:
        weights: ``[n_rays, n_samples]``; z_vals: ``[n_rays or 1, n_samples]``; far_value: ``[n_rays]``.

    Returns:
        ``[n_rays]``.
    """
    return torch.sum(weights * z_vals, dim=-1) + (1.0 - weights.sum(-1)) * far_value


def distortion(weights: Tensor, z_vals: Tensor) -> Tensor:
    """mip-NeRF 360's distortion loss of each ray, in ray-parameter units (NDC: ``[0, 1]`` from near to far).

    Sample ``i`` stands for the interval from ``z_i`` to the next sample (the last one for a point):
    ``sum_ij w_i w_j |m_i - m_j| + 1/3 sum_i w_i^2 (z_{i+1} - z_i)``, ``m`` the intervals' midpoints. Small when the
    weight gathers in few short intervals (a surface), large when it is spread along the ray (fog). The pair sum is
    taken in one pass over the sorted samples: ``2 sum_i w_i (m_i W_i - S_i)``, with ``W_i`` and ``S_i`` the sums of
    ``w`` and ``w m`` over the samples before ``i``.

    Args:
        weights: ``[n_rays, n_samples]``; z_vals: ``[n_rays or 1, n_samples]`` increasing along each ray.

    Returns:
        ``[n_rays]``.
    """
    z = z_vals.expand(weights.shape)
    length = torch.cat([z[:, 1:] - z[:, :-1], torch.zeros_like(z[:, :1])], dim=-1)
    mid = z + 0.5 * length
    wm = weights * mid
    before_w = torch.cumsum(weights, -1) - weights
    before_wm = torch.cumsum(wm, -1) - wm
    pairs = 2.0 * torch.sum(weights * (mid * before_w - before_wm), dim=-1)
    return pairs + torch.sum(weights.square() * length, dim=-1) / 3.0


Times = float | Sequence[float]


def frame_blocks(n_rays: int, t: float | Sequence[float]) -> tuple[int, list[float]]:
    """``(rays per block, times)`` of a batch at time ``t``, or at one time per equal consecutive block of rays."""
    times = [float(v) for v in t] if isinstance(t, Sequence) else [float(t)]
    if n_rays % len(times):
        raise ValueError(f"{n_rays} rays cannot be split into {len(times)} equal frame blocks")
    return n_rays // len(times), times


def per_frame(fn: Callable[[Tensor, float], Tensor], xyz: Tensor, mask: Tensor, t: Times) -> Tensor:
    """``fn(points, time)`` at the ``mask``-ed samples, in the order of ``xyz[mask]``.

    Args:
        fn: a field lookup (``field.density``, ``field.app_features``) of ``[N, 3]`` points at one time, or (CPU
            tensors) at the frames of a :class:`models.fields.FrameTimes`.
        xyz: ``[n_rays, n_samples, 3]`` box-normalized samples; mask: ``[n_rays, n_samples]`` bool.
        t: one time for all rays, or one per frame block of rays (see the module docstring).
    """
    if not isinstance(t, Sequence):
        return fn(xyz[mask], t)
    size, times = frame_blocks(xyz.shape[0], t)
    if xyz.device.type == "cpu":  # one lookup at all frames (counting the points per frame waits for nothing here)
        counts = mask.reshape(len(times), -1).sum(1).tolist()
        return fn(xyz[mask], FrameTimes(tuple(times), tuple(counts)))
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


def shading_anchors(ray: Tensor, index: Tensor, stride: int, heavy: Tensor | None = None
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Which weighted samples a render shades, and how every weighted sample's weight goes to them.

    Along one ray, colour varies slowly at the scale of the sampling step (the appearance features are trilinear
    inside a grid cell, and a step is ``step_ratio`` of a cell). So colour is evaluated at every ``stride``-th
    sample index, and at each ray's first and last weighted sample; a sample between two of those has its colour
    interpolated linearly (in sample index) between them. Compositing does this by splitting the sample's weight
    between the two: ``share`` of it to the next one, the rest to the previous one. Samples marked ``heavy`` (those
    that carry much of their pixel, where an interpolation error shows most: surfaces) are always shaded. ``stride``
    1 shades every weighted sample (exact).

    Args:
        ray, index: ``[N]`` the weighted samples' ray and sample index, sorted by ray, then index (the order of
            ``torch.nonzero``).
        stride: sample indices between shaded samples.
        heavy: ``[N]`` bool, samples shaded whatever their index.

    Returns:
        ``anchors [A]`` positions (into the N samples) of the shaded ones; ``lo [N]``, ``hi [N]`` each sample's
        previous and next shaded one (indices into ``anchors``; both its own for a shaded sample); ``share [N]`` of
        its weight going to ``hi``.
    """
    n = ray.shape[0]
    first = torch.ones(n, dtype=torch.bool, device=ray.device)
    first[1:] = ray[1:] != ray[:-1]
    last = torch.ones_like(first)
    last[:-1] = first[1:]
    shaded = first | last | (index % stride == 0)
    if heavy is not None:
        shaded |= heavy
    anchors = torch.nonzero(shaded).squeeze(1)
    lo = torch.cumsum(shaded, 0) - 1  # the last shaded sample at or before each one (a ray's first is shaded)
    hi = torch.where(shaded, lo, lo + 1)
    before, after = index[anchors[lo]], index[anchors[hi]]
    share = (index - before).to(torch.float32) / (after - before).clamp(min=1).to(torch.float32)
    return anchors, lo, hi, share


def anchor_weights(weights: Tensor, thres: float, stride: int) -> tuple[Tensor, Tensor, Tensor]:
    """The samples a render shades (:func:`shading_anchors` of the samples weighted above ``thres``) and the weight
    each carries once the weights between shaded samples are split between them.

    Args:
        weights: ``[n_rays, n_samples]`` compositing weights (the carried weights keep their gradients).

    Returns:
        ``ray [M]``, ``index [M]`` (row-major order) and ``carried [M]``.
    """
    ray, index = torch.nonzero(weights > thres, as_tuple=True)
    w = weights[ray, index]
    anchors, lo, hi, share = shading_anchors(ray, index, stride, heavy=w.detach() > HEAVY_WEIGHT)
    share = share.to(w.dtype)
    carried = torch.zeros(anchors.shape[0], device=w.device, dtype=w.dtype)
    carried = carried.index_add(0, lo, w * (1.0 - share)).index_add(0, hi, w * share)
    return ray[anchors], index[anchors], carried
