"""stream_edit.py end to end on a tiny scene: both schedules in real editor processes, outputs, the NeRF fitted to
the edits, an editor that fails, resuming without redoing work, bad input."""

from __future__ import annotations

import json
import logging
import multiprocessing
import shlex
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_stream_train import CONFIG as TRAIN_CONFIG

import stream_edit
import stream_train
from dataloader import load_scene
from editing.options import build_edit_parser, parse_edit_args
from editing.schedules import key_camera
from editing.toy_editors import ColourShiftEditor
from models import build_sampler, load_checkpoint, render_image
from models.checkpoint import latest_checkpoint, read_checkpoint
from models.config import parse_args

EDIT_CONFIG = TRAIN_CONFIG.replace("n_iters = 30", "n_iters = 40").replace("upsamp_list = [15]\n", "").replace(
    "batch_size = 256", "batch_size = 1024") + """
prompt = make it purple
ip2p_device = cpu
sequence_length = 3
keyframe_rounds = 2
diffusion_steps = 2
refine_num_steps = 500
refine_diffusion_steps = 2
restview_refine_num_steps = 600
restview_refine_diffusion_steps = 2
post_edit_iters = 20
editor_threads = 1
edit_save_every = 0
"""

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fitted(small_scene_dir, tmp_path_factory) -> Path:
    """A tiny NeRF fitted to the small scene (3 cameras x 4 frames): its checkpoint."""
    root = tmp_path_factory.mktemp("fitted")
    (root / "train.txt").write_text(TRAIN_CONFIG)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    assert stream_train.main(["--config", str(root / "train.txt"), "--datadir", str(small_scene_dir),
                              "--basedir", str(root), "--expname", "nerf", "--render_test", "0",
                              "--render_path", "0", "--n_iters", "200", "--batch_size", "1024"]) == 0
    torch.set_num_threads(before)
    return root / "nerf" / "ckpt-199.th"


@pytest.fixture
def edit_argv(small_scene_dir, fitted, tmp_path):
    config = tmp_path / "edit.txt"
    config.write_text(EDIT_CONFIG)

    def argv(expname: str, *extra: str) -> list[str]:
        return ["--config", str(config), "--datadir", str(small_scene_dir), "--basedir", str(tmp_path / "log"),
                "--expname", expname, "--ckpt", str(fitted), *extra]

    return argv


def edited_store(run: Path) -> np.ndarray:
    return np.load(run / "edited_images.npy")


def original_store(scene_dir: Path) -> np.ndarray:
    return load_scene("synthetic", scene_dir, ndc=True).original.numpy()


def test_keyframe_edit_end_to_end(edit_argv, small_scene_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("EDIT_CALLS_FILE", str(tmp_path / "calls.txt"))
    argv = edit_argv("kf", "--editor", "editing_targets:counting_editor", "--post_edit_iters", "150")
    assert stream_edit.main(argv) == 0
    run = tmp_path / "log" / "kf"
    assert len(list(run.glob("ckpt-*.th"))) == 1
    for name in ("config.txt", "edit_state.json", "edited_images.npy", "cache/depth_0000.pt",
                 "previews/pass0/keyframe/round00.png", "previews/pass0/time/cam01/frames001-002.png",
                 "imgs_test_all/cam00/video.mp4", "imgs_path_all/video.mp4", "side_by_side_cam00.mp4"):
        assert (run / name).is_file(), name
    state = json.loads((run / "edit_state.json").read_text())
    units = [k for k in state["done"] if k.count("/") >= 2]
    # 2 rounds (3 cameras: each round edits all, none is left to refine) + 3 cameras x 2 windows; one call each
    assert len(units) == 8 and {"pass0/keyframe", "pass0/time"} <= set(state["done"])
    assert len((tmp_path / "calls.txt").read_text().split()) == 8
    # every frame of every camera was written by the editor, towards the colour-shift edit
    edited, original = edited_store(run), original_store(small_scene_dir)
    target = ColourShiftEditor.target(torch.from_numpy(original).permute(0, 1, 4, 2, 3).float() / 255)
    target = target.permute(0, 1, 3, 4, 2).numpy() * 255
    before = np.abs(original - target).mean(axis=(2, 3, 4))
    after = np.abs(edited - target).mean(axis=(2, 3, 4))
    assert (after < 0.6 * before).all(), after / before
    # the NeRF was fitted to the edited images: its render is nearer them than the originals
    field, _ = load_checkpoint(next(run.glob("ckpt-*.th")))
    scene = load_scene("synthetic", small_scene_dir, ndc=True)
    rgb = render_image(field, build_sampler("dense", True), scene, 1, 1)["rgb"].numpy() * 255
    assert np.abs(rgb - edited[1, 1]).mean() < 0.75 * np.abs(rgb - original[1, 1]).mean()
    # the resolved config reads back with the edit's parser
    args = parse_args(["--config", str(run / "config.txt")], parser=build_edit_parser())
    assert args.prompt == "make it purple" and args.edit_schedule == "keyframe"
    # where the wall time went: the editor's own work next to everything around it
    timing = json.loads((run / "timing.json").read_text())
    assert timing["editor processes: editing (sum of stages)"] > 0 and timing["NeRF iterations after the edit"] > 0
    assert timing["total"] >= timing["editing stages (wall)"] + timing["setup (scene, NeRF, depth renders)"]


def test_keyview_edit_with_the_tiny_ip2p_model(edit_argv, small_scene_dir, tmp_path, tiny_ip2p_dir):
    argv = edit_argv("kv", "--edit_schedule", "keyview", "--ip2p_model", str(tiny_ip2p_dir), "--n_iters", "35",
                     "--post_edit_iters", "5", "--path_views", "1")
    assert stream_edit.main(argv) == 0
    run = tmp_path / "log" / "kv"
    state = json.loads((run / "edit_state.json").read_text())
    # the key camera (the rig's centre): its 4 frames in 2 windows; then the 2 others at 4 frames, in 1 batch
    key = key_camera(load_scene("synthetic", small_scene_dir, ndc=True).c2w)
    assert sorted(k for k in state["done"] if "/time/" in k) == [f"pass0/time/cam{key:02d}/frames000-002",
                                                                   f"pass0/time/cam{key:02d}/frames003-003"]
    assert len([k for k in state["done"] if "/views/" in k]) == 4
    assert len(list((run / "cache").glob("depth_*.pt"))) == 4
    edited, original = edited_store(run), original_store(small_scene_dir)
    changed = np.abs(edited.astype(int) - original).mean(axis=(2, 3, 4))
    assert (changed > 1).all(), changed  # the random tiny model changes every image
    assert (run / "side_by_side_cam00.mp4").is_file()


def test_failing_editor_saves_and_resume_skips_done_work(edit_argv, tmp_path, monkeypatch, caplog):
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("EDIT_CALLS_FILE", str(calls))
    monkeypatch.setenv("EDIT_FAIL_AT", "2")  # the keyframe stage's second unit
    argv = edit_argv("broken", "--editor", "editing_targets:counting_editor")
    with caplog.at_level(logging.ERROR, logger="stream_edit"):
        assert stream_edit.main(argv) == 1
    assert "editor broke on purpose at call 2" in caplog.text and "--resume" in caplog.text
    run = tmp_path / "log" / "broken"
    assert list(run.glob("ckpt-*.th")), "a checkpoint is saved when the editor fails"
    state = json.loads((run / "edit_state.json").read_text())
    assert state["done"] == ["pass0/keyframe/round00"]
    # without --resume the run directory is not touched
    monkeypatch.delenv("EDIT_FAIL_AT")
    assert stream_edit.main(argv) == 2
    # resume: the 7 units left, none again
    assert stream_edit.main(argv + ["--resume"]) == 0
    assert len(calls.read_text().split()) == 8
    assert (run / "config-1.txt").is_file(), "the first part's options are kept beside the resume's"
    state = json.loads((run / "edit_state.json").read_text())
    assert len([k for k in state["done"] if k.count("/") >= 2]) == 8


def test_bad_input_is_named(edit_argv, fitted, tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="stream_edit"):
        assert stream_edit.main(edit_argv("a", "--ckpt", str(tmp_path / "missing.th"))) == 2
        assert "missing.th not found" in caplog.text
        assert stream_edit.main(edit_argv("b", "--num_frames", "2", "--editor", "editing_targets:counting_editor")) == 2
        assert "models 4 frames but the scene loads 2" in caplog.text
        assert stream_edit.main(edit_argv("c", "--resume")) == 2
        assert "holds no edit to continue" in caplog.text
        same = edit_argv("nerf", "--basedir", str(fitted.parent.parent), "--ckpt", str(fitted.parent))
        assert stream_edit.main(same) == 2  # the edit would write into the NeRF's folder
        assert "is the folder of --ckpt" in caplog.text
        foreign = tmp_path / "log" / "trained"
        foreign.mkdir(parents=True)
        shutil.copy(fitted, foreign / "ckpt-99999.th")  # another run's folder, given as the edit's
        assert stream_edit.main(edit_argv("trained")) == 2
        assert "holds checkpoints of another run (ckpt-99999.th) and no edit" in caplog.text
        assert sorted(p.name for p in foreign.iterdir()) == ["ckpt-99999.th"]
        assert stream_edit.main(edit_argv("f", "--editor", "no_such_module:factory")) == 2
        assert "--editor 'no_such_module:factory': cannot import it" in caplog.text
        assert stream_edit.main(edit_argv("e", "--prompt", " ")) == 2
        assert "the prompt is empty" in caplog.text
        bad = tmp_path / "bad.txt"
        bad.write_text(EDIT_CONFIG + "keyframe_round = 3\n")
        assert stream_edit.main(["--config", str(bad)]) == 2
        assert "unknown key 'keyframe_round'" in caplog.text
    assert [p.name for p in fitted.parent.glob("ckpt-*.th")] == [fitted.name]


def test_two_passes_two_editor_processes(edit_argv, tmp_path, monkeypatch):
    monkeypatch.setenv("EDIT_CALLS_FILE", str(tmp_path / "calls.txt"))
    argv = edit_argv("rounds", "--editor", "editing_targets:counting_editor", "--edit_rounds", "2",
                     "--ip2p_device", "cpu,cpu", "--post_edit_iters", "5", "--path_views", "1")
    assert stream_edit.main(argv) == 0
    done = json.loads((tmp_path / "log" / "rounds" / "edit_state.json").read_text())["done"]
    for p in (0, 1):
        assert len([k for k in done if k.startswith(f"pass{p}/") and k.count("/") >= 2]) == 8
    assert "pass1/renders" in done and done.index("pass0/time") < done.index("pass1/renders")
    assert len((tmp_path / "calls.txt").read_text().split()) == 16


def test_ctrl_c_stops_editors_and_saves(edit_argv, tmp_path, monkeypatch):
    from editing.run import EditRun

    original = EditRun.step

    def interrupt(self):
        if self.state.is_done("pass0/keyframe"):
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(EditRun, "step", interrupt)
    monkeypatch.setenv("EDIT_CALLS_FILE", str(tmp_path / "calls.txt"))
    start = time.monotonic()
    assert stream_edit.main(edit_argv("stop", "--editor", "editing_targets:counting_editor")) == 130
    assert time.monotonic() - start < 120
    run = tmp_path / "log" / "stop"
    assert list(run.glob("ckpt-*.th")) and (run / "edited_images.npy").is_file()
    assert "pass0/keyframe" in json.loads((run / "edit_state.json").read_text())["done"]
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("editor-")]


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parents[1].glob("configs/*/edit_*.txt")),
                         ids=lambda p: p.stem)
def test_edit_configs_parse(path):
    args = parse_edit_args(["--config", str(path)])
    assert args.prompt and args.ckpt
    if "n3dv" in str(path):  # the release's values are checked in test_release_configs.py
        assert args.ckpt == "./log/neural_3d/" + path.stem.replace("edit_", "train_")


def test_readme_edit_command_parses():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    command = readme[readme.index("python stream_edit.py --config configs/n3dv/edit_coffee_50_2.txt"):]
    command = command[:command.index("```")].replace("\\\n", " ")
    args = parse_edit_args(shlex.split(command)[2:])
    assert args.prompt == "What if it was painted by Van Gogh?" and args.guidance_scale == 9.5
    assert args.restview_refine_num_steps == 700 and args.expname == "edit_coffee_50_2"


@pytest.mark.parametrize("schedule, units, calls", [("perframe", 6, 12), ("anchor", 3, 3)])
def test_baseline_schedules_end_to_end(edit_argv, tmp_path, monkeypatch, schedule, units, calls):
    """The ablation baselines: perframe edits every image alone (3 cameras x 4 frames, in units of 3 frames);
    anchor edits each camera's frames in one anchored call."""
    monkeypatch.setenv("EDIT_CALLS_FILE", str(tmp_path / "calls.txt"))
    argv = edit_argv(schedule, "--editor", "editing_targets:counting_editor", "--edit_schedule", schedule,
                     "--post_edit_iters", "5", "--n_iters", "10", "--path_views", "1")
    assert stream_edit.main(argv) == 0
    state = json.loads((tmp_path / "log" / schedule / "edit_state.json").read_text())
    assert len([k for k in state["done"] if k.count("/") >= 2]) == units
    sizes = [int(n) for n in (tmp_path / "calls.txt").read_text().split()]
    assert len(sizes) == calls and sum(sizes) == 12  # every image edited exactly once
    assert not (tmp_path / "log" / schedule / "cache").exists()  # no depth needed


def test_depth_cache_knows_which_cameras_and_times_it_holds(small_scene_dir, fitted, tmp_path):
    from editing.depth_cache import DepthCache
    from models import build_sampler, load_checkpoint

    field, _ = load_checkpoint(fitted)
    without_0 = load_scene("synthetic", small_scene_dir, skip_cams=[0])
    without_1 = load_scene("synthetic", small_scene_dir, skip_cams=[1])
    sampler = build_sampler("dense", without_0.ndc)
    folder = tmp_path / "cache"
    DepthCache(folder, fitted, without_0, field, sampler).ensure([0])
    assert DepthCache(folder, fitted, without_0).cached(0)
    # as many cameras and the same size, but not the same cameras: the cache does not serve them
    assert not DepthCache(folder, fitted, without_1).cached(0)
    without_0.times = without_0.times.clone()
    without_0.times[0] = 0.5  # another frame under index 0
    assert not DepthCache(folder, fitted, without_0).cached(0)


def test_box_mode_depth_is_cached_as_z_depth(small_scene_dir, fitted, tmp_path, monkeypatch):
    """A box-mode render's depth is the distance along each unit ray; the warps read z-depth. A plane at z-depth 2
    in front of every camera, rendered as distances, comes back from the cache as 2 everywhere and unprojects onto
    the plane."""
    import editing.depth_cache as depth_cache
    from editing.depth_cache import DepthCache, load_depth
    from ip2p_models.depth_warp import depth_to_points

    scene = load_scene("synthetic", small_scene_dir, ndc=False)

    def plane_distances(field, sampler, scene_, frame, cam, **kwargs):
        _, rays_d = scene_.image_rays(cam, frame)
        forward = -scene_.pose(frame, cam)[:3, 2]
        cosine = (rays_d / rays_d.norm(dim=-1, keepdim=True)) @ forward
        return {"depth": (2.0 / cosine).view(scene_.height, scene_.width)}

    monkeypatch.setattr(depth_cache, "render_image", plane_distances)
    path = DepthCache(tmp_path / "cache", fitted, scene, field=object(), sampler=None).ensure([1])[0]
    depth = load_depth(path)
    assert torch.allclose(depth, torch.full_like(depth, 2.0), atol=1e-5)
    points = depth_to_points(depth[0], scene.K[0], scene.pose(1, 0))
    camera = (points - scene.pose(1, 0)[:3, 3]) @ scene.pose(1, 0)[:3, :3]  # world to camera axes
    assert torch.allclose(camera[..., 2], torch.full_like(camera[..., 2], -2.0), atol=1e-4)


def test_a_resume_that_adds_a_pass_fits_after_it_and_keeps_its_nerf(edit_argv, fitted, tmp_path, monkeypatch,
                                                                     caplog):
    from editing.options import parse_edit_args
    from editing.run import EditRun

    monkeypatch.setenv("EDIT_CALLS_FILE", str(tmp_path / "calls.txt"))
    argv = edit_argv("more", "--editor", "editing_targets:counting_editor", "--post_edit_iters", "30")
    # the folder is the edit's from the end of its setup: a crash before the first save can resume
    edit = EditRun(parse_edit_args(argv))
    edit.setup()
    assert (tmp_path / "log" / "more" / "edit_state.json").is_file()
    # the TV weights stop decaying where the learning rates stop (TV 1.0 in the config, target ratio 0.1)
    edit.trainer.tv_density = edit.trainer.tv_app = 1e-6
    edit.step()
    assert edit.trainer.tv_density == pytest.approx(0.1) and edit.trainer.tv_app == pytest.approx(0.1)
    edit.trainer.close()  # the TensorBoard writer's thread writes into the folder (rmtree failed now and then)
    shutil.rmtree(tmp_path / "log" / "more")

    assert stream_edit.main(argv) == 0
    run = tmp_path / "log" / "more"
    first_end = json.loads((run / "edit_state.json").read_text())["info"]["edit_end"]
    assert stream_edit.main(argv + ["--resume", "--edit_rounds", "2"]) == 0
    info = json.loads((run / "edit_state.json").read_text())["info"]
    assert info["edit_end"] > first_end  # the second pass ended the edit anew ...
    last = read_checkpoint(latest_checkpoint(run))["instruct4d"]["iteration"]
    assert last >= info["edit_end"] + 30 - 1  # ... and was fitted after it

    newer = tmp_path / "train" / "ckpt-999.th"  # the training folder gained a checkpoint since the edit began
    newer.parent.mkdir()
    shutil.copy(fitted, newer)
    with caplog.at_level(logging.ERROR, logger="stream_edit"):
        assert stream_edit.main(argv + ["--ckpt", str(newer.parent), "--resume"]) == 2
    assert f"this edit began from {fitted.resolve()}" in caplog.text


def test_keyview_with_two_key_cameras(edit_argv, tmp_path, monkeypatch):
    monkeypatch.setenv("EDIT_CALLS_FILE", str(tmp_path / "calls.txt"))
    argv = edit_argv("kv2", "--edit_schedule", "keyview", "--key_cams", "0", "--key_cams", "2", "--editor",
                     "editing_targets:counting_editor", "--edit_rounds", "2", "--post_edit_iters", "5")
    assert stream_edit.main(argv) == 0
    done = json.loads((tmp_path / "log" / "kv2" / "edit_state.json").read_text())["done"]
    # pass 0: the key views' frame 0 together, then their windows from frame 1; pass 1 refines each from frame 0
    assert "pass0/keyviews/frame000" in done and "pass1/keyviews/frame000" not in done
    assert "pass0/time/cam00/frames001-002" in done and "pass1/time/cam00/frames000-002" in done



def test_more_key_cameras_than_a_batch_are_refused(edit_argv, caplog):
    argv = edit_argv("kv4", "--edit_schedule", "keyview", "--key_cams", "0", "--key_cams", "1", "--key_cams", "2",
                     "--sequence_length", "2", "--overlap_length", "1", "--editor", "editing_targets:counting_editor")
    with caplog.at_level(logging.ERROR, logger="stream_edit"):
        assert stream_edit.main(argv) == 2
    assert "key_cams: 3 key cameras, but their frame 0 is edited as one batch of at most sequence_length = 2" in (
        caplog.text)
