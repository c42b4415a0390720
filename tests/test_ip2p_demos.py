"""The demo programs test_ip2p.py and test_ip2p_sequence.py, end to end on the tiny model and the bundled examples."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--resize", "64", "--steps", "2", "--device", "cpu", "--seed", "0"]


def load_demo(name: str):
    """The demo program ``<name>.py`` at the repository root, loaded from its file (tests/ may shadow its name)."""
    spec = importlib.util.spec_from_file_location(f"demo_{name}", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo_ip2p():
    return load_demo("test_ip2p")


@pytest.fixture(scope="module")
def demo_sequence():
    return load_demo("test_ip2p_sequence")


def test_bundled_examples_are_small_and_present():
    folder = ROOT / "examples" / "ip2p"
    frames = sorted((folder / "sequence").iterdir())
    assert len(frames) >= 6 and (folder / "image.jpg").is_file()
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 300_000


def test_single_image_demo(demo_ip2p, tiny_ip2p_dir, tmp_path, capsys):
    out = demo_ip2p.main(["--ip2p_model", str(tiny_ip2p_dir), "--output_dir", str(tmp_path), *FAST])
    printed = capsys.readouterr().out
    assert str(out / "grid.png") in printed
    image, edited, grid = (iio.imread(out / name) for name in ("input.png", "output.png", "grid.png"))
    # the 256x192 example resized to a long side of 64, both sides multiples of 64
    assert image.shape == edited.shape == (64, 64, 3)
    assert grid.shape == (64, 128, 3)


def test_sequence_demo(demo_sequence, tiny_ip2p_dir, tmp_path, capsys):
    out = demo_sequence.main(["--ip2p_model", str(tiny_ip2p_dir), "--output_dir", str(tmp_path), "--num_frames", "4",
                              "--sequence_length", "3", "--per_frame", *FAST])
    assert str(out / "grid.png") in capsys.readouterr().out
    for sub in ("input", "output", "per_frame"):
        assert sorted(p.name for p in (out / sub).iterdir()) == ["0.png", "1.png", "2.png", "3.png"]
    assert iio.imread(out / "grid.png").shape == (3 * 64, 4 * 64, 3)


def test_missing_image_is_a_clear_error(demo_ip2p, tiny_ip2p_dir, tmp_path):
    with pytest.raises(SystemExit, match="not found"):
        demo_ip2p.main(["--ip2p_model", str(tiny_ip2p_dir), "--image_path", str(tmp_path / "none.png"), *FAST])


def test_default_model_without_network_fails_with_instructions(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "test_ip2p.py", "--output_dir", str(tmp_path / "out"), *FAST], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "timbrooks/instruct-pix2pix" in result.stderr and "hf download" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_resize_zero_keeps_the_size():
    from ip2p_models.image_io import fit_size

    assert fit_size(480, 640, 0) == fit_size(480, 640, None) == (480, 640)
    assert fit_size(480, 640, 0, multiple=1) == (480, 640)
    assert fit_size(480, 640, 320) == (240, 320)
