"""Render speed of a saved 4D NeRF (what ``stream_train.py --render_only 1`` does): dense against fast.

``dense`` is the release's render (every sample); ``fast`` builds the occupancy grid from the loaded checkpoint,
skips empty cells and samples behind matter opaque at every time, and stops each ray once its transmittance is
below the threshold (early ray termination). Prints seconds per frame of each, the grid's build time, and the PSNR
between the two renders (goal: at least 45 dB).

    python benchmarks/bench_render.py --ckpt log/synthetic/train_demo --datadir data/synthetic/demo
    python benchmarks/bench_render.py --ckpt log/neural_3d/train_coffee_300_4 --datadir data/neural_3d/coffee_martini \\
        --dataset_name n3dv --downsample 4 --frames 0 150 --device cuda:0
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dataloader import load_scene  # noqa: E402
from models import build_sampler, render_image  # noqa: E402
from models.checkpoint import latest_checkpoint, load_checkpoint  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="checkpoint file or run directory")
    parser.add_argument("--datadir", required=True)
    parser.add_argument("--dataset_name", default="synthetic")
    parser.add_argument("--downsample", type=float, default=1.0)
    parser.add_argument("--ndc", type=int, default=1)
    parser.add_argument("--frames", type=int, nargs="+", default=[0, 5, 11])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    opts = parser.parse_args(argv)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    ckpt = Path(opts.ckpt)
    ckpt = latest_checkpoint(ckpt) if ckpt.is_dir() else ckpt
    scene = load_scene(opts.dataset_name, opts.datadir, downsample=opts.downsample, ndc=bool(opts.ndc))
    field, _ = load_checkpoint(ckpt, device=opts.device)
    cam = scene.test_cams[0]

    def sync():
        if str(opts.device).startswith("cuda"):
            torch.cuda.synchronize()

    results = {}
    for mode in ("dense", "fast"):
        sampler = build_sampler(mode, scene.ndc)
        grid_s = 0.0
        if mode == "fast":
            start = time.perf_counter()
            sampler.refresh(field)
            sync()
            grid_s = time.perf_counter() - start
        images, seconds = [], []
        for frame in opts.frames:
            start = time.perf_counter()
            images.append(render_image(field, sampler, scene, frame, cam)["rgb"].cpu())
            sync()
            seconds.append(time.perf_counter() - start)
        results[mode] = {"images": images, "s_per_frame": sum(seconds) / len(seconds), "grid_s": grid_s}
    mse = sum(torch.mean((a - b) ** 2).item() for a, b in zip(results["dense"]["images"], results["fast"]["images"]))
    match = -10 * math.log10(max(mse / len(opts.frames), 1e-20))
    print(f"\n{ckpt} on {opts.datadir} ({scene.width}x{scene.height}, {field.n_samples_full} samples per ray), "
          f"test camera cam{scene.cam_ids[cam]:02d}, frames {opts.frames}, {opts.device}, "
          f"{torch.get_num_threads()} threads:\n")
    print("| render | s / frame | grid build s | speed-up | PSNR vs dense |\n|---|--:|--:|--:|--:|")
    dense = results["dense"]["s_per_frame"]
    for mode, r in results.items():
        print(f"| {mode} | {r['s_per_frame']:.2f} | {r['grid_s']:.2f} | {dense / r['s_per_frame']:.1f}x | "
              f"{'reference' if mode == 'dense' else f'{match:.1f} dB'} |")


if __name__ == "__main__":
    main()
