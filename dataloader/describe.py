"""Load a scene and print what it holds: ``python -m dataloader.describe --dataset_name synthetic --datadir DIR``."""

from __future__ import annotations

import argparse
import logging
import time

from . import DATASETS, load_scene


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset_name", default="n3dv", choices=sorted(DATASETS), help="scene reader")
    parser.add_argument("--datadir", required=True, help="scene folder")
    parser.add_argument("--downsample", type=float, default=1.0, help="image size divisor")
    parser.add_argument("--num_frames", type=int, default=None, help="load only the first N frames")
    parser.add_argument("--skip_cams", type=int, nargs="*", default=[], help="camera numbers to leave out")
    parser.add_argument("--ndc_ray", type=int, default=None,
                        help="1: forward-facing NDC rays (default: the reader's, NDC for rigs, box for captures)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    start = time.perf_counter()
    ndc = {} if args.ndc_ray is None else {"ndc": bool(args.ndc_ray)}
    scene = load_scene(args.dataset_name, args.datadir, downsample=args.downsample, num_frames=args.num_frames,
                       skip_cams=args.skip_cams, **ndc)
    seconds = time.perf_counter() - start
    pixels = scene.images.shape[:4].numel()
    print(f"scene {args.datadir} ({args.dataset_name}), loaded in {seconds:.2f} s")
    print(f"  images      {tuple(scene.images.shape)} {scene.images.dtype}: {scene.num_frames} frames x "
          f"{scene.num_cams} cameras of {scene.width}x{scene.height}")
    print(f"  memory      {scene.nbytes() / 2**20:.1f} MiB held, {scene.nbytes() / pixels:.2f} bytes per pixel")
    print(f"  cameras     {[f'cam{c:02d}' for c in scene.cam_ids]}, test {scene.test_cams}, focal {scene.focal:.1f}")
    print(f"  rays        ndc={scene.ndc}, near/far {scene.near_far}, box {scene.scene_box.tolist()}")
    if scene.moving:
        print(f"  monocular   camera cam{scene.cam_ids[0]:02d} moves (a pose per frame); test cameras never fitted")
    print(f"  times       {scene.times[0]:.3f} .. {scene.times[-1]:.3f}; render path of {len(scene.render_path)} poses")
    if scene.gt:
        print(f"  ground truth {sorted(scene.gt)}")


if __name__ == "__main__":
    main()
