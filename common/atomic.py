"""Atomic file replacement: a reader never sees a half-written checkpoint, config or image store."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it over ``path``.

    An error leaves the previous file untouched and no temporary file behind; a process killed mid-write can leave
    its temporary file (``.NAME.*.tmp``), which :func:`remove_stale_temporaries` clears at the next start.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600; give it the mode a plain open() would (0666 less the umask), so a shared
        # cluster's group can read checkpoints and configs as it reads the run's images
        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux); else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)  # (briefly process-wide: only where /proc is missing)
    os.umask(umask)
    return umask


def remove_stale_temporaries(folder: str | Path, pattern: str) -> list[Path]:
    """Delete the temporary files :func:`atomic_write` left in ``folder`` for targets matching ``pattern`` (a glob
    such as ``ckpt-*.th``) when a process was killed mid-write; returns what was removed.

    Call it only where one process owns the folder (a run directory at the start of its run).
    """
    removed = []
    for tmp in Path(folder).glob(f".{pattern}.*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    if removed:
        import logging

        logging.getLogger(__name__).warning("removed %d temporary file(s) of an interrupted write in %s: %s",
                                            len(removed), folder, ", ".join(p.name for p in removed))
    return removed
