"""Pixel samplers: which pixels of which frame form a training batch.

A batch holds pixels of ONE frame (the field is queried at one time). Pixels are addressed by index
``p in [0, n_cams * H * W)`` over the training cameras of that frame; nothing per pixel is stored besides a
fixed random permutation (4 bytes per pixel of one frame) and, for the motion-aware sampler, the indices of the
moving pixels. Colours are read from ``scene.images`` when a batch is drawn, so edits written there by another
process are seen at the next step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

MOTION_THRESHOLD = 10  # on 0..255 colours, mean over RGB: the release's 10/255
MOTION_WINDOW = 5  # a pixel counts as moving at frame k when it moves at any frame in k-5..k+5
MOTION_SHARE = 10  # a tenth of each batch comes from the moving pixels


@dataclass
class PixelBatch:
    """Pixels of one frame: ``cams``, ``ys``, ``xs`` long ``[N]`` (camera positions along the scene's C axis)."""

    frame: int
    cams: Tensor
    ys: Tensor
    xs: Tensor


class UniformSampler:
    """A random frame, then a contiguous run of a fixed random permutation of its pixels (wrapping around).

    Args:
        scene: the :class:`dataloader.Scene`.
        batch_size: pixels per batch.
        cams: camera positions to draw from (``scene.train_cams`` by default).
        generator: random source (CPU).
    """

    def __init__(self, scene, batch_size: int, cams: Sequence[int] | None = None,
                 generator: torch.Generator | None = None):
        self.scene = scene
        self.batch_size = int(batch_size)
        self.cams = torch.as_tensor(list(scene.train_cams if cams is None else cams), dtype=torch.long)
        self.generator = generator
        self.pixels_per_cam = scene.height * scene.width
        self.per_frame = len(self.cams) * self.pixels_per_cam
        self.permutation = torch.randperm(self.per_frame, generator=generator).to(torch.int32)

    def _random_frame(self) -> int:
        return int(torch.randint(self.scene.num_frames, (1,), generator=self.generator))

    def _run(self, length: int) -> Tensor:
        start = int(torch.randint(self.per_frame, (1,), generator=self.generator))
        return self.permutation[(start + torch.arange(length)) % self.per_frame].long()

    def decode(self, frame: int, pixels: Tensor) -> PixelBatch:
        """Pixel indices ``[N]`` of ``frame`` -> a :class:`PixelBatch`."""
        cam_pos, rest = pixels // self.pixels_per_cam, pixels % self.pixels_per_cam
        return PixelBatch(frame, self.cams[cam_pos], rest // self.scene.width, rest % self.scene.width)

    def __call__(self) -> PixelBatch:
        frame = self._random_frame()
        return self.decode(frame, self._run(self.batch_size))


def moving_pixels(images: Tensor, cams: Tensor, threshold: int = MOTION_THRESHOLD,
                  window: int = MOTION_WINDOW) -> list[Tensor]:
    """Indices of the moving pixels of each frame, over the pixels of ``cams``.

    A pixel moves at frame k when its mean absolute RGB difference to frame k-1 (wrapping: frame 0 compares with
    the last frame) exceeds ``threshold / 255``; frame k's set is the union over frames ``k-window..k+window``.
    Masks are kept bit-packed (1 bit per pixel) while the unions are formed.

    Args:
        images: uint8 ``[F, C, H, W, 3]``.
        cams: long ``[n_cams]`` camera positions.

    Returns:
        One int32 ``[n_moving_k]`` tensor per frame.
    """
    n_frames = images.shape[0]
    packed = []
    for k in tqdm(range(n_frames), desc="motion masks", leave=False, disable=n_frames < 50):
        now = images[k, cams].to(torch.int16)
        before = images[(k - 1) % n_frames, cams].to(torch.int16)
        moving = (now - before).abs().sum(-1) > 3 * threshold
        packed.append(np.packbits(moving.reshape(-1).numpy()))
    n_pixels = images[0, cams].shape[:3].numel()
    indices = []
    for k in range(n_frames):
        union = packed[k].copy()
        for j in range(max(0, k - window), min(n_frames, k + window + 1)):
            np.bitwise_or(union, packed[j], out=union)
        bits = np.unpackbits(union)[:n_pixels]
        indices.append(torch.from_numpy(np.flatnonzero(bits).astype(np.int32)))
    return indices


class MotionSampler(UniformSampler):
    """The release's motion-aware sampler: a random frame; a tenth of the batch from the pixels moving around
    that frame (computed once from ``scene.original``), the rest a contiguous run of the fixed permutation.

    The release draws the moving part without replacement; here it is drawn with replacement when there are more
    moving pixels than needed (the same distribution up to duplicates, without a permutation of millions of
    indices per step). The release also shortens a batch whose run reaches the end of the permutation; here the
    run wraps around, so every batch holds ``batch_size`` pixels.
    """

    def __init__(self, scene, batch_size: int, cams: Sequence[int] | None = None,
                 generator: torch.Generator | None = None):
        super().__init__(scene, batch_size, cams, generator)
        self.moving = moving_pixels(scene.original, self.cams)
        self.motion_num = self.batch_size // MOTION_SHARE
        share = sum(len(m) for m in self.moving) / max(1, self.per_frame * len(self.moving))
        log.info("motion-aware sampler: %.1f%% of the pixels move around an average frame", 100 * share)

    def __call__(self) -> PixelBatch:
        frame = self._random_frame()
        moving = self.moving[frame]
        n_moving = len(moving)
        if n_moving == 0 or self.motion_num == 0:
            return self.decode(frame, self._run(self.batch_size))
        if n_moving < self.motion_num:
            picked = moving[torch.randperm(self.motion_num, generator=self.generator) % n_moving]
        else:
            picked = moving[torch.randint(n_moving, (self.motion_num,), generator=self.generator)]
        pixels = torch.cat([picked.long(), self._run(self.batch_size - self.motion_num)])
        return self.decode(frame, pixels)


PIXEL_SAMPLERS: dict[str, Callable[..., UniformSampler]] = {"motion": MotionSampler, "uniform": UniformSampler}
