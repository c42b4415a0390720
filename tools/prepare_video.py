"""Extract the frames of every ``camXX.mp4`` of a DyNeRF scene into ``frames/camXX/%06d.jpg`` (1-based).

Uses the ffmpeg bundled with imageio-ffmpeg (no system ffmpeg needed). Cameras whose frames are already
there are skipped; an interrupted extraction is redone.

Usage:
    python tools/prepare_video.py data/neural_3d/coffee_martini
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from tqdm import tqdm

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloader.video import VideoError, extract_frames, frames_extracted, missing_frames

log = logging.getLogger("prepare_video")


def prepare_scene(datadir: Path, jpeg_quality: int = 95, progress: bool = True) -> dict[str, str]:
    """Extract every camera of ``datadir``; returns ``{camera: "extracted" | "skipped"}``."""
    if not datadir.is_dir():
        raise VideoError(f"scene folder {datadir} not found: pass the folder that holds camXX.mp4")
    videos = sorted(datadir.glob("cam*.mp4"))
    if not videos:
        raise VideoError(f"no camXX.mp4 videos in {datadir}: pass the folder of an unzipped DyNeRF scene")
    status = {}
    for video in tqdm(videos, desc="cameras", unit="video", disable=not progress):
        frame_dir = datadir / "frames" / video.stem
        if frames_extracted(frame_dir):
            status[video.stem] = "skipped"
            continue
        gaps = missing_frames(frame_dir)
        foreign = [p.name for p in frame_dir.iterdir() if not p.name.startswith(".") and not (
            p.stem.isdigit() and p.suffix in (".jpg", ".png"))] if frame_dir.is_dir() else []
        if gaps and foreign:
            log.warning("%s misses %d extracted frame(s) but also holds files not written by this tool (%s); leaving "
                        "it as it is (move them away to extract again)", frame_dir, len(gaps), ", ".join(foreign[:5]))
            status[video.stem] = "skipped"
            continue
        if gaps:
            # this tool's own extraction with frames deleted since: extract the camera again
            log.warning("%s misses %d extracted frame(s) (%s); extracting %s again", frame_dir, len(gaps),
                        ", ".join(f"{g:06d}" for g in gaps[:5]), video.name)
            stale = frame_dir.with_name(frame_dir.name + ".stale")
            shutil.rmtree(stale, ignore_errors=True)
            frame_dir.rename(stale)
            try:
                count = extract_frames(video, frame_dir, progress=progress, jpeg_quality=jpeg_quality)
            except BaseException:
                stale.rename(frame_dir)  # the frames that were there stay where they were
                raise
            shutil.rmtree(stale)
            log.info("%s: %d frames -> %s", video.name, count, frame_dir)
            status[video.stem] = "re-extracted"
            continue
        if frame_dir.is_dir() and any(frame_dir.iterdir()):
            log.warning("%s already holds files not written by this tool; leaving it as it is "
                        "(delete it to extract again)", frame_dir)
            status[video.stem] = "skipped"
            continue
        count = extract_frames(video, frame_dir, progress=progress, jpeg_quality=jpeg_quality)
        log.info("%s: %d frames -> %s", video.name, count, frame_dir)
        status[video.stem] = "extracted"
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datadir", type=Path, help="scene folder holding camXX.mp4 (and poses_bounds.npy)")
    parser.add_argument("--jpeg_quality", type=int, default=95, help="JPEG quality of the extracted frames")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        status = prepare_scene(args.datadir, args.jpeg_quality)
    except VideoError as err:
        print(f"prepare_video: {err}", file=sys.stderr)
        return 1
    done = sum(v != "skipped" for v in status.values())
    print(f"{args.datadir}: {done} cameras extracted, {len(status) - done} already there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
