"""Rendered depth of every camera at a frame, cached on disk so a rerun or a resumed edit does not render again.

One file per frame, ``{cache}/depth_{frame:04d}.pt``: ``depth [C, H, W]`` (the NeRF's depth: NDC ray parameter
when the scene uses NDC), ``points [C, H, W, 3]`` (world points of every pixel, in the scene space the cameras
live in; ``test_depth.py --pts_path`` reads such points), and what they were rendered from (the checkpoint's
path, size and modification time, the image size). A file made from another checkpoint or size is rendered again.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from tqdm.auto import tqdm

from common.atomic import atomic_write
from ip2p_models.depth_warp import depth_to_points
from models.rendering import render_image

log = logging.getLogger(__name__)


def checkpoint_identity(path: str | Path) -> dict:
    path = Path(path).resolve()
    stat = path.stat()
    return {"ckpt": str(path), "size": stat.st_size, "mtime": int(stat.st_mtime)}


class DepthCache:
    """Depth renders of ``scene``'s cameras by ``field`` (the NeRF before editing), one file per frame.

    Args:
        folder: the cache folder (``--cache``, default ``{run dir}/cache``).
        ckpt: the checkpoint the field was loaded from (identifies the renders).
        scene: the :class:`dataloader.Scene`.
        field, sampler: what renders, when a frame is not cached yet; None to only read.
        chunk: rays per render chunk.
    """

    def __init__(self, folder: str | Path, ckpt: str | Path, scene, field=None, sampler=None, chunk: int = 4096):
        self.folder = Path(folder)
        # which cameras were loaded, not just how many: a shared --cache may serve another skip_cams
        self.identity = {**checkpoint_identity(ckpt), "height": scene.height, "width": scene.width,
                         "num_cams": scene.num_cams, "cam_ids": [int(c) for c in scene.cam_ids],
                         "ndc": bool(scene.ndc)}  # depth: the NDC ray parameter, else z-depth (z_depth)
        self.scene = scene
        self.field = field
        self.sampler = sampler
        self.chunk = chunk

    def path(self, frame: int) -> Path:
        return self.folder / f"depth_{frame:04d}.pt"

    def cached(self, frame: int) -> bool:
        path = self.path(frame)
        if not path.is_file():
            return False
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError) as err:
            log.warning("depth cache %s unreadable (%s); rendering it again", path, err)
            return False
        # frame index f is the time of f: another frame_list or num_frames puts another time under that index
        return saved.get("identity") == self.identity and saved.get("time") == float(self.scene.times[frame])

    @torch.no_grad()
    def render(self, frame: int) -> Path:
        """Render every camera's depth at ``frame`` and write the cache file (atomically)."""
        if self.field is None:
            raise RuntimeError(f"depth of frame {frame} is not cached in {self.folder} and no field was given")
        scene = self.scene
        depths, points = [], []
        for cam in tqdm(range(scene.num_cams), desc=f"depth at frame {frame}", leave=False):
            depth = render_image(self.field, self.sampler, scene, frame, cam, chunk=self.chunk,
                                 color=False)["depth"].cpu()
            if not scene.ndc:
                depth = z_depth(depth, scene, frame, cam)
            depths.append(depth)
            points.append(depth_to_points(depth, scene.K[cam], scene.pose(frame, cam), ndc=scene.ndc))
        data = {"depth": torch.stack(depths).float(), "points": torch.stack(points).float(),
                "identity": self.identity, "frame": frame, "time": float(scene.times[frame]), "ndc": bool(scene.ndc)}
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path(frame), lambda handle: torch.save(data, handle))
        return self.path(frame)

    def ensure(self, frames) -> list[Path]:
        """Cache files of ``frames``, rendering those missing or stale."""
        paths = []
        todo = [f for f in frames if not self.cached(f)]
        if todo:
            log.info("rendering depth of %d camera(s) at %d frame(s) into %s", self.scene.num_cams, len(todo),
                     self.folder)
        for frame in frames:
            paths.append(self.render(frame) if frame in todo else self.path(frame))
        return paths


def z_depth(distance: torch.Tensor, scene, frame: int, cam: int) -> torch.Tensor:
    """A box-mode render's depth (distance along each unit ray direction) as z-depth along the camera's axis, the
    depth :func:`ip2p_models.depth_warp.depth_to_points` and the ground truth use; ``[H, W]`` -> ``[H, W]``."""
    _, rays_d = scene.image_rays(cam, frame)
    forward = -scene.pose(frame, cam)[:3, 2].float()  # cameras look down their -z axis
    cosine = (rays_d.float() / rays_d.float().norm(dim=-1, keepdim=True)) @ forward
    return distance * cosine.view(distance.shape).to(distance.dtype)


def load_depth(path: str | Path) -> torch.Tensor:
    """``[C, H, W]`` depth of a cache file."""
    return torch.load(path, map_location="cpu", weights_only=True)["depth"]
