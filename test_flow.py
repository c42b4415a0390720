"""Flow-guided warping between two frames: flow both ways, warp, consistency mask, error map.

Warps ``--source_img`` into the frame of ``--target_img`` with the flow of the target's pixels into the source,
masks unreliable pixels (forward-backward check + photometric check on the two images) and writes to
``--output_dir``:
    flow_fw.npy, flow_bw.npy   float32 [H, W, 2] pixels, x first: source -> target (source's pixels) and
                               target -> source (target's pixels)
    flow_fw.png, flow_bw.png   the flows as colour wheels (hue = direction, saturation = magnitude)
    warped.png                 the source seen from the target
    mask.png                   white where the warp is reliable
    error.png                  |warped - target| averaged over channels, x4
    summary.png                source | target | warped | mask | error

    python test_flow.py --source_img examples/flow/frames/0.png --target_img examples/flow/frames/2.png
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import flow_to_image

from ip2p_models.cli import add_flow_arguments
from ip2p_models.flow import make_flow
from ip2p_models.image_io import fit_size, image_row, read_image, resize, save_image
from ip2p_models.warp import reliable_mask, warp_by_flow

log = logging.getLogger("test_flow")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source_img", type=Path, default=Path("examples/flow/frames/0.png"),
                        help="frame to warp")
    parser.add_argument("--target_img", type=Path, default=Path("examples/flow/frames/2.png"),
                        help="frame to warp into (resized to the source's size if it differs)")
    add_flow_arguments(parser)  # --flow, --raft_ckpt, --raft_iters
    parser.add_argument("--resize", type=int, default=None,
                        help="long side in pixels to resize both images to (default: keep the size)")
    parser.add_argument("--photometric_threshold", type=float, default=0.05,
                        help="colour tolerance of the photometric check in [0, 1]; <= 0 disables it")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="device RAFT runs on")
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/test_flow"), help="where to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # 1. read the two frames at one size
    source = read_image(args.source_img)
    size = fit_size(*source.shape[1:], args.resize, multiple=1)
    source = resize(source, size)
    target = resize(read_image(args.target_img), size)

    # 2. flow both ways, warp, masks
    flow = make_flow(args.flow, args.raft_ckpt, device=args.device, iters=args.raft_iters)
    flow_fw, flow_bw = flow(source, target).cpu(), flow(target, source).cpu()
    threshold = args.photometric_threshold if args.photometric_threshold > 0 else None
    warped = warp_by_flow(source, flow_bw)
    mask = reliable_mask(flow_bw, flow_fw, source, target, photometric_threshold=threshold)
    error = (warped - target).abs().mean(0)

    # 3. write
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "flow_fw.npy", flow_fw.numpy())
    np.save(out / "flow_bw.npy", flow_bw.numpy())
    for name, f in (("flow_fw", flow_fw), ("flow_bw", flow_bw)):
        save_image(out / f"{name}.png", flow_to_image(f.permute(2, 0, 1)).float() / 255)
    save_image(out / "warped.png", warped)
    save_image(out / "mask.png", mask.float())
    save_image(out / "error.png", (4 * error).clamp(0, 1))
    save_image(out / "summary.png", image_row([source, target, warped, mask.float(), (4 * error).clamp(0, 1)]))
    log.info("%s flow on %dx%d: mean |flow| %.2f px; warp reliable on %.1f%% of the target; mean abs error "
             "%.4f on reliable pixels, %.4f elsewhere", flow.name, size[1], size[0],
             flow_bw.norm(dim=-1).mean(), 100 * mask.float().mean(), error[mask].mean() if mask.any() else 0.0,
             error[~mask].mean() if (~mask).any() else 0.0)
    log.info("wrote %s (flow_fw/bw .npy and .png, warped, mask, error, summary)", out)


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as err:  # a missing or malformed input, RAFT weights included
        raise SystemExit(f"error: {err}") from err
