"""Preview grids of the editing stages: one row per stage of a unit (input / warped / refined ...), one column per
view or frame, the row's name written at its left."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from common.image_io import to_uint8, write_rgb

MAX_TILE_WIDTH = 320
LABEL_WIDTH = 90


def _tile(image: Tensor, width: int) -> np.ndarray:
    array = to_uint8(image.permute(1, 2, 0))
    if array.shape[1] != width:
        height = max(1, round(array.shape[0] * width / array.shape[1]))
        array = cv2.resize(array, (width, height), interpolation=cv2.INTER_AREA)
    return array


def preview_grid(rows: list[tuple[str, Tensor]]) -> np.ndarray:
    """A uint8 ``[H, W, 3]`` grid of ``rows`` (name, ``[n, 3, h, w]`` images); short rows are padded black."""
    columns = max(images.shape[0] for _, images in rows)
    width = min(MAX_TILE_WIDTH, rows[0][1].shape[-1])
    lines = []
    for name, images in rows:
        tiles = [_tile(img, width) for img in images]
        blank = np.zeros_like(tiles[0])
        tiles += [blank] * (columns - len(tiles))
        strip = np.concatenate(tiles, axis=1)
        label = np.full((strip.shape[0], LABEL_WIDTH, 3), 255, np.uint8)
        cv2.putText(label, name, (4, min(20, strip.shape[0] - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
        lines.append(np.concatenate([label, strip], axis=1))
    return np.concatenate(lines, axis=0)


def write_preview(folder: str | Path, key: str, rows: list[tuple[str, Tensor]]) -> Path:
    """Write the grid of a unit to ``{folder}/{key}.png`` (the key's slashes become folders)."""
    path = Path(folder) / f"{key}.png"
    with torch.no_grad():
        write_rgb(path, preview_grid(rows))
    return path
