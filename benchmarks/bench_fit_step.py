"""Where a CPU fit's time goes: the field's factor lookups with their gradients, compiled against PyTorch operators,
and a fast fit's phases.

1. Lookups: one VM field (the demo config's channels, ``--grid`` nodes per axis, 16 frames streamed at
   ``ld_per_frame`` 0.5) looked up at ``--points`` points along short ray segments at 4 frames, density and
   appearance, forward and backward, with ``--fit_compiled 1`` (``models/compiled_field.py``) and 0; prints
   milliseconds per lookup and the largest gradient difference.
2. Phases (``--fit_iters`` > 0): a fast fit of ``bench_train.py``'s large scene (release grid 64³ -> 128³, half-voxel
   step, the demo config) for each ``--fit_compiled`` value of ``--modes``; prints the seconds of the iterations
   before the occupancy grid (importance-sampled from the dense positions), those after it, and the polish at the
   dense positions, and the final test PSNR (camera 0, frames 0 and 8).

    python benchmarks/bench_fit_step.py                      # lookups only (~1 min)
    python benchmarks/bench_fit_step.py --fit_iters 700      # and the phases of both modes (~3 min, 2 threads)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dataloader import load_scene  # noqa: E402
from models import FitSettings, Trainer, field_from_args, render_image  # noqa: E402
from models.config import parse_args  # noqa: E402
from models.fields import FrameTimes, StreamTensorVMSplit  # noqa: E402
from tools.make_synthetic_scene import make_synthetic_scene  # noqa: E402

LARGE = {"cams": 6, "frames": 16, "width": 192, "height": 144}


def ray_points(n: int, generator: torch.Generator) -> torch.Tensor:
    """``[n, 3]`` points in 25-sample runs along short segments (like a batch's samples: close along each ray)."""
    runs = max(1, -(-n // 25))
    start = torch.rand(runs, 1, 3, generator=generator) * 1.6 - 0.8
    direction = torch.nn.functional.normalize(torch.randn(runs, 1, 3, generator=generator), dim=-1)
    along = torch.rand(runs, 25, 1, generator=generator).sort(dim=1).values * 0.15
    return (start + direction * along).reshape(-1, 3)[:n].contiguous()


def time_lookups(field, xyz: torch.Tensor, t: FrameTimes, compiled: bool, repeats: int) -> tuple[float, dict]:
    field.compiled_lookups = compiled
    seconds, grads = [], {}
    for _ in range(repeats + 1):  # the first is a warm-up
        field.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss = field.density_feature(xyz, t).sum() + field.app_features(xyz, t).square().sum()
        loss.backward()
        seconds.append(time.perf_counter() - start)
    grads = {name: p.grad.clone() for name, p in field.named_parameters() if p.grad is not None}
    field.compiled_lookups = False
    return float(np.median(seconds[1:])), grads


def lookups(args) -> None:
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    field = StreamTensorVMSplit(torch.tensor([[-1.0, -1, -1], [1, 1, 1]]), [args.grid] * 3, density_n_comp=[8, 4, 4],
                                appearance_n_comp=[16, 8, 8], app_dim=27, shadingMode="MLP_Fea", view_pe=0, fea_pe=0,
                                featureC=64, num_frames=16, ld_per_frame=0.5, fea2denseAct="relu")
    counts = (args.points // 4,) * 4
    t = FrameTimes((0.1, 0.35, 0.6, 0.9), counts)
    xyz = ray_points(sum(counts), generator)
    compiled_s, compiled_grads = time_lookups(field, xyz, t, True, args.repeats)
    torch_s, torch_grads = time_lookups(field, xyz, t, False, args.repeats)
    worst = max((compiled_grads[k] - g).abs().max().item() / max(g.abs().max().item(), 1e-12)
                for k, g in torch_grads.items())
    print(f"\nlookups: {sum(counts)} points at 4 frames, grid {args.grid}³, density [8, 4, 4] + appearance [16, 8, 8] "
          f"channels, forward + backward, {torch.get_num_threads()} thread(s)")
    print("| lookups | ms | speed-up |\n| --- | --: | --: |")
    print(f"| PyTorch operators (`--fit_compiled 0`) | {1e3 * torch_s:.1f} | 1.0x |")
    print(f"| compiled (`--fit_compiled 1`) | {1e3 * compiled_s:.1f} | {torch_s / compiled_s:.1f}x |")
    print(f"largest gradient difference, relative to the factor's largest gradient: {worst:.1e}")


def phases(args) -> None:
    scene_dir = Path(args.scene_root) / "large_6x16_192x144"
    if not (scene_dir / "poses_bounds.npy").exists():
        make_synthetic_scene(scene_dir, videos=False, **LARGE)
    scene = load_scene("synthetic", scene_dir, ndc=True)
    rows = []
    for mode in args.modes.split(","):
        opts = parse_args(["--config", str(ROOT / "configs" / "synthetic" / "train_demo.txt"), "--datadir",
                           str(scene_dir), "--n_iters", str(args.fit_iters), "--sampling", "fast", "--N_voxel_init",
                           str(64**3), "--N_voxel_final", str(128**3), "--step_ratio", "0.5", "--fit_compiled", mode])
        torch.manual_seed(0)
        settings = FitSettings.from_args(opts)
        trainer = Trainer(field_from_args(opts, scene), scene, settings, tensorboard=False)
        polish = args.fit_iters - round(settings.importance_polish * args.fit_iters)
        marks = {"first iterations, no grid yet": min(settings.occupancy_warmup, polish),
                 "then with the grid": polish, "polish (dense positions)": args.fit_iters}
        seconds, begin = {}, 0
        for name, end in marks.items():
            start = time.perf_counter()
            for _ in range(begin, min(end, args.fit_iters)):
                trainer.step()
            seconds[name] = (time.perf_counter() - start, max(0, min(end, args.fit_iters) - begin))
            begin = min(end, args.fit_iters)
        psnr = []
        for frame in (0, 8):
            out = render_image(trainer.field, trainer.sampler, scene, frame, scene.test_cams[0])
            mse = torch.mean((out["rgb"] - scene.image(frame, scene.test_cams[0])) ** 2).item()
            psnr.append(-10 * math.log10(max(mse, 1e-20)))
        rows.append((mode, seconds, float(np.mean(psnr))))
        print(f"  --fit_compiled {mode}: {sum(s for s, _ in seconds.values()):.1f} s", flush=True)
    print(f"\nfast fit of the large scene, {args.fit_iters} iterations, {torch.get_num_threads()} thread(s): seconds "
          "(s/it) of each phase")
    names = list(rows[0][1])
    print("| `--fit_compiled` | " + " | ".join(names) + " | whole fit | test PSNR |")
    print("| --- |" + " --: |" * (len(names) + 2))
    for mode, seconds, psnr in rows:
        cells = [f"{s:.1f} ({s / max(n, 1):.3f})" for s, n in seconds.values()]
        print(f"| {mode} | " + " | ".join(cells) + f" | {sum(s for s, _ in seconds.values()):.1f} | {psnr:.2f} dB |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=int, default=128, help="grid nodes per axis of the lookup benchmark")
    parser.add_argument("--points", type=int, default=100_000, help="points per lookup")
    parser.add_argument("--repeats", type=int, default=5, help="timed lookups (the median is printed)")
    parser.add_argument("--fit_iters", type=int, default=0, help="iterations of the phase benchmark; 0: skip it")
    parser.add_argument("--modes", default="1,0", help="--fit_compiled values of the phase benchmark")
    parser.add_argument("--scene_root", default=str(ROOT / "benchmarks" / "out" / "train"),
                        help="where bench_train.py's large scene is (made there once if missing)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lookups(args)
    if args.fit_iters > 0:
        phases(args)


if __name__ == "__main__":
    main()
