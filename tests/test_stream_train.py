"""stream_train.py end to end on a tiny scene: run directory, --render_only, resume, Ctrl-C, config errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import stream_train
from models import Trainer
from models.checkpoint import read_checkpoint
from models.config import ConfigError, parse_args, read_config_file

CONFIG = """
dataset_name = synthetic
expname = tiny
ndc_ray = 1
ld_per_frame = 0.5
n_iters = 30
batch_size = 256
N_voxel_init = 4096 # 16**3
N_voxel_final = 8000
upsamp_list = [15]
update_AlphaMask_list = [-1]
step_ratio = 2.0
N_vis = 1
vis_every = 20
ckpt_every = 10
render_test = 1
render_path = 1
path_views = 2
n_lamb_sigma = [4,2,2]
n_lamb_sh = [8,4,4]
featureC = 16
shadingMode = MLP_Fea
fea2denseAct = relu
view_pe = 0
fea_pe = 0
TV_weight_density = 1.0
TV_weight_app = 1.0
device = cpu
"""

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(small_scene_dir, tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("stream_train")
    config = root / "tiny.txt"
    config.write_text(CONFIG)
    argv = ["--config", str(config), "--datadir", str(small_scene_dir), "--basedir", str(root / "log")]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    assert stream_train.main(argv) == 0
    torch.set_num_threads(before)
    return root / "log" / "tiny", argv


def test_run_directory_contents(trained):
    run, _ = trained
    names = {p.name for p in run.iterdir()}
    assert {"config.txt", "ckpt-29.th", "imgs_vis", "imgs_test_all", "imgs_path_all"} <= names
    assert [p.name for p in run.glob("ckpt-*.th")] == ["ckpt-29.th"]  # older checkpoints replaced
    assert any(name.startswith("events.out.tfevents") for name in names)
    assert list((run / "imgs_vis").glob("000019_cam00_*.png"))
    cam = run / "imgs_test_all" / "cam00"
    for name in ("video.mp4", "depthvideo.mp4", "depth.npy", "rgb/000.png", "rgb/003.png", "depth/000.png"):
        assert (cam / name).is_file(), name
    assert (run / "imgs_test_all" / "mean.txt").read_text().startswith("cam00")
    assert (run / "imgs_path_all" / "video.mp4").is_file() and (run / "imgs_path_all" / "rgb" / "001.png").is_file()
    ckpt = read_checkpoint(run / "ckpt-29.th")
    assert ckpt["instruct4d"]["iteration"] == 29 and "optimizer" in ckpt
    assert ckpt["kwargs"]["num_frames"] == 4 and ckpt["kwargs"]["ld_per_frame"] == 0.5


def test_resolved_config_reads_back(trained):
    run, _ = trained
    args = parse_args(["--config", str(run / "config.txt")])
    assert args.n_lamb_sh == [8, 4, 4] and args.upsamp_list == [15] and args.ld_per_frame == 0.5
    assert args.n_iters == 30 and args.dataset_name == "synthetic" and args.device == "cpu"
    assert read_config_file(run / "config.txt")["n_lamb_sigma"] == [4, 2, 2]


def test_render_only(trained):
    run, argv = trained
    mean = run / "imgs_test_all" / "mean.txt"
    mean.unlink()
    assert stream_train.main(argv + ["--ckpt", str(run / "ckpt-29.th"), "--render_only", "1",
                                     "--render_path", "0"]) == 0
    assert mean.is_file()
    assert [p.name for p in run.glob("ckpt-*.th")] == ["ckpt-29.th"]


def test_resuming_a_finished_checkpoint_leaves_it_as_it_was(trained):
    run, argv = trained
    before = (run / "ckpt-29.th").read_bytes()
    # n_iters 30: the checkpoint is at its last iteration, so nothing is fitted and nothing may be rewritten
    assert stream_train.main(argv + ["--ckpt", str(run / "ckpt-29.th"), "--render_test", "0",
                                     "--render_path", "0"]) == 0
    assert (run / "ckpt-29.th").read_bytes() == before
    assert [p.name for p in run.glob("ckpt-*.th")] == ["ckpt-29.th"]


def test_a_checkpoint_of_another_branch_under_the_same_name_is_kept_aside(trained, tmp_path):
    run, argv = trained
    # a resume continues in the checkpoint's folder: here one that also holds a later checkpoint of another branch
    branch = tmp_path / "branch"
    branch.mkdir()
    shutil.copy(run / "ckpt-29.th", branch / "ckpt-29.th")
    (branch / "ckpt-31.th").write_bytes(b"another branch's checkpoint")
    assert stream_train.main(argv + ["--ckpt", str(branch / "ckpt-29.th"), "--n_iters", "32", "--render_test", "0",
                                     "--render_path", "0"]) == 0
    assert (branch / "ckpt-31.th.kept").read_bytes() == b"another branch's checkpoint"
    assert read_checkpoint(branch / "ckpt-31.th")["instruct4d"]["iteration"] == 31
    assert (branch / "ckpt-29.th").is_file()


def test_resume_continues_from_saved_iteration(trained, monkeypatch, tmp_path):
    run, argv = trained
    starts = []
    original = Trainer.__init__

    def spy(self, *args, **kwargs):
        starts.append(kwargs.get("start_iteration"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "__init__", spy)
    run = shutil.copytree(run, tmp_path / "tiny")  # resumed in a copy: the module's run stays as fitted
    saved_grid = read_checkpoint(run / "ckpt-29.th")["kwargs"]["gridSize"]
    assert stream_train.main(argv + ["--ckpt", str(run / "ckpt-29.th"), "--n_iters", "35", "--render_test", "0",
                                     "--render_path", "0"]) == 0
    assert starts == [30]
    # the checkpoint resumed from is kept (a run removes only the checkpoints it wrote itself)
    assert sorted(p.name for p in run.glob("ckpt-*.th")) == ["ckpt-29.th", "ckpt-34.th"]
    resumed = read_checkpoint(run / "ckpt-34.th")
    assert resumed["instruct4d"]["iteration"] == 34 and resumed["kwargs"]["gridSize"] == saved_grid


def test_ctrl_c_saves_a_checkpoint(small_scene_dir, tmp_path, monkeypatch):
    config = tmp_path / "tiny.txt"
    config.write_text(CONFIG)
    original = Trainer.step

    def interrupt_after_three(self):
        if self.iteration == 3:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "step", interrupt_after_three)
    code = stream_train.main(["--config", str(config), "--datadir", str(small_scene_dir), "--basedir",
                              str(tmp_path / "log"), "--ckpt_every", "100"])
    assert code == 130
    assert [p.name for p in (tmp_path / "log" / "tiny").glob("ckpt-*.th")] == ["ckpt-2.th"]


def test_unknown_config_key_is_named(tmp_path):
    config = tmp_path / "bad.txt"
    config.write_text(CONFIG + "n_lamb_sigmaa = [1]\n")
    with pytest.raises(ConfigError, match=r"bad.txt: unknown key 'n_lamb_sigmaa' \(did you mean 'n_lamb_sigma'"):
        parse_args(["--config", str(config)])


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parents[1].glob("configs/n3dv/train_*.txt")),
                         ids=lambda p: p.stem)
def test_release_configs_parse(path):
    args = parse_args(["--config", str(path)])
    assert args.n_lamb_sigma == [16, 4, 4] and args.n_lamb_sh == [48, 12, 12] and args.shadingMode == "MLP_Fea"
    assert args.ndc_ray == 1 and args.batch_size == 4096 and args.N_voxel_init == 2097156
    assert args.fea2denseAct == "relu" and args.view_pe == 0 and args.fea_pe == 0
    assert args.TV_weight_density == 1.0 and args.TV_weight_app == 1.0
    assert args.skip_cams == ([12] if "coffee" in path.stem else [])
    # the values that differ between files are checked against the release's table in test_release_configs.py
