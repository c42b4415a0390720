"""End-to-end runs of test_flow.py, test_depth.py, test_flow_sequence.py on examples/ (DIS, tiny IP2P)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from ip2p_models.image_io import read_image

ROOT = Path(__file__).resolve().parents[1]
FLOW_FRAMES = ROOT / "examples" / "flow" / "frames"
DEPTH = ROOT / "examples" / "depth"


@pytest.fixture(scope="module")
def tiny_ip2p(tiny_ip2p_dir) -> str:
    """The session's tiny random IP2P folder, as a command-line argument."""
    return str(tiny_ip2p_dir)


def load_demo(name: str):
    """The demo program ``<name>.py`` at the repository root as a module (``tests/test_flow.py`` shadows its name)."""
    spec = importlib.util.spec_from_file_location(f"demo_{name}", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_examples_tool_writes_consistent_small_files(tmp_path):
    from tools.make_flow_examples import main

    main([str(tmp_path)])
    frames = sorted((tmp_path / "flow" / "frames").glob("*.png"))
    assert len(frames) == 5 and read_image(frames[0]).shape == (3, 96, 128)
    points = torch.load(tmp_path / "depth" / "pts_0.pt", weights_only=True).float()
    maps = torch.load(tmp_path / "depth" / "warp_0.pt", weights_only=True).float()
    depth = np.load(tmp_path / "depth" / "depth_0.npy")
    assert points.shape == (2, 48, 64, 3) and maps.shape == (2, 2, 48, 64, 2) and depth.shape == (2, 48, 64)
    grid = torch.stack(torch.meshgrid(torch.arange(64.0), torch.arange(48.0), indexing="xy"), dim=-1)
    assert torch.allclose(maps[1, 1], grid, atol=0.05)  # a view maps onto itself
    total = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    assert total < 250_000
    # run again with fewer frames: no frame of the longer run is left to mix into the sequence
    from tools.make_flow_examples import write_flow_examples

    write_flow_examples(tmp_path, frames=3)
    assert sorted(p.name for p in (tmp_path / "flow" / "frames").glob("*.png")) == ["0.png", "1.png", "2.png"]


def test_flow_demo(tmp_path):
    load_demo("test_flow").main(["--source_img", str(FLOW_FRAMES / "0.png"),
                                 "--target_img", str(FLOW_FRAMES / "2.png"), "--flow", "dis",
                                 "--output_dir", str(tmp_path)])
    for name in ("flow_fw.png", "flow_bw.png", "warped.png", "mask.png", "error.png", "summary.png"):
        assert (tmp_path / name).is_file(), name
    flow_fw, flow_bw = np.load(tmp_path / "flow_fw.npy"), np.load(tmp_path / "flow_bw.npy")
    assert flow_fw.shape == flow_bw.shape == (96, 128, 2) and flow_fw.dtype == np.float32
    assert read_image(tmp_path / "mask.png")[0].mean() > 0.6


@pytest.mark.parametrize("mode", ["points", "depth"])
def test_depth_demo_without_edit(tmp_path, mode, caplog):
    args = ["--source_img", str(DEPTH / "0.png"), "--target_img", str(DEPTH / "1.png"), "--no_edit",
            "--output_dir", str(tmp_path)]
    if mode == "points":
        args += ["--pts_path", str(DEPTH / "pts_0.pt"), "--warp_path", str(DEPTH / "warp_0.pt")]
    else:
        args += ["--depth_path", str(DEPTH / "depth_0.npy")]
    with caplog.at_level("INFO"):
        load_demo("test_depth").main(args)
    mask = read_image(tmp_path / "mask.png")[0] > 0.5
    assert mask.float().mean() > 0.75  # measured 83%
    warped, target = read_image(tmp_path / "warped.png"), read_image(DEPTH / "1.png")
    mse = ((warped - target) ** 2).mean(0)[mask].mean()
    assert -10 * torch.log10(mse) > 33.0  # measured 35.7 dB at 64x48
    assert "PSNR" in caplog.text


def test_depth_demo_names_a_view_out_of_range(tmp_path):
    args = ["--source_img", str(DEPTH / "0.png"), "--target_img", str(DEPTH / "1.png"), "--no_edit",
            "--output_dir", str(tmp_path), "--depth_path", str(DEPTH / "depth_0.npy"), "--target_view", "7"]
    with pytest.raises(ValueError, match="views 0, 7: .*depth_0.npy holds views 0..1"):
        load_demo("test_depth").main(args)


def test_depth_demo_with_tiny_ip2p(tmp_path, tiny_ip2p):
    load_demo("test_depth").main([
        "--source_img", str(DEPTH / "0.png"), "--target_img", str(DEPTH / "1.png"),
        "--pts_path", str(DEPTH / "pts_0.pt"), "--warp_path", str(DEPTH / "warp_0.pt"),
        "--ip2p_model", tiny_ip2p, "--device", "cpu", "--steps", "2", "--output_dir", str(tmp_path)])
    for name in ("edited_source.png", "warped.png", "mask.png", "filled.png", "summary.png"):
        assert (tmp_path / name).is_file(), name
    assert read_image(tmp_path / "edited_source.png").shape == (3, 48, 64)


def test_flow_sequence_demo_with_tiny_ip2p(tmp_path, tiny_ip2p):
    load_demo("test_flow_sequence").main([
        "--image_dir", str(FLOW_FRAMES), "--prompt", "make it blue", "--sequence_length", "3", "--resize", "128",
        "--diffusion_steps", "2", "--painting_diffusion_steps", "2", "--painting_num_train_timesteps", "600",
        "--ip2p_model", tiny_ip2p, "--device", "cpu", "--flow", "dis", "--output_dir", str(tmp_path)])
    edited = sorted((tmp_path / "edited").glob("*.png"))
    assert len(edited) == 5 and read_image(edited[0]).shape == (3, 96, 128)
    assert (tmp_path / "window_1_filled.png").is_file() and (tmp_path / "window_1_mask.png").is_file()
    assert (tmp_path / "sequence.png").is_file()
