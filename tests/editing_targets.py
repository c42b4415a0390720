"""Editor process targets for tests (top-level functions, so spawned processes can import them)."""

from __future__ import annotations

import os
import time


def fill_cameras(ctx, cams, value):
    """Write ``value`` into every frame of ``cams``, one camera (window) at a time."""
    for cam in cams:
        if ctx.stop.is_set():
            return
        ctx.write((slice(None), cam), value)
        ctx.report(cam=cam)


def raise_after_first_write(ctx, cam):
    ctx.write((slice(None), cam), 7)
    raise ValueError("editor broke on purpose")


def fail_or_finish_slowly(ctx, fail):
    """Editor ``fail``: raise at once; the other: finish one slow unit (it is still working when the error arrives)."""
    if fail:
        time.sleep(0.2)
        raise ValueError("editor broke on purpose")
    time.sleep(2.0)
    ctx.write((slice(None), 3), 9)
    ctx.report(done="unit-a")


def die_silently(ctx):
    os._exit(3)


def wait_for_stop(ctx):
    while not ctx.stop.is_set():
        time.sleep(0.05)


# --- editors for stream_edit.py --editor (module:factory) ---------------------------------------------------
class CountingEditor:
    """The colour-shift editor that appends one line per finished call to ``$EDIT_CALLS_FILE``, raises on call
    number ``$EDIT_FAIL_AT`` (1-based; unset: never) and takes ``$EDIT_SLEEP`` seconds longer per call."""

    def __init__(self):
        from editing.toy_editors import ColourShiftEditor

        self.inner = ColourShiftEditor()
        self.calls = 0

    def edit_sequence(self, images, images_cond, prompt, **kwargs):
        self.calls += 1
        if str(self.calls) == os.environ.get("EDIT_FAIL_AT"):
            raise RuntimeError(f"editor broke on purpose at call {self.calls}")
        out = self.inner.edit_sequence(images, images_cond, prompt, **kwargs)
        time.sleep(float(os.environ.get("EDIT_SLEEP", "0")))  # a slow editor, for kill tests
        with open(os.environ["EDIT_CALLS_FILE"], "a") as log:
            log.write(f"{images.shape[0]}\n")
        return out


def counting_editor():
    return CountingEditor()
