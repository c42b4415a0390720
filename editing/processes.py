"""Editor processes running beside the NeRF trainer, sharing the scene's image store.

The trainer stays in the main process; each editor is a spawned process (``torch.multiprocessing``, spawn) that
receives the shared uint8 image store, a lock to hold while it writes a window, and a stop event. An editor
that raises sends its traceback back; :class:`EditorPool` turns that into :class:`EditorFailed` in the trainer,
which then saves a checkpoint and exits non-zero. Nothing here knows about IP2P or NeRFs.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.multiprocessing as mp

log = logging.getLogger(__name__)


class EditorFailed(RuntimeError):
    """An editor process raised or died; the message holds its traceback."""


@dataclass
class EditorContext:
    """What an editor process gets besides its own arguments.

    Attributes:
        rank: index of this editor among the editors.
        images: the shared uint8 ``[F, C, H, W, 3]`` image store.
        lock: hold it while writing into ``images`` (one window at a time).
        stop: set by the trainer when the run is being stopped; editors return soon after.
        messages: queue to the trainer, for progress notes.
    """

    rank: int
    images: torch.Tensor
    lock: Any
    stop: Any
    messages: Any

    def write(self, index: tuple, values: torch.Tensor) -> None:
        """Write ``values`` into ``images[index]`` under the lock."""
        with self.lock:
            self.images[index] = values

    def report(self, **fields) -> None:
        """Send a progress note (any picklable fields) to the trainer."""
        self.messages.put(("progress", self.rank, fields))


PARENT_CHECK_SECONDS = 1.0


def exit_with_parent(parent_pid: int, interval: float = PARENT_CHECK_SECONDS) -> threading.Thread:
    """A daemon thread that ends this process within ``interval`` seconds of ``parent_pid``'s death.

    An editor whose trainer was killed (kill -9, out of memory) would otherwise go on editing for minutes, and its
    work is never recorded. When the parent dies the process is re-parented, so ``os.getppid()`` changes.
    """
    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(3)
            time.sleep(interval)

    thread = threading.Thread(target=watch, name="watch-parent", daemon=True)
    thread.start()
    return thread


def _editor_main(target: Callable, rank: int, images, lock, stop, messages, args: tuple,
                 parent_pid: int | None = None) -> None:
    if parent_pid is not None:
        exit_with_parent(parent_pid)
    ctx = EditorContext(rank, images, lock, stop, messages)
    try:
        target(ctx, *args)
    except BaseException as err:  # noqa: BLE001 - every failure must reach the trainer
        messages.put(("error", rank, "".join(traceback.format_exception(err))))
        raise SystemExit(1) from None
    messages.put(("done", rank, None))


class EditorPool:
    """Start editor processes and watch them from the trainer's loop.

    Args:
        target: a picklable top-level function ``target(ctx: EditorContext, *args)``.
        images: the image store; moved to shared memory.
        per_editor_args: one argument tuple per editor process.
        lock: the lock editors hold while writing (a spawn-context lock); a new one by default.
    """

    def __init__(self, target: Callable, images: torch.Tensor, per_editor_args: Sequence[tuple], lock=None):
        self.ctx = mp.get_context("spawn")
        images.share_memory_()
        self.lock = lock if lock is not None else self.ctx.Lock()
        self.stop_event = self.ctx.Event()
        self.messages = self.ctx.Queue()
        self.procs = [
            self.ctx.Process(target=_editor_main, name=f"editor-{rank}", daemon=True,
                             args=(target, rank, images, self.lock, self.stop_event, self.messages, args,
                                   os.getpid()))
            for rank, args in enumerate(per_editor_args)
        ]
        self.finished: set[int] = set()
        self.progress: dict[int, dict] = {}
        self.notes: list[tuple[int, dict]] = []

    def start(self) -> EditorPool:
        for proc in self.procs:
            proc.start()
        return self

    @property
    def done(self) -> bool:
        """All editors finished without error."""
        return len(self.finished) == len(self.procs)

    def _queued(self, timeout: float = 0.0):
        """Every queued message ``(kind, rank, payload)``; the first read waits up to ``timeout`` seconds."""
        while True:
            try:
                yield self.messages.get(timeout=timeout) if timeout else self.messages.get_nowait()
            except queue.Empty:
                return
            timeout = 0.0

    def _drain(self, timeout: float = 0.0) -> None:
        """Read every queued message; the first read waits up to ``timeout`` seconds."""
        for kind, rank, payload in self._queued(timeout):
            if kind == "error":
                self.shutdown()  # the other editors' notes until they stop are still read (units they finished)
                raise EditorFailed(f"editor {rank} failed:\n{payload}")
            self._note(kind, rank, payload)

    def _collect(self) -> None:
        """Read every queued message without raising (while stopping: a further error changes nothing)."""
        for kind, rank, payload in self._queued():
            if kind == "error":
                log.warning("editor %d failed while stopping:\n%s", rank, payload)
            else:
                self._note(kind, rank, payload)

    def _note(self, kind: str, rank: int, payload) -> None:
        if kind == "done":
            self.finished.add(rank)
        elif kind == "progress":
            self.progress[rank] = payload
            self.notes.append((rank, payload))

    def take_notes(self) -> list[tuple[int, dict]]:
        """Progress notes ``(rank, fields)`` received since the last call, oldest first."""
        notes, self.notes = self.notes, []
        return notes

    def _dead(self) -> list[int]:
        return [r for r, p in enumerate(self.procs) if r not in self.finished and p.exitcode is not None]

    def poll(self) -> None:
        """Read progress; raise :class:`EditorFailed` when an editor raised or died without a word."""
        self._drain()
        if self._dead():
            self._drain(timeout=1.0)  # an editor's last message can still be in the pipe when it exits
            dead = self._dead()
            if dead:
                code = self.procs[dead[0]].exitcode
                self.shutdown()
                raise EditorFailed(f"editor {dead[0]} died with exit code {code} and no traceback "
                                   "(killed, out of memory, or a crash in native code)")

    def wait(self, timeout: float | None = None, interval: float = 0.5) -> None:
        """Block until every editor finished (or raise :class:`EditorFailed`)."""
        start = time.monotonic()
        while not self.done:
            self.poll()
            if timeout is not None and time.monotonic() - start > timeout:
                raise TimeoutError(f"editors still running after {timeout} s")
            time.sleep(interval)

    def shutdown(self, grace: float = 10.0) -> None:
        """Ask editors to stop, then terminate those still running after ``grace`` seconds."""
        self.stop_event.set()
        # read while waiting: an editor cannot exit while its last messages wait in a full pipe, and the units it
        # finishes meanwhile must reach the edit's state
        deadline = time.monotonic() + grace
        while any(proc.is_alive() for proc in self.procs) and time.monotonic() < deadline:
            self._collect()
            time.sleep(0.05)
        for proc in self.procs:
            if proc.is_alive():
                log.warning("terminating %s", proc.name)
                proc.terminate()
                proc.join(timeout=5)
        self._collect()
