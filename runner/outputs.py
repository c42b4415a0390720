"""Final renders of a fitted field: test cameras over time and the spiral path, as PNG, depth and mp4.

Layout under the output folder (``imgs_test_all`` / ``imgs_path_all`` of the run dir):
    test: ``cam{XX}/rgb/{frame:03d}.png``, ``cam{XX}/depth/{frame:03d}.png`` (colour-mapped), ``cam{XX}/depth.npy``
    (float32 ``[F, H, W]`` raw depth), ``cam{XX}/video.mp4``, ``cam{XX}/depthvideo.mp4``, ``mean.txt`` (PSNR)
    path: ``rgb/{view:03d}.png``, ``depth/{view:03d}.png``, ``video.mp4``, ``depthvideo.mp4``
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from common.image_io import depth_to_color, to_uint8, write_rgb, write_video
from models.rendering import render_image

log = logging.getLogger(__name__)

def render_test_views(field, sampler, scene, out_dir: str | Path, *, chunk: int = 4096, white_bg: bool = False,
                      n_samples: int | None = None) -> dict[int, list[float]]:
    """Render every test camera at every frame; PSNR against ``scene.images``.

    Returns:
        Per test camera (position along the C axis), the PSNR of every frame.
    """
    out_dir = Path(out_dir)
    psnrs: dict[int, list[float]] = {}
    for cam in scene.test_cams:
        cam_dir = out_dir / f"cam{scene.cam_ids[cam]:02d}"
        rgbs, depth_images, depths, values = [], [], [], []
        for frame in tqdm(range(scene.num_frames), desc=f"test cam{scene.cam_ids[cam]:02d}", leave=False):
            out = render_image(field, sampler, scene, frame, cam, chunk=chunk, white_bg=white_bg, n_samples=n_samples)
            mse = torch.mean((out["rgb"].cpu() - scene.image(frame, cam)) ** 2).item()
            values.append(-10.0 * np.log10(max(mse, 1e-12)))
            rgb = to_uint8(out["rgb"])
            depth = out["depth"].cpu().numpy().astype(np.float32)
            depth_rgb = depth_to_color(depth, scene.near_far if scene.ndc else None)
            write_rgb(cam_dir / "rgb" / f"{frame:03d}.png", rgb)
            write_rgb(cam_dir / "depth" / f"{frame:03d}.png", depth_rgb)
            rgbs.append(rgb)
            depth_images.append(depth_rgb)
            depths.append(depth)
        np.save(cam_dir / "depth.npy", np.stack(depths))
        write_video(cam_dir / "video.mp4", rgbs)
        write_video(cam_dir / "depthvideo.mp4", depth_images)
        psnrs[cam] = values
    lines = [f"cam{scene.cam_ids[c]:02d} {np.mean(v):.4f}" for c, v in psnrs.items()]
    all_values = [v for vs in psnrs.values() for v in vs]
    lines.append(f"mean {np.mean(all_values):.4f}")
    (out_dir / "mean.txt").write_text("\n".join(lines) + "\n")
    return psnrs


@torch.no_grad()
def render_path_views(field, sampler, scene, out_dir: str | Path, *, views: int = -1, chunk: int = 4096,
                      white_bg: bool = False, n_samples: int | None = None) -> Path:
    """Render the spiral path ``scene.render_path``; view ``i`` of ``P`` is at time ``i / P`` (the release's sweep).

    Returns:
        The colour video's path.
    """
    out_dir = Path(out_dir)
    poses = scene.render_path if views < 0 else scene.render_path[:views]
    count = len(poses)
    rgbs, depth_images = [], []
    for i, c2w in enumerate(tqdm(poses, desc="render path", leave=False)):
        out = render_image(field, sampler, scene, c2w=c2w, t=i / count, chunk=chunk, white_bg=white_bg,
                           n_samples=n_samples)
        rgb = to_uint8(out["rgb"])
        depth_rgb = depth_to_color(out["depth"].cpu().numpy(), scene.near_far if scene.ndc else None)
        write_rgb(out_dir / "rgb" / f"{i:03d}.png", rgb)
        write_rgb(out_dir / "depth" / f"{i:03d}.png", depth_rgb)
        rgbs.append(rgb)
        depth_images.append(depth_rgb)
    write_video(out_dir / "video.mp4", rgbs)
    write_video(out_dir / "depthvideo.mp4", depth_images)
    return out_dir / "video.mp4"


def final_renders(field, sampler, scene, args, run_dir: Path, *, test: bool = True, path: bool = True) -> None:
    """The renders ``--render_test`` / ``--render_path`` ask for, into ``imgs_test_all`` / ``imgs_path_all``."""
    if test:
        psnrs = render_test_views(field, sampler, scene, run_dir / "imgs_test_all", chunk=args.chunk,
                                  white_bg=args.white_bkgd)
        mean = sum(sum(v) for v in psnrs.values()) / max(1, sum(len(v) for v in psnrs.values()))
        log.info("======> %s test all psnr: %.2f (renders in %s)", args.expname, mean, run_dir / "imgs_test_all")
    if path:
        video = render_path_views(field, sampler, scene, run_dir / "imgs_path_all", views=args.path_views,
                                  chunk=args.chunk, white_bg=args.white_bkgd)
        log.info("render path video: %s", video)
