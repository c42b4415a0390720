"""Resume state of an edit: atomic files, refusal to resume another edit."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from editing.state import IMAGES_FILE, STATE_FILE, EditState, ResumeError

IDENTITY = {"prompt": "make it snowy", "schedule": "keyframe", "shape": [2, 3, 4, 5, 3], "workers": 1}


def test_save_then_resume(tmp_path):
    images = torch.randint(0, 255, (2, 3, 4, 5, 3), dtype=torch.uint8)
    state = EditState(tmp_path, IDENTITY)
    state.mark_done("keyframe/round0")
    state.mark_done("cam01/frames0-5")
    state.mark_done("keyframe/round0")
    state.save(images)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([IMAGES_FILE, STATE_FILE])  # no temporary files left

    restored = torch.zeros_like(images)
    again = EditState.load(tmp_path, IDENTITY, restored)
    assert torch.equal(restored, images)
    assert again.done == ["keyframe/round0", "cam01/frames0-5"]
    assert again.is_done("cam01/frames0-5") and not again.is_done("cam02/frames0-5")


def test_refuses_other_edit(tmp_path):
    images = torch.zeros((2, 3, 4, 5, 3), dtype=torch.uint8)
    EditState(tmp_path, IDENTITY).save(images)
    with pytest.raises(ResumeError, match="prompt: saved 'make it snowy', now 'van gogh'"):
        EditState.load(tmp_path, {**IDENTITY, "prompt": "van gogh"}, images)
    # the units of a stage are named after how the cameras were split among the editor processes
    with pytest.raises(ResumeError, match="workers: saved 1, now 2"):
        EditState.load(tmp_path, {**IDENTITY, "workers": 2}, images)
    with pytest.raises(ResumeError, match="uint8 \\(1, 3, 4, 5, 3\\)"):
        EditState.load(tmp_path, IDENTITY, torch.zeros((1, 3, 4, 5, 3), dtype=torch.uint8))
    with pytest.raises(ResumeError, match="nothing to resume"):
        EditState.load(tmp_path / "other", IDENTITY, images)


def test_failed_write_keeps_previous_files(tmp_path, monkeypatch):
    images = torch.ones((2, 3, 4, 5, 3), dtype=torch.uint8)
    state = EditState(tmp_path, IDENTITY)
    state.save(images)

    import editing.state as module

    def broken_save(handle, array):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(module.np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        state.save(images * 2)
    monkeypatch.undo()
    restored = torch.zeros_like(images)
    EditState.load(tmp_path, IDENTITY, restored)
    assert torch.equal(restored, images)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([IMAGES_FILE, STATE_FILE])


def test_an_identity_key_added_later_does_not_refuse_an_older_edit(tmp_path):
    images = torch.zeros((2, 3, 4, 5, 3), dtype=torch.uint8)
    older = {k: v for k, v in IDENTITY.items() if k != "workers"}
    EditState(tmp_path, older).save(images)
    assert EditState.load(tmp_path, IDENTITY, images).done == []


def test_a_lock_left_held_by_a_terminated_editor_does_not_hang_the_save(tmp_path, monkeypatch):
    import multiprocessing

    import editing.state as state_module

    monkeypatch.setattr(state_module, "LOCK_TIMEOUT_S", 0.2)
    lock = multiprocessing.get_context("spawn").Lock()
    lock.acquire()  # as an editor killed inside ImageStore.put leaves it
    images = torch.full((2, 3, 4, 5, 3), 7, dtype=torch.uint8)
    EditState(tmp_path, IDENTITY).save(images, lock)
    assert (np.load(tmp_path / IMAGES_FILE) == 7).all()
    lock.release()
    EditState(tmp_path, IDENTITY).save(images, lock)  # a free lock is taken and given back
    assert lock.acquire(timeout=1)


def test_atomic_files_get_the_mode_of_plain_files(tmp_path):
    from common.atomic import atomic_write, current_umask

    before = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        atomic_write(tmp_path / "ckpt.th", lambda handle: handle.write(b"x"))
        (tmp_path / "plain.txt").write_bytes(b"x")
    finally:
        os.umask(before)
    assert (tmp_path / "ckpt.th").stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o640
