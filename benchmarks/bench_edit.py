"""The whole edit (``stream_edit.py``) on the synthetic scene, both schedules, CPU by default.

For each schedule it runs the edit twice: with the tiny random IP2P (real code path: wall time, UNet evaluations per
edited frame, peak memory of the trainer and of each editor process) and with the deterministic colour-shift editor
(``editing.toy_editors``), whose edited dataset is scored against the scene's ground truth:
- cross-view error: mean colour difference of pixels two cameras share (ground-truth depth warp) at every frame,
- temporal error: mean colour difference between consecutive frames along the ground-truth flow (visible pixels),
- error against the unperturbed edit (how far the perturbations leave the result from the "true" edit),
each for the edited dataset and for the edited NeRF's renders of the same views, next to the same editor applied
to every image independently (what the schedules must beat). The trainer's RSS is the benchmark process's peak
(every run so far); each editor's is its own process's peak.

    python benchmarks/bench_edit.py                          # 6 cameras x 8 frames x 160x120, ~15 min on 2 cores
    python benchmarks/bench_edit.py --frames 12 --ckpt log/synthetic/train_demo
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import stream_train  # noqa: E402
from editing.options import parse_edit_args  # noqa: E402
from editing.run import EditRun  # noqa: E402
from editing.toy_editors import ColourShiftEditor  # noqa: E402
from editing.worker import peak_rss_mib  # noqa: E402
from ip2p_models.depth_warp import View, depth_warp  # noqa: E402
from ip2p_models.tiny import build_tiny_ip2p  # noqa: E402
from ip2p_models.warp import warp_by_flow  # noqa: E402
from tools.make_synthetic_scene import make_synthetic_scene  # noqa: E402


def ground_truth(scene_dir: Path) -> dict:
    gt = scene_dir / "gt"
    cameras = np.load(gt / "cameras.npz")
    truth = {"K": torch.from_numpy(cameras["K"]).float(), "c2w": torch.from_numpy(cameras["c2w"]).float()}
    for key in ("depth", "flow_fw", "occ_fw"):
        truth[key] = torch.from_numpy(np.load(gt / f"{key}.npy"))
    return truth


def to_float(store: np.ndarray) -> torch.Tensor:
    """uint8 ``[F, C, H, W, 3]`` -> float ``[F, C, 3, H, W]``."""
    return torch.from_numpy(np.ascontiguousarray(store)).permute(0, 1, 4, 2, 3).float() / 255.0


def cross_view_error(images: torch.Tensor, truth: dict) -> float:
    errors = []
    F, C = images.shape[:2]
    for f in range(F):
        for a in range(C):
            target = View(None, truth["depth"][f, a], truth["K"][a], truth["c2w"][a])
            for b in range(C):
                if a != b:
                    source = View(images[f, b], truth["depth"][f, b], truth["K"][b], truth["c2w"][b])
                    warped, mask = depth_warp(target, source)
                    if mask.any():
                        errors.append(float((warped - images[f, a]).abs().mean(0)[mask].mean()))
    return float(np.mean(errors))


def temporal_error(images: torch.Tensor, truth: dict) -> float:
    errors = []
    for f in range(images.shape[0] - 1):
        for c in range(images.shape[1]):
            warped = warp_by_flow(images[f + 1, c], truth["flow_fw"][f, c])
            visible = ~truth["occ_fw"][f, c].bool()
            errors.append(float((warped - images[f, c]).abs().mean(0)[visible].mean()))
    return float(np.mean(errors))


def independent_edits(originals: torch.Tensor) -> torch.Tensor:
    editor = ColourShiftEditor()
    F, C = originals.shape[:2]
    out = torch.empty_like(originals)
    for f in range(F):
        for c in range(C):
            out[f, c] = editor.edit_sequence(originals[f, c][None], originals[f, c][None], "p", seed=f * C + c)[0]
    return out


@torch.no_grad()
def nerf_renders(run: EditRun) -> torch.Tensor:
    """The edited NeRF's renders of every training view, float ``[F, C, 3, H, W]``."""
    from models import render_image

    scene, trainer = run.scene, run.trainer
    return torch.stack([torch.stack([render_image(trainer.field, trainer.sampler, scene, f, c)["rgb"].permute(2, 0, 1)
                                     for c in range(scene.num_cams)]) for f in range(scene.num_frames)]).cpu()


def scores(images: torch.Tensor, truth: dict, target: torch.Tensor) -> dict:
    return {"cross-view": cross_view_error(images, truth), "temporal": temporal_error(images, truth),
            "vs target": float((images - target).abs().mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_edit")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--ckpt", default=None, help="a NeRF fitted to the same scene (default: fit one, 600 iters)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--schedules", default="keyframe,keyview")
    parser.add_argument("--device", default="cpu")
    opts = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(opts.threads)
    out = opts.out
    scene_dir = out / f"scene_{opts.frames}"
    if not (scene_dir / "gt").is_dir():
        make_synthetic_scene(scene_dir, frames=opts.frames, videos=False)
    train_args = ["--config", str(ROOT / "configs/synthetic/train_demo.txt"), "--datadir", str(scene_dir),
                  "--basedir", str(out / "log"), "--device", opts.device, "--render_test", "0", "--render_path", "0"]
    ckpt = opts.ckpt
    if ckpt is None:
        ckpt = str(out / "log" / "nerf")
        if not list(Path(ckpt).glob("ckpt-*.th")):
            assert stream_train.main(train_args + ["--expname", "nerf", "--n_iters", "600"]) == 0
    tiny = out / "tiny-ip2p"
    if not (tiny / "model_index.json").is_file():
        build_tiny_ip2p(tiny)
    truth = ground_truth(scene_dir)

    rows = []
    originals = None
    for schedule in opts.schedules.split(","):
        for editor in ("tiny-ip2p", "colour-shift"):
            name = f"{schedule}-{editor}"
            run_dir = out / "log" / name
            if run_dir.exists():
                import shutil

                shutil.rmtree(run_dir)
            argv = ["--config", str(ROOT / "configs/synthetic/edit_demo.txt"), "--datadir", str(scene_dir),
                    "--basedir", str(out / "log"), "--expname", name, "--ckpt", ckpt, "--edit_schedule", schedule,
                    "--device", opts.device, "--ip2p_device", opts.device, "--editor_threads", str(opts.threads),
                    "--n_iters", "300", "--post_edit_iters", "100", "--path_views", "5", "--preview_every", "0"]
            argv += ["--ip2p_model", str(tiny)] if editor == "tiny-ip2p" else ["--editor",
                                                                                "editing.toy_editors:colour_shift"]
            start = time.perf_counter()
            run = EditRun(parse_edit_args(argv))
            assert run.run() == 0, name
            wall = time.perf_counter() - start
            edited = np.load(run_dir / "edited_images.npy")
            F, C = edited.shape[:2]
            evals = [s["unet_evals"] for s in run.editor_stats if s.get("unet_evals") is not None]
            row = {"run": name, "wall s": wall, "NeRF iters": run.trainer.iteration,
                   "UNet evals/frame": sum(evals) / (F * C) if evals else float("nan"),
                   "trainer RSS MiB": peak_rss_mib(),
                   "editor RSS MiB": max((s["peak_rss_mib"] for s in run.editor_stats), default=float("nan"))}
            rows.append(row)
            if editor == "colour-shift":
                if originals is None:
                    originals = to_float(run.scene.original.numpy())
                target = ColourShiftEditor.target(originals)
                row.update(scores(to_float(edited), truth, target))
                rows.append({"run": f"  {name}: edited NeRF's renders", **scores(nerf_renders(run), truth, target)})
            print(rows[-1], flush=True)
    independent = independent_edits(originals)
    target = ColourShiftEditor.target(originals)
    rows.append({"run": "independent per-image edits (colour-shift)", **scores(independent, truth, target)})
    rows.append({"run": "unperturbed edit (floor of the metric)", **scores(target, truth, target)})
    columns = ["run", "wall s", "NeRF iters", "UNet evals/frame", "trainer RSS MiB", "editor RSS MiB", "cross-view",
               "temporal", "vs target"]
    print(f"\nscene: 6 cameras x {opts.frames} frames x 160x120; edit_demo.txt settings; {opts.threads} thread(s) "
          f"per process; device {opts.device}")
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(f"{row[c]:.4g}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns))


if __name__ == "__main__":
    main()
