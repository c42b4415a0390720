"""Write the built-in synthetic dynamic scene (DyNeRF layout plus ground truth) into a folder; with
``--monocular``, as a monocular capture in the Nerfies layout (one moving camera, two static validation cameras).

The scene and the files written are described in :mod:`dataloader.synthetic_render`.

Usage:
    python tools/make_synthetic_scene.py data/synthetic/demo --cams 6 --frames 12 --width 160 --height 120
    python tools/make_synthetic_scene.py data/synthetic/monocular --monocular --frames 24
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloader.synthetic_render import make_monocular_capture, make_synthetic_scene

__all__ = ["make_synthetic_scene", "main"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="output folder (created; existing files of a scene are replaced)")
    parser.add_argument("--cams", type=int, default=6, help="number of cameras in the rig")
    parser.add_argument("--frames", type=int, default=12, help="number of time steps")
    parser.add_argument("--width", type=int, default=160, help="image width in pixels")
    parser.add_argument("--height", type=int, default=120, help="image height in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the small random variations of the objects")
    parser.add_argument("--no_videos", action="store_true", help="write only the PNG frames, no camXX.mp4")
    parser.add_argument("--force", action="store_true", help="re-render even if OUT already holds this scene")
    parser.add_argument("--monocular", action="store_true",
                        help="a monocular capture in the Nerfies layout (dataset_name = synthetic or nerfies): one "
                             "camera moving through the rig, one image per frame, two static validation cameras "
                             "(--cams and --no_videos do not apply)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    meta_path = args.out / "gt" / "meta.json"
    if args.monocular:
        wanted = dict(monocular=True, frames=args.frames, width=args.width, height=args.height, seed=args.seed)
    else:
        wanted = dict(cams=args.cams, frames=args.frames, width=args.width, height=args.height, seed=args.seed,
                      videos=not args.no_videos)
    if meta_path.exists() and not args.force:
        meta = json.loads(meta_path.read_text())
        if all(meta.get(k) == v for k, v in wanted.items()):
            print(f"{args.out} already holds this scene ({args.frames} frames, {args.width}x{args.height}); "
                  "--force re-renders it")
            return
    if args.monocular:
        make_monocular_capture(args.out, args.frames, args.width, args.height, args.seed)
        print(f"wrote {args.out}: a monocular capture of {args.frames} frames at {args.width}x{args.height} "
              "(rgb/1x/, camera/, dataset.json, metadata.json, scene.json, gt/)")
        return
    make_synthetic_scene(args.out, args.cams, args.frames, args.width, args.height, args.seed, not args.no_videos)
    print(f"wrote {args.out}: {args.cams} cameras x {args.frames} frames at {args.width}x{args.height} "
          f"(frames/, poses_bounds.npy, gt/ with depth, cameras, flow and occlusion)")


if __name__ == "__main__":
    main()
