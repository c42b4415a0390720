"""Shared fixtures. Each block belongs to one area; add new fixtures in a block of their own."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(2)


# --- synthetic scenes (dataloader) --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def synthetic_scene_dir(tmp_path_factory) -> Path:
    """The default synthetic scene (6 cameras x 12 frames x 160x120), rendered once per session."""
    from tools.make_synthetic_scene import make_synthetic_scene

    return make_synthetic_scene(tmp_path_factory.mktemp("synthetic") / "scene")


@pytest.fixture(scope="session")
def small_scene_dir(tmp_path_factory) -> Path:
    """A small synthetic scene (3 cameras x 4 frames x 48x36) without videos, for quick fits."""
    from tools.make_synthetic_scene import make_synthetic_scene

    return make_synthetic_scene(tmp_path_factory.mktemp("synthetic_small") / "scene", cams=3, frames=4,
                                width=48, height=36, videos=False)
# --- end synthetic scenes -----------------------------------------------------------------------------------
