"""What each part of the method buys: the same edit with parts switched off, scored by ``tools/evaluate_edit.py``.

On the built-in synthetic scene (6 cameras x 12 frames x 160x120) with the mini InstructPix2Pix and one
instruction, one row per variant, every row with the same NeRF settings (the demo's edit config):
1. ``perframe``: every training image edited alone, iterative dataset update (the paper's IN2N-4D baseline);
2. ``anchor``: anchor-aware batches per camera only (no flow, no depth);
3. ``keyframe``: the key-frame schedule (the release's);
4. ``keyview``: the key-view schedule (the paper's);
5. the better of 3 and 4 (lower dataset errors) with ``--edit_rounds 2``.
Floors: the original frames and the original NeRF's renders. Columns: temporal and cross-view error of the edited
dataset and of the edited NeRF's renders, preservation (PSNR vs original), fidelity (PSNR vs the procedural target),
UNet evaluations per output frame, NeRF iterations and wall time. Ground-truth flow and depth score the errors.

    python benchmarks/bench_ablation.py                          # ~30 min on 2 CPU cores
    python benchmarks/bench_ablation.py --prompt "make it night" --rows perframe,keyframe
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import stream_train  # noqa: E402
from editing.edit_report import EvalOptions, evaluate_run  # noqa: E402
from editing.options import parse_edit_args  # noqa: E402
from editing.run import EditRun  # noqa: E402
from tools.make_synthetic_scene import make_synthetic_scene  # noqa: E402

VARIANTS = {"perframe": ["--edit_schedule", "perframe"], "anchor": ["--edit_schedule", "anchor"],
            "keyframe": ["--edit_schedule", "keyframe"], "keyview": ["--edit_schedule", "keyview"]}


def run_variant(name: str, extra: list[str], opts, scene_dir: Path, ckpt: Path, out: Path) -> dict:
    """One edit run, then its scores; returns the table row."""
    run_dir = out / "log" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    argv = ["--config", str(ROOT / "configs/synthetic/edit_demo.txt"), "--datadir", str(scene_dir),
            "--basedir", str(out / "log"), "--expname", name, "--ckpt", str(ckpt), "--prompt", opts.prompt,
            "--ip2p_model", opts.ip2p_model, "--editor_threads", str(opts.threads), "--path_views", "3",
            "--preview_every", "0", "--n_iters", str(opts.n_iters), "--post_edit_iters", str(opts.post_edit_iters),
            *extra]
    start = time.perf_counter()
    run = EditRun(parse_edit_args(argv))
    assert run.run() == 0, name
    wall = time.perf_counter() - start
    evals = sum(s["unet_evals"] for s in run.editor_stats if s.get("unet_evals") is not None)
    frames = run.scene.num_frames * run.scene.num_cams
    report = evaluate_run(run_dir, EvalOptions(reference=str(ckpt), renders="all"))
    rows = report["rows"]
    return {"variant": name, "report": report, "dataset": rows["edited dataset"], "renders": rows["edited NeRF"],
            "unet_evals_per_frame": evals / frames, "nerf_iters": run.trainer.iteration, "wall_s": wall}


def fmt(value, digits=4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def print_table(rows: list[dict], floors: dict) -> str:
    head = ("| variant | dataset temporal ↓ | dataset cross-view ↓ | renders temporal ↓ | renders cross-view ↓ | "
            "PSNR vs original | fidelity dataset / renders ↑ | UNet evals / frame | NeRF iters | wall s |")
    lines = [head, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    o, n = floors["original frames"], floors.get("original NeRF")
    lines.append(f"| original frames (floor) | {fmt(o['temporal_error'])} | {fmt(o['cross_view_error'])} |"
                 + " |" * 7)
    if n is not None:
        lines.append(f"| original NeRF (floor) | | | {fmt(n['temporal_error'])} | {fmt(n['cross_view_error'])} |"
                     + " |" * 5)
    for r in rows:
        d, q = r["dataset"], r["renders"]
        lines.append(f"| {r['variant']} | {fmt(d['temporal_error'])} | {fmt(d['cross_view_error'])} | "
                     f"{fmt(q['temporal_error'])} | {fmt(q['cross_view_error'])} | {fmt(d['psnr_vs_original'], 2)} | "
                     f"{fmt(d['fidelity_psnr'], 2)} / {fmt(q['fidelity_psnr'], 2)} | "
                     f"{r['unet_evals_per_frame']:.1f} | {r['nerf_iters']} | {r['wall_s']:.0f} |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def goals(rows: list[dict], floors: dict) -> list[str]:
    """The issue's goals for rows 3-5, each as a line saying met or not and by how much."""
    by = {r["variant"]: r for r in rows}
    base = by.get("perframe")
    o, n = floors["original frames"], floors.get("original NeRF")
    out = []
    for r in rows:
        if r["variant"] in ("perframe", "anchor") or base is None:
            continue
        d, q = r["dataset"], r["renders"]
        for key, label in (("temporal_error", "temporal"), ("cross_view_error", "cross-view")):
            ratio = base["dataset"][key] / max(d[key], 1e-9)
            floor_ratio = d[key] / max(o[key], 1e-9)
            out.append(f"{r['variant']}: dataset {label} error {ratio:.1f}x lower than perframe (goal >= 5x: "
                       f"{'met' if ratio >= 5 else 'NOT met'}), {floor_ratio:.2f}x the original frames' (goal <= 2x: "
                       f"{'met' if floor_ratio <= 2 else 'NOT met'})")
        if n is not None:
            ratio = q["temporal_error"] / max(n["temporal_error"], 1e-9)
            out.append(f"{r['variant']}: renders' temporal error {ratio:.2f}x the original NeRF's (goal <= 1.5x: "
                       f"{'met' if ratio <= 1.5 else 'NOT met'})")
        if isinstance(d["fidelity_psnr"], float):
            gap = base["dataset"]["fidelity_psnr"] - d["fidelity_psnr"]
            out.append(f"{r['variant']}: fidelity {gap:+.2f} dB below perframe (goal <= 1 dB: "
                       f"{'met' if gap <= 1 else 'NOT met'})")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_ablation")
    parser.add_argument("--ip2p_model", default=str(ROOT / "weights" / "mini-ip2p"))
    parser.add_argument("--prompt", default="make it snowy")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--datadir", type=Path, default=None,
                        help="an existing synthetic scene (e.g. data/synthetic/demo, with --ckpt log/synthetic/"
                             "train_demo); default: render one under --out")
    parser.add_argument("--ckpt", default=None, help="a NeRF fitted to the scene (default: fit one, demo config)")
    parser.add_argument("--n_iters", type=int, default=600, help="NeRF iterations of every edit (at least)")
    parser.add_argument("--post_edit_iters", type=int, default=100, help="NeRF iterations after the editor ends")
    parser.add_argument("--rows", default="perframe,anchor,keyframe,keyview,rounds2")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per editor process")
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    out = opts.out
    scene_dir = opts.datadir or out / f"scene_{opts.frames}"
    if not (scene_dir / "gt").is_dir():
        make_synthetic_scene(scene_dir, frames=opts.frames, videos=False)
    ckpt = Path(opts.ckpt) if opts.ckpt else out / "log" / "nerf"
    if not list(ckpt.glob("ckpt-*.th")) and not ckpt.is_file():
        assert stream_train.main(["--config", str(ROOT / "configs/synthetic/train_demo.txt"), "--datadir",
                                  str(scene_dir), "--basedir", str(out / "log"), "--expname", "nerf",
                                  "--render_test", "0", "--render_path", "0"]) == 0
    wanted = opts.rows.split(",")
    rows, floors = [], {}
    for name in [v for v in wanted if v in VARIANTS]:
        row = run_variant(name, VARIANTS[name], opts, scene_dir, ckpt, out)
        floors = {k: v for k, v in row["report"]["rows"].items() if k.startswith("original")}
        rows.append(row)
        print(f"{name}: dataset temporal {row['dataset']['temporal_error']:.4f}, cross-view "
              f"{row['dataset']['cross_view_error']:.4f}, {row['wall_s']:.0f} s", flush=True)
    if "rounds2" in wanted:
        schedules = [r for r in rows if r["variant"] in ("keyframe", "keyview")]
        best = min(schedules, key=lambda r: r["dataset"]["temporal_error"] + r["dataset"]["cross_view_error"])
        rows.append(run_variant(f"{best['variant']}-rounds2", VARIANTS[best["variant"]] + ["--edit_rounds", "2"],
                                opts, scene_dir, ckpt, out))
    print(f"\nprompt {opts.prompt!r}, {opts.ip2p_model}, scene 6 cameras x {opts.frames} frames x 160x120, "
          f"configs/synthetic/edit_demo.txt, ground-truth flow and depth\n")
    table = print_table(rows, floors)
    lines = goals(rows, floors)
    print("\n" + "\n".join(lines))
    summary = {"rows": [{k: v for k, v in r.items() if k != "report"} for r in rows], "floors": floors,
               "table": table, "goals": lines}
    (out / "ablation.json").write_text(json.dumps(summary, indent=1, default=float))


if __name__ == "__main__":
    main()
