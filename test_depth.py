"""Depth-based warping: edit one view with IP2P and carry the edit into another view through 3D points.

Two ways to give the geometry:

1. ``--pts_path`` + ``--warp_path`` (the release's inputs; the default, on the examples):
     pts file   torch.save of a float tensor [V, H, W, 3]: the world point every pixel of view v sees
                (e.g. rendered depth of a 4D NeRF unprojected along its rays).
     warp file  torch.save of a float tensor [V, V, H, W, 2]: warp[s][t][y, x] = where, in view s, the point that
                target view t shows at pixel (x, y) lands, as (x, y) pixel index coordinates (pixel (i, j)'s centre
                is (i, j)).
   The occlusion threshold defaults to ``--rel_distance`` times the point's distance from the world origin
   (the cameras' centre after recentring); ``--max_distance`` sets it in world units.
2. ``--depth_path`` + ``--cameras_path``: a depth .npy [V, H, W] (or [F, V, H, W] with ``--frame``, as
   tools/make_synthetic_scene.py writes gt/depth.npy) holding z-depth, or the NDC ray parameter with ``--ndc``;
   and an .npz with ``c2w`` [V, 4, 4] (OpenGL camera-to-world) and ``K`` [V, 3, 3] (principal point (W/2, H/2),
   see dataloader/cameras.py), by default cameras.npz next to the depth file. The threshold defaults to
   ``--rel_distance`` times the target's z-depth.

Views are picked by ``--source_view`` / ``--target_view``, else from the image names (``.../camXX/...`` gives XX,
else the number the file name ends with: ``0.png``, ``cam_3.png``). Writes to ``--output_dir``:
    edited_source.png, warped.png (edit carried into the target, black where masked), mask.png,
    filled.png (warped edit where reliable, original target elsewhere), summary.png (originals on top,
    edited source and filled target below)

    python test_depth.py --source_img examples/depth/0.png --target_img examples/depth/1.png \\
        --prompt 'What if it was painted by Van Gogh?' --guidance_scale 10.5 --image_guidance_scale 1.5 \\
        --pts_path examples/depth/pts_0.pt --warp_path examples/depth/warp_0.pt
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from common.settings import add_settings
from ip2p_models.cli import add_model_arguments, load_editor
from ip2p_models.depth_warp import DEFAULT_REL_DISTANCE, View, depth_warp, warp_by_points
from ip2p_models.image_io import fit_size, read_image, resize, save_image
from ip2p_models.settings import RefineSettings
from ip2p_models.warp import fill_from_warp

log = logging.getLogger("test_depth")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source_img", type=Path, default=Path("examples/depth/0.png"), help="view to edit")
    parser.add_argument("--target_img", type=Path, default=Path("examples/depth/1.png"), help="view to warp into")
    parser.add_argument("--prompt", default="What if it was painted by Van Gogh?", help="editing instruction")
    add_settings(parser, RefineSettings, ["guidance_scale", "image_guidance_scale"])
    parser.add_argument("--steps", type=int, default=RefineSettings.diffusion_steps, help="denoising steps of the edit")
    parser.add_argument("--no_edit", action="store_true",
                        help="warp the unedited source (checks the geometry: prints the PSNR against the target)")
    parser.add_argument("--pts_path", type=Path, default=Path("examples/depth/pts_0.pt"),
                        help="torch file [V, H, W, 3] of world points per view (see above)")
    parser.add_argument("--warp_path", type=Path, default=Path("examples/depth/warp_0.pt"),
                        help="torch file [V, V, H, W, 2] of pixel maps between views (see above)")
    parser.add_argument("--depth_path", type=Path, default=None,
                        help="depth .npy [V, H, W] or [F, V, H, W]; replaces --pts_path/--warp_path")
    parser.add_argument("--cameras_path", type=Path, default=None,
                        help=".npz with c2w [V, 4, 4] and K [V, 3, 3] (default: cameras.npz beside --depth_path)")
    parser.add_argument("--frame", type=int, default=0, help="frame of a [F, V, H, W] depth file")
    parser.add_argument("--ndc", action="store_true", help="the depth file holds NDC ray parameters")
    parser.add_argument("--source_view", type=int, default=None, help="view index of the source image")
    parser.add_argument("--target_view", type=int, default=None, help="view index of the target image")
    parser.add_argument("--max_distance", type=float, default=None,
                        help="occlusion threshold in world units (default: relative, --rel_distance)")
    parser.add_argument("--rel_distance", type=float, default=DEFAULT_REL_DISTANCE,
                        help="relative occlusion threshold (see above)")
    add_model_arguments(parser)  # --ip2p_model, --device/--ip2p_device, --ip2p_use_full_precision, ...
    parser.add_argument("--seed", type=int, default=7070, help="seed of the edit")
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/test_depth"), help="where to write")
    return parser.parse_args(argv)


def view_index(path: Path, given: int | None) -> int:
    """The view of an image: ``given``, else XX of a ``camXX`` folder, else the number ending the file stem."""
    if given is not None:
        return given
    cam = re.fullmatch(r"cam(\d+)", path.parent.name)
    if cam:
        return int(cam[1])
    number = re.search(r"(\d+)$", path.stem)
    if number is None:
        raise ValueError(f"cannot tell the view of {path}: name it <index>.png or pass --source_view/--target_view")
    return int(number[1])


def load_tensor(path: Path, name: str, ndims: tuple[int, ...]) -> Tensor:
    """A float tensor with one of ``ndims`` dimensions from a torch file (or .npy)."""
    if not path.is_file():
        raise FileNotFoundError(f"{name} {path} not found (the examples are made by "
                                "`python tools/make_flow_examples.py examples`)")
    data = np.load(path) if path.suffix == ".npy" else torch.load(path, map_location="cpu", weights_only=True)
    tensor = torch.as_tensor(data).float()
    if tensor.dim() not in ndims:
        raise ValueError(f"{name} {path}: expected {' or '.join(map(str, ndims))} dimensions, got shape "
                         f"{tuple(tensor.shape)} "
                         "(see test_depth.py --help for the formats)")
    return tensor


def warp_with_points(args, source_image: Tensor, s: int, t: int) -> tuple[Tensor, Tensor]:
    """Mode 1: world points per view and pixel maps between views."""
    points = load_tensor(args.pts_path, "--pts_path", (4,))
    maps = load_tensor(args.warp_path, "--warp_path", (5,))
    V, H, W = points.shape[:3]
    if max(s, t) >= V or maps.shape[:2] != (V, V) or tuple(maps.shape[2:4]) != (H, W):
        raise ValueError(f"views {s}, {t} do not fit pts {tuple(points.shape)} / warp {tuple(maps.shape)}; check "
                         "--source_view/--target_view and that both files come from the same views")
    xy = maps[s, t]
    threshold = args.max_distance if args.max_distance is not None else args.rel_distance * points[t].norm(dim=-1)
    return warp_by_points(resize(source_image, (H, W)), points[s], points[t], xy, threshold)


def warp_with_depth(args, source_image: Tensor, s: int, t: int) -> tuple[Tensor, Tensor]:
    """Mode 2: depth maps and cameras."""
    depth = load_tensor(args.depth_path, "--depth_path", (3, 4))
    if depth.dim() == 4 and not 0 <= args.frame < depth.shape[0]:
        raise ValueError(f"--frame {args.frame}: {args.depth_path} holds frames 0..{depth.shape[0] - 1}")
    depth = depth[args.frame] if depth.dim() == 4 else depth
    if not 0 <= max(s, t) < depth.shape[0] or min(s, t) < 0:
        raise ValueError(f"views {s}, {t}: {args.depth_path} holds views 0..{depth.shape[0] - 1}; check "
                         "--source_view/--target_view")
    cameras_path = args.cameras_path or args.depth_path.parent / "cameras.npz"
    if not cameras_path.is_file():
        raise FileNotFoundError(f"cameras {cameras_path} not found: pass --cameras_path (an .npz with c2w, K)")
    cameras = np.load(cameras_path)
    c2w, K = torch.from_numpy(cameras["c2w"]).float(), torch.from_numpy(cameras["K"]).float()
    H, W = depth.shape[1:]
    source = View(resize(source_image, (H, W)), depth[s], K[s], c2w[s])
    target = View(None, depth[t], K[t], c2w[t])
    return depth_warp(target, source, ndc=args.ndc, max_distance=args.max_distance, rel_distance=args.rel_distance)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    source, target = read_image(args.source_img), read_image(args.target_img)
    s, t = view_index(args.source_img, args.source_view), view_index(args.target_img, args.target_view)

    # 1. edit the source view
    if args.no_edit:
        edited = source
    else:
        editor = load_editor(args)
        work = resize(source, fit_size(*source.shape[1:], None))
        edited = editor.edit_sequence(work[None], work[None], args.prompt, guidance_scale=args.guidance_scale,
                                      image_guidance_scale=args.image_guidance_scale, diffusion_steps=args.steps,
                                      T=1000, init="noise", seed=args.seed)[0]
        edited = resize(edited.float().cpu().clamp(0, 1), tuple(source.shape[1:]))

    # 2. carry it into the target view
    warped, mask = (warp_with_depth if args.depth_path else warp_with_points)(args, edited, s, t)
    target = resize(target, tuple(warped.shape[1:]))
    filled = fill_from_warp(target, warped, mask)

    # 3. write
    out = args.output_dir
    save_image(out / "edited_source.png", edited)
    save_image(out / "warped.png", warped)
    save_image(out / "mask.png", mask.float())
    save_image(out / "filled.png", filled)
    top = torch.cat([resize(source, tuple(target.shape[1:])), target], dim=-1)
    bottom = torch.cat([resize(edited, tuple(target.shape[1:])), filled], dim=-1)
    save_image(out / "summary.png", torch.cat([top, bottom], dim=-2))
    log.info("view %d -> view %d: the warp covers %.1f%% of the target", s, t, 100 * mask.float().mean())
    if args.no_edit and mask.any():
        mse = ((warped - target) ** 2).mean(0)[mask].mean().clamp_min(1e-10)
        log.info("unedited source warped into the target: PSNR %.2f dB on the covered pixels", -10 * mse.log10())
    log.info("wrote %s (edited_source, warped, mask, filled, summary)", out)


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as err:  # a missing or malformed input, RAFT weights included
        raise SystemExit(f"error: {err}") from err
