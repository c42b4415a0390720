"""Fitting speed and quality of the 4D NeRF on the default synthetic scene (CPU by default).

Prints: iterations/s and rays/s at batch 4096 (the n3dv configs' batch), test PSNR after fixed iteration counts
with the demo config (``configs/synthetic/train_demo.txt``, batch 1024), full-image render time, peak RSS.
These are the baseline later speed work (occupancy grids, ...) must beat.

    python benchmarks/bench_train.py                       # CPU, 1 thread
    python benchmarks/bench_train.py --threads 2 --checkpoints 500 1000 2000 --device cuda:0
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dataloader import load_scene  # noqa: E402
from models import FitSettings, Trainer, field_from_args, render_image  # noqa: E402
from models.config import parse_args  # noqa: E402
from tools.make_synthetic_scene import make_synthetic_scene  # noqa: E402


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux/macOS ``ru_maxrss``; current RSS elsewhere)."""
    try:
        import resource

        scale = 1024 if sys.platform != "darwin" else 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / scale / 1024
    except ImportError:
        return psutil.Process().memory_info().rss / 2**20


def timed_steps(trainer: Trainer, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        trainer.step()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", default=str(ROOT / "benchmarks" / "out" / "train" / "scene"),
                        help="synthetic scene folder (made with the default size when missing)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "synthetic" / "train_demo.txt"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--speed_iters", type=int, default=20, help="timed iterations at batch 4096")
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[500, 1000, 2000],
                        help="iteration counts at which test PSNR is measured (demo config)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    scene_dir = Path(args.scene)
    if not (scene_dir / "poses_bounds.npy").exists():
        make_synthetic_scene(scene_dir, videos=False)
    scene = load_scene("synthetic", scene_dir, ndc=True)
    test = scene.images[:, scene.test_cams].float() / 255
    baseline = -10 * torch.log10(((test - test.mean(dim=(0, 1, 2, 3))) ** 2).mean()).item()
    print(f"scene {scene.num_cams} cams x {scene.num_frames} frames x {scene.width}x{scene.height}, device "
          f"{args.device}, {args.threads} thread(s); mean-colour baseline PSNR {baseline:.2f} dB")

    # 1. speed at batch 4096, at the demo config's initial and final grids
    for label, extra in (("initial grid", []), ("final grid", ["--N_voxel_init", "262144"])):
        opts = parse_args(["--config", args.config, "--datadir", str(scene_dir), "--batch_size", "4096", *extra])
        torch.manual_seed(0)
        trainer = Trainer(field_from_args(opts, scene), scene, FitSettings.from_args(opts), device=args.device)
        timed_steps(trainer, 2)  # warm-up
        seconds = timed_steps(trainer, args.speed_iters)
        rate = args.speed_iters / seconds
        print(f"batch 4096, {label} {trainer.field.gridSize}, {trainer.n_samples} samples/ray: {rate:.2f} it/s, "
              f"{rate * 4096:,.0f} rays/s")

    # 2. quality over iterations with the demo config
    opts = parse_args(["--config", args.config, "--datadir", str(scene_dir), "--n_iters", str(max(args.checkpoints))])
    torch.manual_seed(0)
    trainer = Trainer(field_from_args(opts, scene), scene, FitSettings.from_args(opts), device=args.device)
    fit_seconds = 0.0
    for target in sorted(args.checkpoints):
        fit_seconds += timed_steps(trainer, target - trainer.iteration)
        psnr = trainer.evaluate(-1, save=False)
        print(f"after {target} iterations (batch {opts.batch_size}, {fit_seconds:.0f} s of fitting): test PSNR "
              f"{psnr:.2f} dB over {scene.num_frames} frames of cam00")

    # 3. full-image render time
    start = time.perf_counter()
    render_image(trainer.field, trainer.sampler, scene, 0, scene.test_cams[0], chunk=opts.chunk)
    seconds = time.perf_counter() - start
    print(f"full-image render {scene.width}x{scene.height}, {trainer.field.n_samples_full} samples/ray: "
          f"{seconds:.2f} s")
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
