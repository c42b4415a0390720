"""Procedural image families for training and validating the mini InstructPix2Pix, made in memory, never stored.

Each family is a function ``(rng, width, height) -> [H, W, 3] float64 in [0, 1]``:

- ``scene``: the built-in synthetic scene (``tools/make_synthetic_scene.py``'s wall, floor and moving ellipsoids)
  from a random seed, time and camera pose near its rig;
- ``shapes``: random layouts of textured discs, boxes and polygons over a textured background;
- ``landscape``: sky, sun and layered hills; never used in training, it is the held-out look of the benchmark.
"""

from __future__ import annotations

import numpy as np

TRAIN_FAMILIES = ("scene", "shapes")
HELDOUT_FAMILIES = ("landscape",)


def random_color(rng: np.random.Generator) -> np.ndarray:
    """An RGB colour in [0, 1], not too close to black or white on average."""
    return rng.uniform(0.05, 0.95, 3)


def texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random texture ``[H, W, 3]``: flat, gradient, stripes, checker or smooth noise between two colours."""
    a, b = random_color(rng), random_color(rng)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    kind = rng.integers(5)
    if kind == 0:
        mix = np.zeros((height, width))
    elif kind == 1:
        angle = rng.uniform(0, np.pi)
        proj = xs * np.cos(angle) + ys * np.sin(angle)
        mix = (proj - proj.min()) / max(np.ptp(proj), 1e-6)
    elif kind == 2:
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 24)
        mix = 0.5 + 0.5 * np.sin(2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / period)
    elif kind == 3:
        size = rng.integers(4, 20)
        mix = ((xs // size + ys // size) % 2).astype(np.float64)
    else:
        mix = smooth_noise(rng, height, width, cells=int(rng.integers(2, 8)))
    return a * (1 - mix[..., None]) + b * mix[..., None]


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Bilinearly upsampled random values on a ``cells``-wide grid, in [0, 1], ``[H, W]``."""
    import cv2

    grid = rng.uniform(0, 1, (max(2, cells * height // max(width, 1)), cells)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1).astype(np.float64)


def shapes(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A textured background with 3-12 textured discs, boxes and polygons."""
    import cv2

    image = texture(rng, height, width)
    for _ in range(rng.integers(3, 13)):
        mask = np.zeros((height, width), np.uint8)
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(max(3, min(width, height) // 12), max(4, min(width, height) // 2)))
        kind = rng.integers(3)
        if kind == 0:
            cv2.ellipse(mask, (cx, cy), (size, int(size * rng.uniform(0.4, 1.0))), float(rng.uniform(0, 180)),
                        0, 360, 1, -1)
        elif kind == 1:
            cv2.rectangle(mask, (cx - size, cy - size // 2), (cx + size, cy + size // 2), 1, -1)
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 7)))
            radii = size * rng.uniform(0.5, 1.0, len(angles))
            points = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], -1).astype(np.int32)
            cv2.fillPoly(mask, [points], 1)
        layer = texture(rng, height, width) * rng.uniform(0.7, 1.0)  # a little shading
        image = np.where(mask[..., None] > 0, layer, image)
    return np.clip(image, 0, 1)


def scene(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """The built-in synthetic scene at a random time, seed and camera pose (near its forward-facing rig)."""
    from dataloader.synthetic_render import render_view

    return render_view(rng, width, height)


def landscape(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Sky gradient, a sun and 2-4 layers of hills with noisy ridges (the held-out look)."""
    import cv2

    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    top, horizon = random_color(rng), random_color(rng)
    sky = top + (horizon - top) * (ys / height)[..., None]
    image = sky.copy()
    sun = np.zeros((height, width), np.uint8)
    cv2.circle(sun, (int(rng.integers(0, width)), int(rng.integers(0, height // 2))),
               int(rng.integers(max(2, height // 20), max(3, height // 6))), 1, -1)
    image[sun > 0] = rng.uniform(0.8, 1.0, 3)
    layers = int(rng.integers(2, 5))
    for k in range(layers):
        base = height * (0.35 + 0.5 * (k + 1) / (layers + 1))
        ridge = base + height * 0.12 * (smooth_noise(rng, 1, width, cells=int(rng.integers(3, 10)))[0] - 0.5)
        ridge += rng.uniform(0.5, 2.0) * np.sin(xs[0] / rng.uniform(2, 6))
        below = ys >= ridge[None, :]
        color = random_color(rng) * (0.5 + 0.5 * (k + 1) / layers)
        shade = 1.0 - 0.3 * (ys - ridge[None, :]).clip(0) / height
        image = np.where(below[..., None], color * shade[..., None], image)
    return np.clip(image, 0, 1)


FAMILIES = {"scene": scene, "shapes": shapes, "landscape": landscape}


def make_image(family: str, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """One image of ``family`` (see the module docstring), ``[height, width, 3]`` float64 in [0, 1]."""
    if family not in FAMILIES:
        raise ValueError(f"unknown image family {family!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[family](rng, width, height)
