"""Checkpoints: ours and the release's layout, and the errors users meet (models/checkpoint.py)."""

from __future__ import annotations

import pytest
import torch

from models import CheckpointError, build_model, load_checkpoint, render_rays, save_checkpoint
from models.fields import AlphaGridMask
from models.sampling import build_sampler

BOX = torch.tensor([[-1.5, -1.67, -1.0], [1.5, 1.67, 1.0]])


def tiny(num_frames=6, ld=0.5, model_name="StreamTensorVMSplit"):
    torch.manual_seed(1)
    return build_model(model_name, BOX, [8, 9, 6], density_n_comp=[4, 2, 2], appearance_n_comp=[4, 2, 2],
                       app_dim=27, shadingMode="MLP_Fea", near_far=[0.0, 1.0], view_pe=0, fea_pe=0, featureC=16,
                       fea2denseAct="relu", num_frames=num_frames, ld_per_frame=ld, step_ratio=0.5)


def render(field, t=0.4):
    rays_o = torch.tensor([[0.0, 0.0, -1.0]]).repeat(6, 1) + torch.linspace(-0.5, 0.5, 6)[:, None]
    rays_d = torch.tensor([[0.1, 0.0, 2.0]]).repeat(6, 1)
    with torch.no_grad():
        return render_rays(field, build_sampler("dense", ndc=True), rays_o, rays_d, t, n_samples=32)


def release_layout(field) -> dict:
    """What the original release's ``save`` writes: kwargs with num_frames/ld_per_frame 1, no extra keys."""
    kwargs = field.get_kwargs()
    kwargs.update(num_frames=1, ld_per_frame=1, aabb=field.aabb.clone())
    return {"kwargs": kwargs, "state_dict": field.state_dict()}


def test_save_load_identical_renders(tmp_path):
    field = tiny()
    field.alphaMask = AlphaGridMask(BOX, torch.ones(5, 6, 7))
    path = save_checkpoint(field, tmp_path / "ckpt-7.th", iteration=7)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-7.th"]  # no temp file left behind
    loaded, ckpt = load_checkpoint(path)
    assert ckpt["instruct4d"]["iteration"] == 7 and loaded.alphaMask is not None
    for key in ("rgb", "depth", "acc"):
        assert torch.equal(render(field)[key], render(loaded)[key])


def test_cp_model_round_trip(tmp_path):
    field = tiny(model_name="StreamTensorCP")
    loaded, _ = load_checkpoint(save_checkpoint(field, tmp_path / "ckpt-1.th"))
    assert type(loaded).__name__ == "StreamTensorCP"
    assert torch.equal(render(field)["rgb"], render(loaded)["rgb"])


def test_release_checkpoint_with_config_py(tmp_path):
    field = tiny(num_frames=6, ld=0.5)
    torch.save(release_layout(field), tmp_path / "ckpt-99999.th")
    (tmp_path / "config.py").write_text("expname = 'train_x'\nnum_frames = 6\nld_per_frame = 0.5\n"
                                        "n_lamb_sigma = [4, 2, 2]\nframe_list = []\ncfg_options = None\n")
    loaded, _ = load_checkpoint(tmp_path / "ckpt-99999.th")
    assert loaded.num_frames == 6 and loaded.ld_per_frame == 0.5
    for t in (0.0, 0.3, 1.0):
        assert torch.equal(render(field, t)["rgb"], render(loaded, t)["rgb"])


def test_release_checkpoint_needs_the_training_config(tmp_path):
    torch.save(release_layout(tiny()), tmp_path / "ckpt-5.th")
    with pytest.raises(CheckpointError, match="config.py"):
        load_checkpoint(tmp_path / "ckpt-5.th")
    loaded, _ = load_checkpoint(tmp_path / "ckpt-5.th", config={"num_frames": 6, "ld_per_frame": 0.5})
    assert loaded.num_frames == 6


def test_shape_mismatch_names_key_and_shapes(tmp_path):
    torch.save(release_layout(tiny(num_frames=6, ld=0.5)), tmp_path / "ckpt-5.th")
    (tmp_path / "config.py").write_text("num_frames = 6\nld_per_frame = 1.0\n")
    with pytest.raises(CheckpointError, match=r"'density_plane.0' has shape \[1, 7, 9, 8\].*\[1, 9, 9, 8\]"):
        load_checkpoint(tmp_path / "ckpt-5.th")


def test_missing_checkpoint(tmp_path):
    save_checkpoint(tiny(), tmp_path / "ckpt-3.th")
    with pytest.raises(CheckpointError, match="ckpt-9.th not found.*holds ckpt-3.th"):
        load_checkpoint(tmp_path / "ckpt-9.th")


def test_unknown_model_name(tmp_path):
    torch.save(release_layout(tiny()), tmp_path / "ckpt-5.th")
    with pytest.raises(CheckpointError, match="unknown model_name 'TensorVM'"):
        load_checkpoint(tmp_path / "ckpt-5.th", model_name="TensorVM", config={"num_frames": 6, "ld_per_frame": 0.5})
