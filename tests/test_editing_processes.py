"""Editor processes share the image store with the trainer; failures reach the trainer as EditorFailed."""

from __future__ import annotations

import time

import editing_targets as targets
import pytest
import torch

from editing.processes import EditorFailed, EditorPool


def make_store():
    return torch.zeros((2, 4, 3, 5, 3), dtype=torch.uint8)


def test_editors_write_into_the_shared_store():
    images = make_store()
    pool = EditorPool(targets.fill_cameras, images, [([0, 2], 11), ([1, 3], 22)]).start()
    pool.wait(timeout=120)
    assert pool.done
    assert (images[:, [0, 2]] == 11).all() and (images[:, [1, 3]] == 22).all()
    assert pool.progress[0] == {"cam": 2} and pool.progress[1] == {"cam": 3}


def test_editor_exception_reaches_the_trainer():
    images = make_store()
    pool = EditorPool(targets.raise_after_first_write, images, [(1,)]).start()
    with pytest.raises(EditorFailed, match="(?s)editor 0 failed.*ValueError: editor broke on purpose"):
        pool.wait(timeout=120)
    assert (images[:, 1] == 7).all()  # what was written before the failure stays


def test_units_other_editors_finish_while_stopping_are_reported():
    images = make_store()
    pool = EditorPool(targets.fail_or_finish_slowly, images, [(True,), (False,)]).start()
    with pytest.raises(EditorFailed, match="editor 0 failed"):
        pool.wait(timeout=120)
    assert (images[:, 3] == 9).all()
    assert (1, {"done": "unit-a"}) in pool.take_notes()  # written, so it must be recorded as done


def test_editor_that_dies_without_a_word():
    pool = EditorPool(targets.die_silently, make_store(), [()]).start()
    with pytest.raises(EditorFailed, match="died with exit code 3"):
        pool.wait(timeout=120)


def test_shutdown_stops_running_editors():
    pool = EditorPool(targets.wait_for_stop, make_store(), [(), ()]).start()
    time.sleep(0.5)
    pool.poll()
    assert not pool.done
    start = time.monotonic()
    pool.shutdown(grace=30)
    assert all(not p.is_alive() for p in pool.procs)
    assert time.monotonic() - start < 30
