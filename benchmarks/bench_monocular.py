"""Monocular captures: fitting (fast vs dense sampling) and the monocular edit against per-frame editing.

On the synthetic monocular capture (``tools/make_synthetic_scene.py --monocular``: one camera moving through the
built-in scene, 24 frames at 160x120, two static validation cameras never fitted):
1. fits ``configs/synthetic/train_monocular.txt`` with ``--sampling fast`` and ``--sampling dense``: wall time,
   s/iteration and the validation cameras' PSNR;
2. edits the fast fit with the mini InstructPix2Pix (``configs/synthetic/edit_monocular.txt``) with the
   ``monocular`` schedule and with ``perframe``, each scored by ``tools/evaluate_edit.py`` (ground-truth flow):
   temporal warp error of the edited images and of the edited NeRF's renders of the moving camera.

    python benchmarks/bench_monocular.py                  # ~25 min on 2 CPU cores
    python benchmarks/bench_monocular.py --n_iters 600 --skip_edit
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import stream_train  # noqa: E402
from dataloader.synthetic_render import make_monocular_capture  # noqa: E402
from editing.edit_report import EvalOptions, evaluate_run  # noqa: E402
from editing.options import parse_edit_args  # noqa: E402
from editing.run import EditRun  # noqa: E402


def fit(sampling: str, scene: Path, out: Path, n_iters: int) -> dict:
    run = out / "log" / f"fit_{sampling}"
    shutil.rmtree(run, ignore_errors=True)
    start = time.perf_counter()
    assert stream_train.main(["--config", str(ROOT / "configs/synthetic/train_monocular.txt"), "--datadir", str(scene),
                              "--basedir", str(out / "log"), "--expname", run.name, "--sampling", sampling,
                              "--n_iters", str(n_iters), "--render_path", "0", "--N_vis", "1",
                              "--vis_every", str(10 * n_iters)]) == 0
    wall = time.perf_counter() - start
    psnr = {line.split()[0]: float(line.split()[1]) for line in (run / "imgs_test_all" / "mean.txt").read_text()
            .splitlines()}
    return {"sampling": sampling, "wall_s": wall, "s_per_it": wall / n_iters, "psnr": psnr, "run": run}


def edit(schedule: str, scene: Path, ckpt: Path, out: Path, opts) -> dict:
    run_dir = out / "log" / f"edit_{schedule}"
    shutil.rmtree(run_dir, ignore_errors=True)
    argv = ["--config", str(ROOT / "configs/synthetic/edit_monocular.txt"), "--datadir", str(scene), "--basedir",
            str(out / "log"), "--expname", run_dir.name, "--ckpt", str(ckpt), "--edit_schedule", schedule,
            "--prompt", opts.prompt, "--ip2p_model", opts.ip2p_model, "--preview_every", "0", "--path_views", "2",
            "--n_iters", str(opts.edit_iters), "--post_edit_iters", "100"]
    start = time.perf_counter()
    assert EditRun(parse_edit_args(argv)).run() == 0, schedule
    wall = time.perf_counter() - start
    report = evaluate_run(run_dir, EvalOptions(reference=str(ckpt), renders="all"))
    return {"schedule": schedule, "wall_s": wall, "rows": report["rows"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_monocular")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--n_iters", type=int, default=1500, help="fitting iterations (the config's)")
    parser.add_argument("--edit_iters", type=int, default=300, help="NeRF iterations of each edit (at least)")
    parser.add_argument("--ip2p_model", default=str(ROOT / "weights" / "mini-ip2p"))
    parser.add_argument("--prompt", default="make it snowy")
    parser.add_argument("--skip_edit", action="store_true")
    parser.add_argument("--samplings", default="fast,dense")
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    scene = opts.out / "capture"
    if not (scene / "gt").is_dir():
        make_monocular_capture(scene, frames=opts.frames)

    fits = [fit(s, scene, opts.out, opts.n_iters) for s in opts.samplings.split(",")]
    print(f"\nSynthetic monocular capture, {opts.frames} frames at 160x120, {opts.n_iters} iterations "
          "(configs/synthetic/train_monocular.txt):\n")
    print("| sampling | wall s | s / iteration | validation PSNR cam01 | cam02 |\n|---|--:|--:|--:|--:|")
    for f in fits:
        cam01, cam02 = (f["psnr"].get(c, float("nan")) for c in ("cam01", "cam02"))
        print(f"| {f['sampling']} | {f['wall_s']:.0f} | {f['s_per_it']:.3f} | {cam01:.2f} | {cam02:.2f} |")
    if opts.skip_edit:
        return
    ckpt = sorted(fits[0]["run"].glob("ckpt-*.th"))[-1]
    edits = [edit(s, scene, ckpt, opts.out, opts) for s in ("monocular", "perframe")]
    print(f"\nEdit \"{opts.prompt}\" with {Path(opts.ip2p_model).name} (ground-truth flow; the moving camera):\n")
    print("| schedule | dataset temporal error | renders temporal error | PSNR vs original | wall s |\n"
          "|---|--:|--:|--:|--:|")
    floor = edits[0]["rows"]["original frames"]
    print(f"| original frames (floor) | {floor['temporal_error']:.4f} | | | |")
    for e in edits:
        d, r = e["rows"]["edited dataset"], e["rows"].get("edited NeRF", {})
        print(f"| {e['schedule']} | {d['temporal_error']:.4f} | {r.get('temporal_error', float('nan')):.4f} | "
              f"{d['psnr_vs_original']:.2f} | {e['wall_s']:.0f} |")


if __name__ == "__main__":
    main()
