"""Frame extraction from the camXX.mp4 videos of a DyNeRF scene, with the ffmpeg bundled in imageio-ffmpeg."""

from __future__ import annotations

import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.errors import UserError
from common.image_io import ImageError, write_rgb

log = logging.getLogger(__name__)

DONE_MARKER = ".extracted"


class VideoError(UserError, RuntimeError):
    """A video is missing, unreadable or too short."""


def frames_extracted(frame_dir: Path) -> bool:
    """Whether ``frame_dir`` holds a complete extraction (written by :func:`extract_frames`, no frame missing)."""
    return (frame_dir / DONE_MARKER).exists() and not missing_frames(frame_dir)


def missing_frames(frame_dir: Path) -> list[int]:
    """Frame numbers (1-based) of an extraction that are no longer on disk (a file deleted since)."""
    marker = frame_dir / DONE_MARKER
    try:
        count = int(marker.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    present = {int(p.stem) for p in frame_dir.glob("[0-9]*.jpg") if p.stem.isdigit()}
    present |= {int(p.stem) for p in frame_dir.glob("[0-9]*.png") if p.stem.isdigit()}
    return sorted(set(range(1, count + 1)) - present)


def extract_frames(video: Path, frame_dir: Path, progress: bool = True, jpeg_quality: int = 95) -> int:
    """Decode ``video`` into ``frame_dir/%06d.jpg`` (1-based); ``frame_dir`` must not hold files yet (but the
    completion marker of frames deleted since).

    Frames are written into a temporary folder that is renamed when complete, so an interrupted
    extraction never looks finished.

    Returns:
        The number of frames written.
    """
    import imageio_ffmpeg

    video = Path(video)
    if not video.is_file():
        raise VideoError(f"video {video} not found: a DyNeRF scene folder holds one camXX.mp4 per camera")
    others = sorted(p.name for p in frame_dir.iterdir() if p.name != DONE_MARKER) if frame_dir.is_dir() else []
    if others:  # never overwritten: someone else's files
        raise VideoError(f"{frame_dir} holds files that are not frames to load ({', '.join(others[:5])}): move them "
                         "away, then extract again (tools/prepare_video.py)")
    partial = frame_dir.with_name(frame_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    count = 0
    try:
        reader = imageio_ffmpeg.read_frames(str(video))
        meta = next(reader)
        width, height = meta["size"]
        total = int(meta.get("duration", 0) * meta.get("fps", 0)) or None
        with ThreadPoolExecutor(max_workers=4) as pool, \
                tqdm(total=total, desc=video.name, unit="frame", disable=not progress, leave=False) as bar:
            jobs = []
            for raw in reader:
                count += 1
                rgb = np.frombuffer(raw, np.uint8).reshape(height, width, 3)
                jobs.append(pool.submit(write_rgb, partial / f"{count:06d}.jpg", rgb, jpeg_quality))
                bar.update(1)
            for job in jobs:
                job.result()
    except ImageError as err:  # writing a frame failed: not the video's fault
        shutil.rmtree(partial, ignore_errors=True)
        raise VideoError(f"could not write the frames of {video} into {partial.parent} ({err}): check the free disk "
                         "space and the folder's permissions") from err
    except (OSError, RuntimeError, StopIteration, KeyError) as err:
        shutil.rmtree(partial, ignore_errors=True)
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = lines[-1] if lines else type(err).__name__  # ffmpeg's last line says what went wrong
        raise VideoError(f"could not decode {video} ({reason}); the file looks corrupt or truncated: "
                         "download the scene again") from err
    if count == 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise VideoError(f"{video} holds no frames; the file looks corrupt: download the scene again")
    (partial / DONE_MARKER).write_text(f"{count}\n")
    if frame_dir.is_dir():  # empty but for the marker of frames deleted since (checked above)
        (frame_dir / DONE_MARKER).unlink(missing_ok=True)
        frame_dir.rmdir()
    partial.rename(frame_dir)
    return count
