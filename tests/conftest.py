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


@pytest.fixture
def one_thread():
    """One torch thread for the test: on a shared 2-core machine two OpenMP threads can be many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- compiled loops (models.compiled_march, models.compiled_field, the TV's) ----------------------------------
@pytest.fixture(scope="session", autouse=True)
def compiled_loops():
    """Compile the CPU render and fitting loops once per session (numba keeps them on disk), so the programs tests
    start load them instead of compiling in each one, inside the tests' time limits."""
    from models import compiled_field, compiled_march, regularizers

    compiled_march.warm_up()
    compiled_field.warm_up()
    regularizers.warm_up()
# --- end compiled loops ----------------------------------------------------------------------------------------


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


# --- flow, warping and depth warping (ip2p_models.flow / warp / depth_warp) ---------------------------------
@pytest.fixture(scope="session")
def synthetic_truth(synthetic_scene_dir) -> dict:
    """Frames and ground truth of ``synthetic_scene_dir`` as torch tensors, read once per session.

    Keys: ``frames`` float [F, C, 3, H, W] in [0, 1]; ``depth`` [F, C, H, W] (source world units); ``c2w``
    [C, 4, 4], ``K`` [C, 3, 3]; ``flow_fw``/``flow_bw`` [F-1, C, H, W, 2]; ``occ_fw``/``occ_bw`` [F-1, C, H, W].
    """
    import imageio.v3 as iio
    import numpy as np

    gt = synthetic_scene_dir / "gt"
    cams = sorted((synthetic_scene_dir / "frames").iterdir())
    frames = np.stack([np.stack([iio.imread(p) for p in sorted(cam.glob("*.png"))]) for cam in cams], axis=1)
    cameras = np.load(gt / "cameras.npz")
    truth = {"frames": torch.from_numpy(frames).permute(0, 1, 4, 2, 3).float() / 255.0,
             "c2w": torch.from_numpy(cameras["c2w"]).float(), "K": torch.from_numpy(cameras["K"]).float()}
    for key in ("depth", "flow_fw", "flow_bw", "occ_fw", "occ_bw"):
        truth[key] = torch.from_numpy(np.load(gt / f"{key}.npy"))
    return truth
# --- end flow, warping and depth warping --------------------------------------------------------------------


# --- IP2P (ip2p_models) ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_ip2p_dir(tmp_path_factory) -> Path:
    """A tiny random InstructPix2Pix pipeline folder (diffusers layout), built offline once per session."""
    from ip2p_models.tiny import build_tiny_ip2p

    return build_tiny_ip2p(tmp_path_factory.mktemp("ip2p") / "tiny-ip2p", seed=0)
# --- end IP2P -------------------------------------------------------------------------------------------------
