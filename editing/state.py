"""What an edit has finished, kept in the run directory so an interrupted edit can resume.

Two files, each replaced atomically (written to a temporary file in the same folder, then renamed):
``edited_images.npy`` (the uint8 ``[F, C, H, W, 3]`` image store) and ``edit_state.json`` (the finished
units of work and what they were made for). The images are written before the JSON, so the JSON never
claims work the saved images do not hold.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from common.atomic import atomic_write
from common.errors import UserError

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 60  # longest wait for the image store's lock when saving (writes under it take milliseconds)

STATE_FILE = "edit_state.json"
IMAGES_FILE = "edited_images.npy"


class ResumeError(UserError, ValueError):
    """The saved edit cannot be continued with the current settings."""


class EditState:
    """Finished units of work (``"keyframe/round3"``, ``"cam02/frames0-5"`` ...) of one edit.

    Args:
        run_dir: the run directory.
        identity: what the edit is for (prompt, schedule, scene shape ...); resuming with a different
            identity is refused, since the saved images would belong to another edit.
    """

    def __init__(self, run_dir: str | Path, identity: dict):
        self.run_dir = Path(run_dir)
        self.identity = dict(identity)
        self.done: list[str] = []
        self.info: dict = {}

    def is_done(self, key: str) -> bool:
        return key in self.done

    def mark_done(self, key: str) -> None:
        if key not in self.done:
            self.done.append(key)

    def save(self, images: torch.Tensor, lock=None) -> None:
        """Write the image store (read under ``lock`` when given) and the list of finished work."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # an editor terminated inside a write leaves the lock held forever: then the store is read without it (the
        # unit it was writing is not marked done, so a resume edits it again)
        held = lock is not None and lock.acquire(timeout=LOCK_TIMEOUT_S)
        if lock is not None and not held:
            log.warning("the image store's lock was not released in %d s (an editor stopped mid-write?): saving "
                        "without it", LOCK_TIMEOUT_S)
        try:
            snapshot = images.numpy().copy()
        finally:
            if held:
                lock.release()
        atomic_write(self.run_dir / IMAGES_FILE, lambda f: np.save(f, snapshot))
        text = json.dumps({"identity": self.identity, "done": self.done, "info": self.info}, indent=1).encode()
        atomic_write(self.run_dir / STATE_FILE, lambda f: f.write(text))

    @classmethod
    def exists(cls, run_dir: str | Path) -> bool:
        return (Path(run_dir) / STATE_FILE).is_file() and (Path(run_dir) / IMAGES_FILE).is_file()

    @classmethod
    def read_info(cls, run_dir: str | Path) -> dict:
        """The ``info`` of a saved edit (e.g. the checkpoint it started from); empty when there is none."""
        path = Path(run_dir) / STATE_FILE
        return dict(json.loads(path.read_text()).get("info", {})) if path.is_file() else {}

    @classmethod
    def load(cls, run_dir: str | Path, identity: dict, images: torch.Tensor) -> EditState:
        """Read a saved edit into ``images`` (in place) and return its state.

        Raises:
            ResumeError: nothing saved, or saved for another prompt / schedule / scene size.
        """
        run_dir = Path(run_dir)
        if not cls.exists(run_dir):
            raise ResumeError(f"nothing to resume in {run_dir}: {STATE_FILE} and {IMAGES_FILE} are missing; "
                              "start the edit without --resume")
        saved = json.loads((run_dir / STATE_FILE).read_text())
        # a key the saved identity lacks was added after that edit began (its value then was the default's)
        differ = {k: (saved["identity"][k], v) for k, v in identity.items()
                  if k in saved["identity"] and saved["identity"][k] != v}
        if differ:
            detail = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in differ.items())
            raise ResumeError(f"{run_dir / STATE_FILE} belongs to another edit ({detail}); use a new --expname, "
                              "or the same settings to resume")
        stored = np.load(run_dir / IMAGES_FILE, mmap_mode="r")
        if tuple(stored.shape) != tuple(images.shape) or stored.dtype != np.uint8:
            raise ResumeError(f"{run_dir / IMAGES_FILE} holds {stored.dtype} {tuple(stored.shape)}, the scene "
                              f"uint8 {tuple(images.shape)}: it was made with other frames, cameras or downsample")
        images.copy_(torch.from_numpy(np.array(stored)))  # a writable copy of the memory map
        state = cls(run_dir, identity)
        state.done = list(saved["done"])
        state.info = dict(saved.get("info", {}))
        return state
