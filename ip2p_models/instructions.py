"""Procedural instructions: each maps an image to its edit by a known formula, so edits can be scored exactly.

These are the instructions the mini InstructPix2Pix (``weights/mini-ip2p``) is trained on, and the targets the edit
evaluation compares against when a run's prompt is one of them. Images are float ``[H, W, 3]`` RGB in [0, 1] (numpy).

- ``night``: ``y = x**1.5 * (0.30, 0.40, 0.70)`` per channel (deterministic);
- ``sketch``: OpenCV's ``pencilSketch(bgr, sigma_s=60, sigma_r=0.07, shade_factor=0.05)``, grey in all channels
  (deterministic);
- ``snowy``: ``0.6 x + 0.4 luma(x) + 0.15`` clipped, then white discs of radius 1-3 px, about one per 150 px², at
  random positions (stochastic: a fresh draw per call, like a real diffusion edit's fine detail).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

NIGHT_TINT = np.array([0.30, 0.40, 0.70])
LUMA = np.array([0.299, 0.587, 0.114])
SNOW_PIXELS_PER_FLAKE = 150.0


def night(image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """``image ** 1.5`` tinted blue: ``[H, W, 3]`` in [0, 1] -> same."""
    return np.clip(image, 0.0, 1.0) ** 1.5 * NIGHT_TINT


def pencil_sketch(image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """OpenCV's grey pencil sketch of ``image`` (computed at the image's own size), in all three channels."""
    import cv2

    bgr = np.round(np.clip(image, 0.0, 1.0)[..., ::-1] * 255).astype(np.uint8)
    grey = cv2.pencilSketch(np.ascontiguousarray(bgr), sigma_s=60, sigma_r=0.07, shade_factor=0.05)[0]
    return np.repeat(grey[..., None].astype(np.float64) / 255.0, 3, axis=-1)


def snow_colours(image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """The deterministic part of :func:`snowy`: ``0.6 x + 0.4 luma(x) + 0.15``, clipped (no flakes)."""
    x = np.clip(image, 0.0, 1.0)
    return np.clip(0.6 * x + 0.4 * (x @ LUMA)[..., None] + 0.15, 0.0, 1.0)


def snowy(image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Washed-out brighter colours with fresh white flakes (discs of radius 1-3 px, one per ~150 px²)."""
    rng = rng if rng is not None else np.random.default_rng()
    out = snow_colours(image)
    H, W = out.shape[:2]
    count = rng.poisson(H * W / SNOW_PIXELS_PER_FLAKE)
    cx, cy = rng.uniform(0, W, count), rng.uniform(0, H, count)
    radius = rng.uniform(1.0, 3.0, count)
    ys, xs = np.mgrid[0:H, 0:W]
    flakes = np.zeros((H, W), bool)
    for x0, y0, r in zip(cx, cy, radius):
        # only the flake's bounding box is tested
        y_lo, y_hi = int(max(y0 - r, 0)), int(min(y0 + r + 1, H))
        x_lo, x_hi = int(max(x0 - r, 0)), int(min(x0 + r + 1, W))
        box = (xs[y_lo:y_hi, x_lo:x_hi] + 0.5 - x0) ** 2 + (ys[y_lo:y_hi, x_lo:x_hi] + 0.5 - y0) ** 2 <= r * r
        flakes[y_lo:y_hi, x_lo:x_hi] |= box
    out[flakes] = 1.0
    return out


@dataclass(frozen=True)
class Instruction:
    """One procedural instruction: its name, the prompts that ask for it, and its target."""

    name: str
    prompts: tuple[str, ...]
    apply: Callable[[np.ndarray, np.random.Generator | None], np.ndarray]
    deterministic: bool
    source_caption: str
    target_caption: str
    reference: Callable[[np.ndarray], np.ndarray]  # what an edit is scored against (the deterministic part)

    @property
    def prompt(self) -> str:
        """The canonical prompt (the first)."""
        return self.prompts[0]


INSTRUCTIONS: dict[str, Instruction] = {
    "night": Instruction("night", ("make it night", "turn it into night", "make it nighttime", "make it dark night"),
                         night, True, "a photo of a scene", "a photo of a scene at night", night),
    "sketch": Instruction("sketch", ("turn it into a pencil sketch", "make it a pencil sketch",
                                     "make it a pencil drawing", "draw it as a pencil sketch"),
                          pencil_sketch, True, "a photo of a scene", "a pencil sketch of a scene", pencil_sketch),
    "snowy": Instruction("snowy", ("make it snowy", "make it snow", "add snow", "turn it into a snowy scene"),
                         snowy, False, "a photo of a scene", "a photo of a snowy scene", snow_colours),
}


def normalize_prompt(prompt: str) -> str:
    """Lower case, single spaces, no trailing punctuation: how prompts are compared."""
    return " ".join(prompt.lower().strip().rstrip(".!?").split())


def find_instruction(prompt: str) -> Instruction | None:
    """The procedural instruction ``prompt`` asks for (any of its paraphrases), or None."""
    wanted = normalize_prompt(prompt)
    for instruction in INSTRUCTIONS.values():
        if wanted in (normalize_prompt(p) for p in instruction.prompts):
            return instruction
    return None


def all_prompts() -> list[str]:
    """Every prompt of every instruction, canonical ones first."""
    return [p for i in INSTRUCTIONS.values() for p in i.prompts]
