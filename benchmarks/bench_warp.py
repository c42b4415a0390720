"""Flow and depth warping on the synthetic scene: accuracy against ground truth and time per pair.

For each size (the default scene and 4x its pixels):
- flow: end-point error on non-occluded pixels and time per frame pair, for DIS and, with ``--raft_ckpt``, RAFT;
  plus the PSNR of the warped next frame on the pixels the reliability mask keeps and the share it keeps;
- depth warping with ground-truth depth and cameras: PSNR on the kept pixels, coverage and time per view pair.

Usage:
    python benchmarks/bench_warp.py [--sizes 160x120 320x240] [--raft_ckpt weights/raft-things.pth --device cuda]
        [--raft_random small large]   # time RAFT with random weights (no EPE)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ip2p_models.depth_warp import View, depth_warp  # noqa: E402
from ip2p_models.flow import RAFTFlow, make_flow  # noqa: E402
from ip2p_models.image_io import read_image  # noqa: E402
from ip2p_models.raft_convert import build_torchvision_raft  # noqa: E402
from ip2p_models.warp import propagate_by_flow  # noqa: E402

CAMS, FRAMES = 4, 12  # frame pairs (0, 1), (2, 3), ... of each camera: motion up to ~8 px at 160x120


def load(scene: Path) -> dict:
    """Frames ``[F, C, 3, H, W]`` and ground truth of a synthetic scene."""
    cams = sorted((scene / "frames").iterdir())
    frames = torch.stack([torch.stack([read_image(p) for p in sorted(cam.glob("*.png"))]) for cam in cams], dim=1)
    cameras = np.load(scene / "gt" / "cameras.npz")
    truth = {"frames": frames, "c2w": torch.from_numpy(cameras["c2w"]).float(),
             "K": torch.from_numpy(cameras["K"]).float()}
    for key in ("depth", "flow_fw", "flow_bw", "occ_fw", "occ_bw"):
        truth[key] = torch.from_numpy(np.load(scene / "gt" / f"{key}.npy"))
    return truth


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_flow(truth: dict, name: str, raft_ckpt: Path | None, device: str, random_raft: str | None = None) -> dict:
    if random_raft:  # timing only: random weights give meaningless flow
        flow = RAFTFlow(build_torchvision_raft(random_raft), random_raft, device=device)
    else:
        flow = make_flow(name, raft_ckpt, device=device)
    pairs = [(f, c) for c in range(CAMS) for f in range(0, FRAMES - 1, 2)]
    frames = truth["frames"].to(device)
    flow(frames[0, 0], frames[1, 0])  # warm-up
    epe, seconds, psnr, kept = [], [], [], []
    for f, c in pairs:
        sync(device)
        start = time.perf_counter()
        est = flow(frames[f, c], frames[f + 1, c])
        sync(device)
        seconds.append(time.perf_counter() - start)
        error = (est.cpu() - truth["flow_fw"][f, c]).norm(dim=-1)
        epe.append(error[~truth["occ_fw"][f, c]].mean().item())
        warped, mask = propagate_by_flow(frames[f, c], frames[f, c], frames[f + 1, c], flow)
        mse = ((warped - frames[f + 1, c]) ** 2).mean(0)[mask].mean().clamp_min(1e-12)
        psnr.append(-10 * mse.log10().item())
        kept.append(mask.float().mean().item())
    return dict(epe=np.mean(epe), epe_max=np.max(epe), ms=1000 * np.median(seconds), psnr=np.mean(psnr),
                kept=np.mean(kept))


def bench_depth(truth: dict) -> dict:
    psnr, cover, seconds = [], [], []
    for f in range(0, FRAMES, 4):
        for t in range(CAMS):
            for s in range(CAMS):
                if s == t:
                    continue
                target = View(None, truth["depth"][f, t], truth["K"][t], truth["c2w"][t])
                source = View(truth["frames"][f, s], truth["depth"][f, s], truth["K"][s], truth["c2w"][s])
                start = time.perf_counter()
                image, mask = depth_warp(target, source)
                seconds.append(time.perf_counter() - start)
                mse = ((image - truth["frames"][f, t]) ** 2).mean(0)[mask].mean().clamp_min(1e-12)
                psnr.append(-10 * mse.log10().item())
                cover.append(mask.float().mean().item())
    return dict(psnr=np.mean(psnr), psnr_min=np.min(psnr), cover=np.mean(cover), ms=1000 * np.median(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "warp", help="scenes go here")
    parser.add_argument("--sizes", nargs="+", default=["160x120", "320x240"], help="WIDTHxHEIGHT of each scene")
    parser.add_argument("--raft_ckpt", type=Path, default=None, help="RAFT weights to benchmark besides DIS")
    parser.add_argument("--raft_random", choices=("small", "large"), nargs="*", default=[],
                        help="also time RAFT with random weights (EPE meaningless, shown as -)")
    parser.add_argument("--device", default="cpu", help="device of RAFT")
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    from tools.make_synthetic_scene import make_synthetic_scene

    print(f"torch threads: {torch.get_num_threads()}; {CAMS} cameras x {FRAMES} frames per scene")
    print(f"{'size':>9} {'method':>6} {'EPE px':>7} {'EPE max':>8} {'ms/pair':>8} {'warp PSNR':>10} {'kept %':>7}")
    depth_rows = []
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        scene = args.out / size
        if not (scene / "gt" / "meta.json").exists():
            make_synthetic_scene(scene, CAMS, FRAMES, width, height, videos=False)
        truth = load(scene)
        methods = ["dis"] + (["raft"] if args.raft_ckpt else [])
        for method in methods:
            r = bench_flow(truth, method, args.raft_ckpt, args.device)
            print(f"{size:>9} {method:>6} {r['epe']:>7.3f} {r['epe_max']:>8.3f} {r['ms']:>8.1f} "
                  f"{r['psnr']:>10.2f} {100 * r['kept']:>7.1f}")
        for variant in args.raft_random:
            r = bench_flow(truth, "raft", None, args.device, random_raft=variant)
            print(f"{size:>9} {'rand-' + variant[0]:>6} {'-':>7} {'-':>8} {r['ms']:>8.1f} {'-':>10} {'-':>7}")
        depth_rows.append((size, bench_depth(truth)))
    print(f"\n{'size':>9} {'depth warp PSNR':>16} {'min':>6} {'coverage %':>11} {'ms/pair':>8}")
    for size, r in depth_rows:
        print(f"{size:>9} {r['psnr']:>16.2f} {r['psnr_min']:>6.2f} {100 * r['cover']:>11.1f} {r['ms']:>8.1f}")


if __name__ == "__main__":
    main()
