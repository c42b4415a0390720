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


def die_silently(ctx):
    os._exit(3)


def wait_for_stop(ctx):
    while not ctx.stop.is_set():
        time.sleep(0.05)
