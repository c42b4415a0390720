"""Fitting speed and quality of the 4D NeRF: dense (the release's sampling) against fast (occupancy grid plus
importance-sampled training batches).

For every scene (``default``: the synthetic demo scene, 6 cameras x 12 frames x 160x120, with the demo config's
32^3 -> 64^3 grid and step of one voxel, 57 -> 114 samples per ray; ``large``: 6 cameras x 16 frames x 192x144 with
the release's 64^3 -> 128^3 grid and half-voxel step, 221 -> 443 samples per ray) and every sampling mode, fits the
demo config (``configs/synthetic/train_demo.txt``, its schedules and batch) from the same seed and prints:
- seconds per iteration over the whole fit (demo batch) and at batch 4096 from the fitted model;
- test PSNR (camera 0, ``--eval_frames`` frames) every ``--eval_every`` iterations (``--eval_tail`` times as often
  over the last ``--eval_every``) against fitting wall time (evaluation time excluded), plotted to
  ``{out}/psnr_vs_time_{scene}.png``;
- the wall time each mode needs to reach the test PSNR dense mode reaches at its final iteration;
- PSNR between the fast and dense renders of the same fitted model (how closely fast mode matches dense);
- full-image render seconds per frame of each fitted model with the dense and the fast sampler, and of its checkpoint
  loaded again (what ``--render_only 1`` does), the PSNR between the fast and dense renders, and the whole fit +
  test render time of each mode (goals: renders >= 5x faster than dense, fit + render >= 10x, renders within
  45 dB); peak RSS.

    python benchmarks/bench_train.py --compare dense,fast                 # CPU, 1 thread, both scenes (~40 min)
    python benchmarks/bench_train.py --compare dense,fast --scenes default --n_iters 600
    python benchmarks/bench_train.py --compare dense,fast --device cuda:0 --threads 4
    python benchmarks/bench_train.py --compare dense,fast,fast:n_iters=420 --scenes large --n_iters 500 \\
        --batch_size 4096 --upsamp_list 100 200 --eval_every 125 --eval_tail 2 --eval_frames 2 --threads 2
        # the release's batch (4096) for 500 iterations; fast mode also for 420, where it still ends above dense's
        # final PSNR (its whole fit + test render at equal or better PSNR); ~25 min
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dataloader import load_scene  # noqa: E402
from models import FitSettings, Trainer, build_sampler, field_from_args, render_image  # noqa: E402
from models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from models.config import parse_args  # noqa: E402
from tools.make_synthetic_scene import make_synthetic_scene  # noqa: E402

SCENES = {"default": {"cams": 6, "frames": 12, "width": 160, "height": 120},
          "large": {"cams": 6, "frames": 16, "width": 192, "height": 144}}
# config options on top of --config, per scene: the large scene uses the release's grid (64^3 -> 128^3 voxels) and
# step (half a voxel), about 440 samples per ray at the end, the setting the 5x goal of fast fitting was set for
GRID = {"default": [],
        "large": ["--N_voxel_init", str(64**3), "--N_voxel_final", str(128**3), "--step_ratio", "0.5"]}


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux/macOS ``ru_maxrss``; current RSS elsewhere)."""
    try:
        import resource

        scale = 1024 if sys.platform != "darwin" else 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / scale / 1024
    except ImportError:
        return psutil.Process().memory_info().rss / 2**20


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10.0 * math.log10(max(torch.mean((a - b) ** 2).item(), 1e-20))


def test_psnr(trainer: Trainer, frames: list[int]) -> float:
    """Mean PSNR of the test cameras at ``frames`` (rendered with the trainer's own sampler)."""
    scene, values = trainer.scene, []
    for cam in scene.test_cams:
        for frame in frames:
            out = render_image(trainer.field, trainer.sampler, scene, frame, cam, chunk=trainer.settings.chunk)
            values.append(psnr(out["rgb"].cpu(), scene.image(frame, cam)))
    return sum(values) / len(values)


def time_to_reach(curve: list[tuple[int, float, float]], target: float) -> float | None:
    """First fitting time at which the curve ``(iteration, seconds, psnr)`` reaches ``target`` (linear in between)."""
    previous = None
    for _, seconds, value in curve:
        if value >= target:
            if previous is None or previous[1] >= value:
                return seconds
            share = (target - previous[1]) / (value - previous[1])
            return previous[0] + share * (seconds - previous[0])
        previous = (seconds, value)
    return None


def fit_curve(scene, scene_dir: Path, mode: str, args, name: str) -> dict:
    """Fit the demo config in ``mode`` with test evaluations; returns the curve and timings."""
    sampling, *options = mode.split(":")  # e.g. fast:importance_polish=0.015
    extra = [part for option in options for part in (f"--{option.partition('=')[0]}", option.partition("=")[2])]
    schedule = [*(["--batch_size", str(args.batch_size)] if args.batch_size else []),
                *(part for it in args.upsamp_list or () for part in ("--upsamp_list", str(it)))]
    opts = parse_args(["--config", args.config, "--datadir", str(scene_dir), "--n_iters", str(args.n_iters),
                       "--sampling", sampling, "--device", args.device, *GRID[name], *schedule, *extra])
    torch.manual_seed(0)
    trainer = Trainer(field_from_args(opts, scene), scene, FitSettings.from_args(opts), device=args.device,
                      tensorboard=False)
    step = max(scene.num_frames // args.eval_frames, 1)
    frames = list(range(0, scene.num_frames, step))[: args.eval_frames]
    curve, seconds = [(0, 0.0, test_psnr(trainer, frames))], 0.0
    # every eval_every iterations, and eval_tail times as often over the last eval_every (where a fast mode's curve
    # crosses dense's final PSNR, so that the time to reach it is not an interpolation over a long interval)
    n_iters = opts.n_iters  # a mode may fit for another count (fast:n_iters=330: its time to dense's PSNR)
    tail_start = max(0, n_iters - args.eval_every)
    marks = sorted({*range(args.eval_every, n_iters, args.eval_every), n_iters,
                    *range(tail_start, n_iters, max(1, args.eval_every // max(1, args.eval_tail)))} - {0})
    for mark in marks:
        n = mark - trainer.iteration
        synchronize(trainer.device)
        start = time.perf_counter()
        for _ in range(n):
            trainer.step()
        synchronize(trainer.device)
        seconds += time.perf_counter() - start
        curve.append((trainer.iteration, seconds, test_psnr(trainer, frames)))
        print(f"  {mode:5s} it {trainer.iteration:5d}  {seconds:7.1f} s  test PSNR {curve[-1][2]:.2f} dB", flush=True)
    return {"trainer": trainer, "curve": curve, "seconds": seconds, "frames": frames, "opts": opts}


def seconds_per_iteration_4096(trainer: Trainer, n: int) -> float:
    """Seconds per step at batch 4096, continuing from the fitted field on a copy of the trainer's state."""
    settings = FitSettings(**{**vars(trainer.settings), "batch_size": 4096})
    probe = Trainer(trainer.field, trainer.scene, settings, device=trainer.device, tensorboard=False,
                    start_iteration=trainer.iteration - 1)
    state = {k: v.detach().clone() for k, v in trainer.field.state_dict().items()}
    probe.step()  # warm-up (and the occupancy grid)
    synchronize(probe.device)
    start = time.perf_counter()
    for _ in range(n):
        probe.step()
    synchronize(probe.device)
    seconds = (time.perf_counter() - start) / n
    trainer.field.load_state_dict(state)
    return seconds


def render_speeds(trainer: Trainer, frames: list[int], ckpt: Path) -> dict:
    """Render seconds per frame of the fitted field (dense and fast samplers; its own sampler's), of its checkpoint
    loaded again with a fresh fast sampler (``--render_only``), and the lowest PSNR between fast and dense renders."""
    scene, cam, chunk = trainer.scene, trainer.scene.test_cams[0], trainer.settings.chunk

    def timed(field, sampler) -> tuple[float, list[torch.Tensor]]:
        images, start = [], time.perf_counter()
        for frame in frames:
            images.append(render_image(field, sampler, scene, frame, cam, chunk=chunk)["rgb"].cpu())
        synchronize(trainer.device)
        return (time.perf_counter() - start) / len(frames), images

    timed(trainer.field, build_sampler("fast", scene.ndc))  # warm-up (allocator, first volume)
    dense_s, dense_images = timed(trainer.field, build_sampler("dense", scene.ndc))
    fast_s, fast_images = timed(trainer.field, build_sampler("fast", scene.ndc))
    save_checkpoint(trainer.field, ckpt)
    loaded, _ = load_checkpoint(ckpt, device=trainer.device)
    loaded_s, _ = timed(loaded, build_sampler("fast", scene.ndc))
    ckpt.unlink()
    own_s = dense_s if trainer.settings.sampling == "dense" else fast_s
    return {"dense_s": dense_s, "fast_s": fast_s, "loaded_s": loaded_s, "own_s": own_s,
            "fast_vs_dense_psnr": min(psnr(a, b) for a, b in zip(fast_images, dense_images))}


def plot(results: dict, target: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for mode, result in results.items():
        xs = [c[1] for c in result["curve"]]
        ys = [c[2] for c in result["curve"]]
        ax.plot(xs, ys, marker="o", markersize=3, label=f"{mode} ({result['seconds']:.0f} s)")
    ax.axhline(target, color="gray", linestyle="--", linewidth=0.8, label=f"dense final {target:.2f} dB")
    ax.set_xlabel("fitting wall time (s)")
    ax.set_ylabel("test PSNR (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def bench_scene(name: str, args) -> dict:
    spec = SCENES[name]
    scene_dir = Path(args.scene_root) / f"{name}_{spec['cams']}x{spec['frames']}_{spec['width']}x{spec['height']}"
    if not (scene_dir / "poses_bounds.npy").exists():
        make_synthetic_scene(scene_dir, videos=False, **spec)
    scene = load_scene("synthetic", scene_dir, ndc=True)
    print(f"\n== scene {name}: {scene.num_cams} cams x {scene.num_frames} frames x {scene.width}x{scene.height}, "
          f"device {args.device}, {args.threads} thread(s), {args.n_iters} iterations (unless a mode sets its own) of "
          f"{Path(args.config).name}")
    results = {mode: fit_curve(scene, scene_dir, mode, args, name) for mode in args.compare}
    reference = "dense" if "dense" in results else args.compare[0]
    target = results[reference]["curve"][-1][2]

    rows = {}
    for mode, result in results.items():
        trainer = result["trainer"]
        reach = time_to_reach(result["curve"], target)
        per_it = result["seconds"] / result["opts"].n_iters
        it4096 = seconds_per_iteration_4096(trainer, args.speed_iters)
        renders = render_speeds(trainer, result["frames"], Path(args.out) / f"ckpt_{name}_{mode}.th")
        # the whole job: the fit, then the test render of every test camera at every frame (at the mode's speed)
        test_views = len(scene.test_cams) * scene.num_frames
        rows[mode] = {"s_per_it": per_it, "s_per_it_4096": it4096, "final_psnr": result["curve"][-1][2],
                      "reach_s": reach, "fit_s": result["seconds"], "render_s": renders["own_s"],
                      "whole_s": result["seconds"] + test_views * renders["own_s"], **renders}
        grid = getattr(trainer.sampler, "grid", None)
        if grid is not None:
            rows[mode]["occupied"] = grid.fraction

    png = Path(args.out) / f"psnr_vs_time_{name}.png"
    plot(results, target, png, f"{name}: {scene.num_cams} cams x {scene.num_frames} frames x "
                                f"{scene.width}x{scene.height}, {args.device}")
    base = rows[reference]
    print(f"\n{name} scene: target = {reference} final test PSNR {target:.2f} dB")
    print("| mode | s/it (batch {b}) | s/it (batch 4096) | fit s | final PSNR | s to reach target | speed-up to "
          "target | render s | fast-vs-dense render PSNR | occupied |".format(b=results[reference]["opts"].batch_size))
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for mode, row in rows.items():
        reach = f"{row['reach_s']:.0f}" if row["reach_s"] is not None else "not reached"
        speedup = (f"{base['reach_s'] / row['reach_s']:.1f}x" if row["reach_s"] and base["reach_s"] else "-")
        match = f"{row['fast_vs_dense_psnr']:.1f} dB"
        occupied = f"{100 * row['occupied']:.0f}%" if "occupied" in row else "-"
        print(f"| {mode} | {row['s_per_it']:.3f} | {row['s_per_it_4096']:.3f} | {row['fit_s']:.0f} | "
              f"{row['final_psnr']:.2f} | {reach} | {speedup} | {row['render_s']:.2f} | {match} | {occupied} |")
    print(f"\n{name} scene renders ({scene.width}x{scene.height}, test camera, frames {results[reference]['frames']}):"
          " s/frame of the fitted model with the dense (release) and fast samplers, of its checkpoint loaded into a "
          "fresh process state (fast, grid built from the checkpoint, first frame included), and the PSNR between "
          "the fast and dense renders")
    print("| fitted in mode | dense s/frame | fast s/frame | render speed-up | loaded checkpoint fast s/frame | "
          "fast vs dense PSNR (min) | fit + test render s | vs dense mode |")
    print("| --- | --: | --: | --: | --: | --: | --: | --: |")
    for mode, row in rows.items():
        print(f"| {mode} | {row['dense_s']:.2f} | {row['fast_s']:.2f} | {row['dense_s'] / row['fast_s']:.1f}x | "
              f"{row['loaded_s']:.2f} | {row['fast_vs_dense_psnr']:.1f} dB | {row['whole_s']:.0f} | "
              f"{base['whole_s'] / row['whole_s']:.1f}x |")
    print(f"plot: {png}")
    curves = {mode: result["curve"] for mode, result in results.items()}
    return {"rows": rows, "curves": curves, "target": target, "png": str(png)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", default="dense,fast",
                        help="sampling modes to compare, comma-separated; a mode may set fitting options, "
                             "e.g. fast:importance_polish=0.015:importance_fine=0.1, or its own iteration count "
                             "(fast:n_iters=420: its schedules, the learning-rate decay and the polish, over those "
                             "iterations; upsamplings after it do not happen). A list option given this way is "
                             "appended to --upsamp_list's")
    parser.add_argument("--scenes", default="default,large", help=f"scenes, comma-separated: {sorted(SCENES)}")
    parser.add_argument("--scene_root", default=str(ROOT / "benchmarks" / "out" / "train"),
                        help="where the synthetic scenes are made (once)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "synthetic" / "train_demo.txt"))
    parser.add_argument("--n_iters", type=int, default=1500, help="fitting iterations per mode")
    parser.add_argument("--batch_size", type=int, default=0, help="rays per iteration of every mode; 0: the config's")
    parser.add_argument("--upsamp_list", type=int, nargs="+", help="grid upsampling iterations of every mode (the "
                                                                   "config's by default)")
    parser.add_argument("--eval_every", type=int, default=150, help="test evaluation period in iterations")
    parser.add_argument("--eval_tail", type=int, default=5, help="evaluations per eval_every over the last eval_every "
                                                                  "iterations")
    parser.add_argument("--eval_frames", type=int, default=4, help="test frames per evaluation")
    parser.add_argument("--speed_iters", type=int, default=5, help="timed iterations at batch 4096")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench_train"), help="plots and results.json")
    args = parser.parse_args(argv)
    args.compare = [m.strip() for m in args.compare.split(",") if m.strip()]
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    out = {name: bench_scene(name, args) for name in (s.strip() for s in args.scenes.split(",")) if name}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(out, indent=1))
    print(f"\npeak RSS {peak_rss_mib():.0f} MiB; results in {Path(args.out) / 'results.json'}")


if __name__ == "__main__":
    main()
