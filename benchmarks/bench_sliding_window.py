"""Which flow-guided sliding window edits a camera's frames more consistently over time?

Two ways to fill a window's new frames before the anchor-aware refinement were written in this project:
- ``chain``: each new frame is warped from its predecessor's fill (short-range flow, frame to frame); what
  ``ip2p_models.sliding_window`` does now (and ``stream_edit.py`` always did);
- ``last``: every new frame is warped straight from the last edited frame (long-range flow); the routine the
  ``test_flow_sequence.py`` demo used to run, kept here only for this comparison.
Both use the same windows (``--sequence_length``, overlap 1), editor, seeds and refinement, on one camera of the
synthetic scene; the score is the temporal warp error with ground-truth flow (``editing/evaluation.py``), beside
per-frame editing and the original frames.

    python benchmarks/bench_sliding_window.py --ip2p_model weights/mini-ip2p      # ~2 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dataloader import load_scene  # noqa: E402
from dataloader.synthetic_render import make_synthetic_scene  # noqa: E402
from editing.evaluation import ground_truth_flow, temporal_warp_errors  # noqa: E402
from ip2p_models.flow import make_flow  # noqa: E402
from ip2p_models.sliding_window import RefineSettings, plan_windows, sliding_window_edit  # noqa: E402
from ip2p_models.warp import fill_from_warp, propagate_by_flow  # noqa: E402


def edit_last(editor, originals, prompt, flow, *, sequence_length, seed, **edit):
    """The ``last`` variant: new frames warped from the last edited frame, then refined with it as the anchor."""
    edited = originals.clone()
    for index, (window, new) in enumerate(plan_windows(len(originals), sequence_length, 1)):
        cond = originals[window]
        if index == 0:
            edited[window] = editor.edit_sequence(cond.clone(), cond, prompt, T=1000, init="noise", seed=seed,
                                                  guidance_scale=edit["guidance_scale"],
                                                  image_guidance_scale=edit["image_guidance_scale"],
                                                  diffusion_steps=edit["diffusion_steps"]).float()
            continue
        last = new[0] - 1
        filled = edited[window].clone()
        for k in new:
            warped, mask = propagate_by_flow(edited[last], originals[last], originals[k], flow,
                                             photometric_threshold=edit["photometric_threshold"])
            filled[window.index(k)] = fill_from_warp(originals[k], warped, mask)
        out = editor.edit_sequence(filled, cond, prompt, T=edit["refine_num_steps"], init="noisy_latent",
                                   seed=seed + index, guidance_scale=edit["guidance_scale"],
                                   image_guidance_scale=edit["image_guidance_scale"],
                                   diffusion_steps=edit["refine_diffusion_steps"]).float()
        edited[new] = out[len(window) - len(new):]
    return edited


def to_store(frames: torch.Tensor) -> np.ndarray:
    """``[F, 3, H, W]`` float -> uint8 ``[F, 1, H, W, 3]`` (what the evaluation reads)."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)[:, None].numpy()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ip2p_model", default=str(ROOT / "weights" / "mini-ip2p"))
    parser.add_argument("--prompt", default="make it snowy")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--cams", type=int, nargs="+", default=[0, 3], help="cameras of the scene to edit")
    parser.add_argument("--sequence_length", type=int, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--flow", default="dis", help="flow the windows warp with (dis or raft)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_sliding_window")
    opts = parser.parse_args(argv)

    from ip2p_models import load_ip2p

    scene_dir = opts.out / "scene"
    if not (scene_dir / "gt").is_dir():
        make_synthetic_scene(scene_dir, cams=6, frames=opts.frames, videos=False)
    scene = load_scene("synthetic", scene_dir)
    truth = ground_truth_flow(scene.gt)
    editor = load_ip2p(opts.ip2p_model, device="cpu", full_precision=True, sequence_length=opts.sequence_length)
    flow = make_flow(opts.flow, None, device="cpu")
    edit = dict(guidance_scale=7.5, image_guidance_scale=1.5, diffusion_steps=20, refine_num_steps=600,
                refine_diffusion_steps=4, photometric_threshold=0.05)

    def score(frames_by_cam: dict[int, torch.Tensor]) -> float:
        return float(np.nanmean([temporal_warp_errors(to_store(f), _one_cam(truth, cam)).mean()
                                 for cam, f in frames_by_cam.items()]))

    rows = {}
    originals = {cam: scene.original[:, cam].permute(0, 3, 1, 2).float() / 255 for cam in opts.cams}
    rows["original frames"] = (score(originals), 0.0)
    variants = {
        "chain (kept)": lambda o, seed: sliding_window_edit(editor, o, opts.prompt, flow,
                                                             sequence_length=opts.sequence_length, seed=seed,
                                                             settings=RefineSettings(**edit)),
        "last": lambda o, seed: edit_last(editor, o, opts.prompt, flow, sequence_length=opts.sequence_length,
                                          seed=seed, **edit),
        "per frame": lambda o, seed: torch.cat([editor.edit_sequence(o[i:i + 1], o[i:i + 1], opts.prompt,
                                                                     T=1000, init="noise", seed=seed + i,
                                                                     guidance_scale=7.5, image_guidance_scale=1.5,
                                                                     diffusion_steps=20).float()
                                                for i in range(len(o))]),
    }
    for name, run in variants.items():
        errors, start = [], time.monotonic()
        for seed in opts.seeds:
            errors.append(score({cam: run(o, seed) for cam, o in originals.items()}))
        rows[name] = (float(np.mean(errors)), (time.monotonic() - start) / len(opts.seeds))
        print(f"{name}: temporal error {rows[name][0]:.4f} ({', '.join(f'{e:.4f}' for e in errors)})", flush=True)

    print(f"\nSynthetic scene, {opts.frames} frames, cameras {opts.cams}, windows of {opts.sequence_length} "
          f"(overlap 1), {opts.flow} flow, \"{opts.prompt}\" with {Path(opts.ip2p_model).name}, seeds {opts.seeds}; "
          "temporal warp error with ground-truth flow (mean |I_t - warp(I_t+1)|, [0, 1] scale):\n")
    print("| frames | temporal error | s per camera |\n|---|--:|--:|")
    for name, (error, seconds) in rows.items():
        print(f"| {name} | {error:.4f} | {seconds / len(opts.cams):.1f} |")


def _one_cam(truth, cam: int):
    """The ground-truth flow of one scene camera, indexed as camera 0 (the frames scored are one camera's)."""
    from editing.evaluation import TemporalFlow

    return TemporalFlow(lambda t, c: truth.pair(t, cam), truth.source)


if __name__ == "__main__":
    main()
