"""Images as float CHW tensors ``[3, H, W]`` in [0, 1] for the demo programs: reading, listing, resizing, writing
(files go through :mod:`common.image_io`)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from common.image_io import read_rgb, to_uint8, write_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def read_image(path: str | Path) -> Tensor:
    """An RGB image file as float ``[3, H, W]`` in [0, 1] (alpha dropped, gray repeated)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} not found; check the path (the bundled examples/ are re-made by "
                                "tools/make_ip2p_examples.py and tools/make_flow_examples.py)")
    return torch.from_numpy(read_rgb(path)).permute(2, 0, 1).float() / 255.0


def list_images(folder: str | Path) -> list[Path]:
    """Image files of a folder, in numeric order when every name is a number (``0.png, 1.png, 10.png``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} not found")
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise FileNotFoundError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    numeric = all(p.stem.isdigit() for p in files)
    return sorted(files, key=lambda p: (int(p.stem), p.name) if numeric else (0, p.name))


def fit_size(height: int, width: int, long_side: int | None, multiple: int = 8) -> tuple[int, int]:
    """``(h, w)`` with the long side scaled to ``long_side`` (None or 0: unchanged, as ``--resize 0`` says), both
    rounded down to ``multiple``."""
    scale = 1.0 if not long_side else long_side / max(height, width)
    h = max(multiple, int(round(height * scale)) // multiple * multiple)
    w = max(multiple, int(round(width * scale)) // multiple * multiple)
    return h, w


def resize(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of ``[C, H, W]`` or ``[N, C, H, W]`` to ``size = (h, w)`` (no-op when equal)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    batch = images if images.dim() == 4 else images[None]
    out = F.interpolate(batch.float(), size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    return out if images.dim() == 4 else out[0]


def save_image(path: str | Path, image: Tensor) -> Path:
    """Write ``[3, H, W]`` or ``[H, W]`` (gray) float [0, 1] as an 8-bit image (rounded); returns the path."""
    array = to_uint8(image if image.dim() == 2 else image.permute(1, 2, 0))
    return write_rgb(path, array)


def image_row(images: list[Tensor]) -> Tensor:
    """Concatenate ``[3, H, W]`` (or gray ``[H, W]``) images of one height side by side into ``[3, H, sum W]``."""
    return torch.cat([img.expand(3, *img.shape) if img.dim() == 2 else img for img in images], dim=-1)
