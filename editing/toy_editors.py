"""A deterministic stand-in for IP2P with known behaviour, for tests and benchmarks of the schedules.

``stream_edit.py --editor editing.toy_editors:colour_shift`` uses it. Like a real diffusion editor, it makes an
edit of the *original* frame (here a fixed colour transform) that every call perturbs differently (a random
colour offset per image and per-pixel noise, drawn from the call's seed), and a refinement from noise level T keeps
``1 - T/1000`` of the current image. So independent edits of two views or two frames disagree by the
perturbation, and the schedules' warping and averaging can be measured against a known target.
"""

from __future__ import annotations

import torch
from torch import Tensor


class ColourShiftEditor:
    """``edit = clamp(M @ original + offset + noise)``; ``refine = (1 - T/1000) * current + T/1000 * edit``.

    Args:
        offset_std: standard deviation of the per-image colour offset.
        noise_std: standard deviation of the per-pixel noise.
    """

    MATRIX = torch.tensor([[0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.7, 0.1, 0.2]])  # a hue rotation, roughly

    def __init__(self, offset_std: float = 0.08, noise_std: float = 0.04):
        self.offset_std = offset_std
        self.noise_std = noise_std
        self.calls = 0
        self.images_edited = 0

    @classmethod
    def target(cls, originals: Tensor) -> Tensor:
        """The unperturbed edit of ``[..., 3, H, W]`` originals."""
        return torch.einsum("ij,...jhw->...ihw", cls.MATRIX, originals.float()).clamp(0, 1)

    def edit_sequence(self, images: Tensor, images_cond: Tensor, prompt: str, *, T: int = 1000, init: str = "noise",
                      seed: int | None = None, **_) -> Tensor:
        if images.shape != images_cond.shape or images.dim() != 4:
            raise ValueError(f"images {tuple(images.shape)} and images_cond {tuple(images_cond.shape)} must be "
                             "[F, 3, H, W] of one shape")
        generator = torch.Generator().manual_seed(seed if seed is not None else self.calls)
        self.calls += 1
        self.images_edited += images.shape[0]
        n, _, h, w = images.shape
        offset = torch.randn(n, 3, 1, 1, generator=generator) * self.offset_std
        noise = torch.randn(n, 3, h, w, generator=generator) * self.noise_std
        edit = (self.target(images_cond.cpu()) + offset + noise).clamp(0, 1)
        strength = 1.0 if init == "noise" else min(T, 1000) / 1000.0
        return ((1 - strength) * images.cpu().float() + strength * edit).clamp(0, 1).to(images.device)


def colour_shift() -> ColourShiftEditor:
    """Factory for ``--editor editing.toy_editors:colour_shift``."""
    return ColourShiftEditor()
