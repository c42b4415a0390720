"""Render speed of a saved 4D NeRF (what ``stream_train.py --render_only 1`` does): dense against fast.

``dense`` is the release's render (every sample); ``fast`` marches each frame: the density looked up in the
frame's node volume, only in cells of that time's occupancy grid, each ray stopped once its transmittance is below
the threshold (early ray termination), and colour evaluated about every ``--color_voxels`` grid cells along a ray
and interpolated in between (one fast row per value; 0 is exact). A depth-only row is what the editor's depth renders
cost. On the CPU, fast renders march and look up appearance in compiled loops (models/compiled_march.py); two more
rows give the default and depth-only renders with the PyTorch operators (``--render_compiled 0``). Prints seconds
per frame of each, the time-volume build, and the PSNR against dense (goal: at least 45 dB).

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
    parser.add_argument("--color_voxels", type=float, nargs="+", default=[0, 2, 4],
                        help="fast renders' colour spacing in grid cells, one row each (--render_color_voxels)")
    parser.add_argument("--pytorch_rows", type=int, default=1,
                        help="1: also the default and depth-only fast renders with --render_compiled 0 (the PyTorch "
                             "march and lookups; on the CPU, where the compiled loops run)")
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

    def render_all(sampler, color: bool = True) -> tuple[list[dict], float]:
        render_image(field, sampler, scene, opts.frames[0], cam, color=color)  # builds that time's volume
        outs, start = [], time.perf_counter()
        for frame in opts.frames:
            outs.append({key: value.cpu() for key, value in
                         render_image(field, sampler, scene, frame, cam, color=color).items()})
        sync()
        return outs, (time.perf_counter() - start) / len(opts.frames)

    reference, dense_s = render_all(build_sampler("dense", scene.ndc))
    fast = build_sampler("fast", scene.ndc)
    start = time.perf_counter()
    fast.time_volume.update(field, float(scene.times[opts.frames[0]]))
    sync()
    volume_s = time.perf_counter() - start if fast.time_volume.usable(field) else float("nan")
    print(f"\n{ckpt} on {opts.datadir} ({scene.width}x{scene.height}, {field.n_samples_full} samples per ray), "
          f"test camera cam{scene.cam_ids[cam]:02d}, frames {opts.frames}, {opts.device}, "
          f"{torch.get_num_threads()} threads; time volume and grid of one frame built in {volume_s:.2f} s:\n")
    print("| render | s / frame | speed-up | PSNR vs dense | depth max diff |\n|---|--:|--:|--:|--:|")
    print(f"| dense | {dense_s:.2f} | 1.0x | reference | reference |")
    rows = []
    for voxels in opts.color_voxels:
        sampler = build_sampler("fast", scene.ndc, color_voxels=voxels)
        rows.append((f"fast, colour every {voxels:g} cells ({sampler.color_stride(field)} samples)", sampler, True))
    rows.append(("fast, depth only", build_sampler("fast", scene.ndc), False))
    if opts.pytorch_rows and not str(opts.device).startswith("cuda"):
        rows.append(("fast, default, PyTorch operators (`--render_compiled 0`)",
                     build_sampler("fast", scene.ndc, compiled=False), True))
        rows.append(("fast, depth only, PyTorch operators", build_sampler("fast", scene.ndc, compiled=False), False))
    for name, sampler, color in rows:
        outs, seconds = render_all(sampler, color)
        depth = max((a["depth"] - b["depth"]).abs().max().item() for a, b in zip(outs, reference))
        match = "-"
        if color:
            mse = sum(torch.mean((a["rgb"] - b["rgb"]) ** 2).item() for a, b in zip(outs, reference)) / len(outs)
            match = f"{-10 * math.log10(max(mse, 1e-20)):.1f} dB"
        print(f"| {name} | {seconds:.2f} | {dense_s / seconds:.1f}x | {match} | {depth:.1e} |")


if __name__ == "__main__":
    main()
