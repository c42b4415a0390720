"""The image store as the editing schedules see it: float frames in, float frames out, writes under a lock."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
from torch import Tensor


class ImageStore:
    """Views of the scene's uint8 ``[F, C, H, W, 3]`` stores as float ``[n, 3, H, W]`` images in [0, 1].

    Args:
        images: the (shared) store the NeRF is fitted to; edits are written here.
        originals: the unedited frames (IP2P's condition, the flow's input); never written.
        lock: held while writing (the trainer's saves read under it); None for no locking.
    """

    def __init__(self, images: Tensor, originals: Tensor, lock=None):
        if images.shape != originals.shape or images.dtype != torch.uint8:
            raise ValueError(f"image store {tuple(images.shape)} {images.dtype} and originals "
                             f"{tuple(originals.shape)} must be uint8 of one shape")
        self.images = images
        self.originals = originals
        self.lock = lock

    @property
    def num_frames(self) -> int:
        return self.images.shape[0]

    @property
    def num_cams(self) -> int:
        return self.images.shape[1]

    @staticmethod
    def _read(store: Tensor, frames: int | Sequence[int], cams: int | Sequence[int]) -> Tensor:
        frames_, cams_ = _as_list(frames), _as_list(cams)
        if len(frames_) > 1 and len(cams_) > 1:
            raise ValueError("read one frame of several cameras or one camera over several frames")
        # one index list and one number: only the asked images are copied, not every camera of those frames
        block = store[frames_, cams_[0]] if len(cams_) == 1 else store[frames_[0], cams_]
        return block.permute(0, 3, 1, 2).float() / 255.0

    def get(self, frames: int | Sequence[int], cams: int | Sequence[int]) -> Tensor:
        """Current images ``[n, 3, H, W]`` of one frame and several cameras (or one camera, several frames)."""
        return self._read(self.images, frames, cams)

    def original(self, frames: int | Sequence[int], cams: int | Sequence[int]) -> Tensor:
        """Unedited images ``[n, 3, H, W]`` (same indexing as :meth:`get`)."""
        return self._read(self.originals, frames, cams)

    def put(self, frames: int | Sequence[int], cams: int | Sequence[int], values: Tensor) -> None:
        """Write float ``[n, 3, H, W]`` images (rounded to uint8) under the lock."""
        frames_, cams_ = _as_list(frames), _as_list(cams)
        data = (values.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
        data = data.reshape(len(frames_), len(cams_), *data.shape[1:])
        with self.lock if self.lock is not None else nullcontext():
            for i, frame in enumerate(frames_):
                for j, cam in enumerate(cams_):
                    self.images[frame, cam] = data[i, j]


def _as_list(index: int | Sequence[int]) -> list[int]:
    return [int(index)] if isinstance(index, int) else [int(i) for i in index]
