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


def spec_grouped_pick(stored: torch.Tensor, t: float, n_comp: int, num_frames: int, k: int) -> torch.Tensor:
    """The spec's grouped mode written out directly: channel_table on groups with 0.5, then channels_at on
    ``[1, G, m, a, b]`` (blend whole groups, reorder groups), flattened group-major."""
    from models.streaming import channel_table

    m = 2 * k
    rows = channel_table(n_comp // m, num_frames, 0.5)
    grouped = stored.reshape(1, stored.shape[1] // m, m, *stored.shape[2:])
    R = len(rows)
    if t == 1:
        r, left, right = R - 1, 1.0, 0.0
    else:
        v = t * R
        r = int(v)
        left, right = v - r, r + 1 - v
    idx, perm = rows[r]
    if left == 0:
        feat = grouped[:, [idx[0]] + idx[2:]]
    elif right == 0:
        feat = grouped[:, idx[1:]]
    else:
        feat = grouped[:, idx]
        feat = torch.cat([feat[:, :1] * right + feat[:, 1:2] * left, feat[:, 2:]], dim=1)
    return feat[:, perm].flatten(1, 2)


def test_release_checkpoint_with_ld_per_frame_2_loads_renders_and_resumes(tmp_path, small_scene_dir):
    from dataloader import load_scene
    from models import FitSettings, Trainer
    from models.config import parse_args
    from models.fitting import field_from_args

    scene = load_scene("synthetic", small_scene_dir)  # 4 frames
    argv = ["--n_lamb_sigma", "4", "--n_lamb_sigma", "4", "--n_lamb_sigma", "4", "--n_lamb_sh", "8", "--n_lamb_sh",
            "4", "--n_lamb_sh", "4", "--ld_per_frame", "2", "--N_voxel_init", "4096", "--shadingMode", "MLP_Fea",
            "--fea2denseAct", "relu", "--view_pe", "0", "--fea_pe", "0", "--featureC", "16", "--n_iters", "6",
            "--batch_size", "256", "--ckpt_every", "100", "--vis_every", "0", "--device", "cpu"]
    args = parse_args(argv)
    field = field_from_args(args, scene)
    # the spec's layout: n_i + ceil((F - 1) / 2) * m stored channels per factor, m = 2 * ld_per_frame = 4
    shapes = {k: tuple(v.shape) for k, v in field.state_dict().items()}
    assert shapes["density_plane.0"][1] == 4 + 2 * 4 and shapes["app_plane.0"][1] == 8 + 2 * 4
    assert shapes["basis_mat.weight"] == (27, 16)
    with torch.no_grad():
        for p in field.parameters():
            p.uniform_(-0.5, 0.5)
    torch.save(release_layout(field), tmp_path / "ckpt-99999.th")
    (tmp_path / "config.py").write_text("num_frames = 4\nld_per_frame = 2\nn_lamb_sigma = [4, 4, 4]\n")
    loaded, _ = load_checkpoint(tmp_path / "ckpt-99999.th")
    assert loaded.ld_per_frame == 2
    for t in (0.0, 0.2, 0.5, 0.9, 1.0):
        stored = loaded.density_plane[0].detach()
        assert torch.equal(loaded.density_streams[0].select(stored, t), spec_grouped_pick(stored, t, 4, 4, 2))
        assert torch.equal(render(field, t)["rgb"], render(loaded, t)["rgb"])
    # resume: a few iterations from the release checkpoint, saved in our format, reloaded identically
    trainer = Trainer(loaded, scene, FitSettings.from_args(args), run_dir=tmp_path / "resumed", start_iteration=3,
                      tensorboard=False)
    trainer.train(progress=False)
    saved = trainer.save()
    again, ckpt = load_checkpoint(saved)
    assert ckpt["instruct4d"]["iteration"] == 5 and again.ld_per_frame == 2
    assert torch.equal(render(trainer.field, 0.4)["rgb"], render(again, 0.4)["rgb"])
