"""Faults and bad input: nothing a user made is lost or changed, errors are clear (exit 2) and come before the work.

Each case checks the exit code, the message, and a before/after checksum of the folders the user made. Slower cases
(kill -9 of a whole edit, then --resume) are in ``benchmarks/bench_faults.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from test_stream_train import CONFIG

import stream_edit
import stream_train
from dataloader import SceneError, load_scene
from models.checkpoint import CheckpointError, latest_checkpoint, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def tree_digest(folder: Path) -> dict[str, str]:
    """``{relative path: sha1}`` of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fitted(small_scene_dir, tmp_path_factory) -> tuple[Path, list[str]]:
    """A 10-iteration fit of the small scene: its run directory and the argv that made it."""
    root = tmp_path_factory.mktemp("faults")
    config = root / "tiny.txt"
    config.write_text(CONFIG.replace("n_iters = 30", "n_iters = 10").replace("upsamp_list = [15]", "upsamp_list = [5]"))
    argv = ["--config", str(config), "--datadir", str(small_scene_dir), "--basedir", str(root / "log"),
            "--render_test", "0", "--render_path", "0"]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    assert stream_train.main(argv) == 0
    torch.set_num_threads(before)  # the modules after this one run with the session's threads
    return root / "log" / "tiny", argv


# --- data loss -----------------------------------------------------------------------------------------------
def test_training_into_a_fitted_run_stops_and_changes_nothing(fitted, caplog):
    run, argv = fitted
    before = tree_digest(run)
    with caplog.at_level(logging.ERROR):
        assert stream_train.main(argv + ["--n_iters", "12"]) == 2
    assert "already holds a fitted NeRF (ckpt-9.th)" in caplog.text and "--ckpt" in caplog.text
    assert tree_digest(run) == before


def test_resuming_with_another_config_names_the_parameter_and_keeps_the_checkpoint(fitted, tmp_path, caplog):
    run, argv = fitted
    before = tree_digest(run)
    other = tmp_path / "other.txt"
    other.write_text(Path(argv[1]).read_text().replace("n_lamb_sigma = [4,2,2]", "n_lamb_sigma = [2,2,2]"))
    with caplog.at_level(logging.ERROR):
        code = stream_train.main(["--config", str(other)] + argv[2:] + ["--ckpt", str(run / "ckpt-9.th")])
    assert code == 2
    assert "'density_plane.0' has shape [1, 6," in caplog.text and "but [1, 4," in caplog.text
    assert "n_lamb_sigma" in caplog.text
    assert tree_digest(run) == before


def test_resume_keeps_the_given_checkpoint_and_the_previous_config(fitted, tmp_path):
    run, argv = fitted
    copy = tmp_path / "tiny"
    shutil.copytree(run, copy)
    (copy / ".ckpt-9.th.abc123.tmp").write_bytes(b"half a checkpoint")  # a kill during a write left this
    assert stream_train.main(argv + ["--ckpt", str(copy / "ckpt-9.th"), "--n_iters", "14"]) == 0
    assert sorted(p.name for p in copy.glob("ckpt-*.th")) == ["ckpt-13.th", "ckpt-9.th"]
    assert (copy / "ckpt-9.th").read_bytes() == (run / "ckpt-9.th").read_bytes()
    assert (copy / "config-1.txt").read_text() == (run / "config.txt").read_text()
    assert not list(copy.glob(".*.tmp"))


def test_a_text_file_as_checkpoint_says_what_it_is(tmp_path):
    bogus = tmp_path / "ckpt-3.th"
    bogus.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        read_checkpoint(bogus)
    truncated = tmp_path / "ckpt-4.th"
    torch.save({"kwargs": {}, "state_dict": {"x": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(truncated)


# --- silent desync ---------------------------------------------------------------------------------------------
def test_a_missing_frame_in_the_middle_is_an_error(small_scene_dir, tmp_path):
    scene = tmp_path / "scene"
    shutil.copytree(small_scene_dir, scene)
    (scene / "frames" / "cam01" / "000002.png").unlink()
    with pytest.raises(SceneError, match=r"cam01 misses frame\(s\) 000002 of 000001..000004"):
        load_scene("synthetic", scene)


def test_cameras_starting_at_different_frames_are_an_error(small_scene_dir, tmp_path):
    scene = tmp_path / "scene"
    shutil.copytree(small_scene_dir, scene)
    (scene / "frames" / "cam02" / "000001.png").unlink()
    with pytest.raises(SceneError, match="start at different frame numbers"):
        load_scene("n3dv", scene)


def test_a_shorter_camera_drops_the_same_frames_everywhere(small_scene_dir, tmp_path):
    scene = tmp_path / "scene"
    shutil.copytree(small_scene_dir, scene)
    (scene / "frames" / "cam01" / "000004.png").unlink()
    full = load_scene("n3dv", small_scene_dir)
    short = load_scene("n3dv", scene)
    assert short.num_frames == 3
    assert torch.equal(short.images, full.images[:3])


# --- orphaned editors --------------------------------------------------------------------------------------------
PARENT_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    import torch
    from editing.processes import EditorPool

    def edit_forever(ctx):
        ctx.report(ready=True)
        while True:
            time.sleep(0.1)

    if __name__ == "__main__":
        pool = EditorPool(edit_forever, torch.zeros(2, 2), [(), ()]).start()
        ready = 0
        while ready < 2:  # both editors are running (imports done) before the trainer dies
            pool.poll()
            ready += len(pool.take_notes())
            time.sleep(0.1)
        print(" ".join(str(p.pid) for p in pool.procs), flush=True)
        time.sleep(600)
""")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead: it only waits for its new parent to reap it
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@pytest.mark.skipif(sys.platform == "win32", reason="kill -9 of a process group member")
def test_editors_exit_when_the_trainer_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT_SCRIPT.format(root=str(ROOT)))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(p) for p in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(p) for p in pids), "editor processes outlived their trainer by 10 s"
    finally:
        parent.kill()


# --- bad input, caught before the work starts ----------------------------------------------------------------------
@pytest.mark.parametrize("extra, message", [
    (["--n_iters", "-5"], "n_iters = -5: must be at least 1"),
    (["--batch_size", "0"], "batch_size = 0: must be at least 1"),
    (["--distortion_weight", "-0.001"], "distortion_weight = -0.001: must be at least 0"),
    (["--TV_weight_app", "-1"], "TV_weight_app = -1.0: must be at least 0"),
    (["--lr_init", "-0.02"], "lr_init = -0.02: must be at least 0"),
    (["--occupancy_cells", "0"], "occupancy_cells = 0: must be at least 1"),
    (["--occupancy_alpha", "1"], "occupancy_alpha = 1.0: must be below 1"),
    (["--n_lamb_sigma", "4", "--n_lamb_sigma", "2"], "n_lamb_sigma = [4, 2]: the VM model has three"),
    (["--device", "cuda:3"], "device = cuda:3"),
    (["--device", "gpu"], "device = 'gpu': not a device"),
])
def test_stream_train_bad_numbers_and_devices(fitted, tmp_path, caplog, extra, message):
    _, argv = fitted
    with caplog.at_level(logging.ERROR):
        assert stream_train.main(argv + ["--basedir", str(tmp_path / "log")] + extra) == 2
    assert message in caplog.text
    assert not (tmp_path / "log").exists()


def edit_argv(fitted, tmp_path, *extra) -> list[str]:
    run, argv = fitted
    return argv + ["--ckpt", str(run), "--basedir", str(tmp_path / "edit"), "--expname", "edit",
                   "--prompt", "make it snowy", *extra]


@pytest.mark.parametrize("extra, message", [
    (["--ip2p_device", "cuda:3"], "ip2p_device = cuda:3"),
    (["--n_iters", "-5"], "n_iters = -5: must be at least 1"),
])
def test_stream_edit_bad_devices_and_numbers(fitted, tmp_path, caplog, extra, message):
    with caplog.at_level(logging.ERROR):
        assert stream_edit.main(edit_argv(fitted, tmp_path, *extra)) == 2
    assert message in caplog.text
    assert not (tmp_path / "edit").exists()


def test_stream_edit_names_the_missing_ip2p_component_at_once(fitted, tmp_path, tiny_ip2p_dir, caplog):
    weights = tmp_path / "ip2p"
    shutil.copytree(tiny_ip2p_dir, weights)
    shutil.rmtree(weights / "unet")
    (weights / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    start = time.monotonic()
    with caplog.at_level(logging.ERROR):
        assert stream_edit.main(edit_argv(fitted, tmp_path, "--ip2p_model", str(weights))) == 2
    assert time.monotonic() - start < 30
    assert "misses unet/, vae/diffusion_pytorch_model.safetensors" in caplog.text
    assert not (tmp_path / "edit").exists()


# --- checkpoint writes killed half way ---------------------------------------------------------------------------
WRITER_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import torch
    from common.atomic import atomic_write

    payload = torch.arange(2_000_000, dtype=torch.float32)
    for i in range(10_000):
        atomic_write({target!r}.format(i % 3), lambda f: torch.save({{"i": i, "x": payload}}, f))
        print(i, flush=True)
""")


def test_kills_during_checkpoint_writes_leave_readable_checkpoints(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER_SCRIPT.format(root=str(ROOT), target=str(tmp_path / "ckpt-{}.th")))
    for delay in (0.05, 0.13, 0.21):
        writer = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        writer.stdout.readline()  # one checkpoint is written: kill it somewhere in the following writes
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
    for path in tmp_path.glob("ckpt-*.th"):
        assert torch.load(path)["x"].shape == (2_000_000,)
    from common.atomic import remove_stale_temporaries

    remove_stale_temporaries(tmp_path, "ckpt-*.th")
    assert not list(tmp_path.glob(".*.tmp"))
    assert latest_checkpoint(tmp_path) is not None


# --- kill -9 of the whole edit, then --resume ------------------------------------------------------------------------
def test_kill_9_of_the_edit_then_resume_loses_at_most_one_window(small_scene_dir, tmp_path):
    """The main process is killed after 3 edit units; its editor follows it within seconds; --resume redoes at most
    one unit (the one in flight) and finishes."""
    from test_stream_edit import EDIT_CONFIG
    from test_stream_train import CONFIG as TRAIN_CONFIG

    (tmp_path / "train.txt").write_text(TRAIN_CONFIG)
    assert stream_train.main(["--config", str(tmp_path / "train.txt"), "--datadir", str(small_scene_dir),
                              "--basedir", str(tmp_path), "--expname", "nerf", "--render_test", "0",
                              "--render_path", "0", "--n_iters", "20"]) == 0
    (tmp_path / "edit.txt").write_text(EDIT_CONFIG)
    argv = ["--config", str(tmp_path / "edit.txt"), "--datadir", str(small_scene_dir), "--basedir",
            str(tmp_path / "log"), "--expname", "edit", "--ckpt", str(tmp_path / "nerf"), "--editor",
            "editing_targets:counting_editor", "--n_iters", "100000", "--post_edit_iters", "5", "--path_views", "1"]
    calls = tmp_path / "calls.txt"
    env = {**os.environ, "EDIT_CALLS_FILE": str(calls), "EDIT_SLEEP": "1.0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    main = subprocess.Popen([sys.executable, str(ROOT / "stream_edit.py"), *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while (not calls.exists() or len(calls.read_text().split()) < 3) and time.monotonic() < deadline:
            assert main.poll() is None, "the edit ended before it could be killed"
            time.sleep(0.2)
        editors = [int(p) for p in subprocess.run(["pgrep", "-P", str(main.pid)], capture_output=True,
                                                  text=True).stdout.split()]
        main.send_signal(signal.SIGKILL)
        main.wait(timeout=10)
    finally:
        main.kill()
    before = len(calls.read_text().split())
    deadline = time.monotonic() + 10
    while any(alive(p) for p in editors) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in editors), "an editor outlived the killed edit"
    orphan_calls = len(calls.read_text().split()) - before  # what an orphan kept doing after the kill
    assert orphan_calls <= 1
    state = json.loads((tmp_path / "log" / "edit" / "edit_state.json").read_text())
    recorded = [k for k in state["done"] if k.count("/") >= 2]
    calls.write_text("")
    os.environ["EDIT_CALLS_FILE"] = str(calls)
    try:
        # the killed run asked for 100000 iterations only to keep fitting while the editor worked: the resume asks
        # for few (it would otherwise fit for 100000 iterations)
        assert stream_edit.main(argv + ["--resume", "--n_iters", "20"]) == 0
    finally:
        del os.environ["EDIT_CALLS_FILE"]
    redone = len(calls.read_text().split())
    total = 8  # 2 key-frame rounds + 3 cameras x 2 windows (see test_stream_edit)
    lost = before + orphan_calls + redone - total
    assert redone == total - len(recorded) and 0 <= lost <= 1, (before, len(recorded), redone)
