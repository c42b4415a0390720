"""Reader for scenes written by ``tools/make_synthetic_scene.py``: the DyNeRF reader (or, for a ``--monocular``
capture, the Nerfies reader) plus ground truth."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from .n3dv import read_n3dv
from .nerfies import read_nerfies
from .scene import Scene, SceneError

log = logging.getLogger(__name__)

GT_FILES = ("depth.npy", "cameras.npz", "flow_fw.npy", "flow_bw.npy", "occ_fw.npy", "occ_bw.npy")


def read_synthetic(datadir: str | Path, **options) -> Scene:
    """Load a synthetic scene through the DyNeRF code path and attach its ground truth as ``scene.gt``.

    ``scene.gt`` holds (for the loaded frames and cameras, at downsample 1 only):
        ``depth [F, C, H, W]`` z-depth in scene units; ``c2w_source [C, 4, 4]`` and ``K [C, 3, 3]`` of the tool;
        and, when the loaded frames are consecutive, ``flow_fw``/``flow_bw [F-1, C, H, W, 2]`` (pixels) and
        ``occ_fw``/``occ_bw [F-1, C, H, W]`` (True = not visible in the other frame).
    """
    monocular = (Path(datadir) / "dataset.json").is_file()
    if monocular:
        options.setdefault("ndc", False)
    scene = (read_nerfies if monocular else read_n3dv)(datadir, **options)
    gt_dir = Path(datadir) / "gt"
    missing = [name for name in GT_FILES if not (gt_dir / name).exists()]
    if missing:
        raise SceneError(f"{gt_dir} lacks {missing}: this is not a scene written by tools/make_synthetic_scene.py; "
                         "use dataset_name = n3dv for real scenes, or re-create it with the tool")
    cams_npz = np.load(gt_dir / "cameras.npz")
    if (int(cams_npz["height"]), int(cams_npz["width"])) != (scene.height, scene.width):
        log.info("synthetic scene loaded at %dx%d, not its rendered size: no ground truth attached",
                 scene.width, scene.height)
        return scene
    frames = np.array(scene.frame_ids)
    cams = np.array(scene.cam_ids)
    depth = np.load(gt_dir / "depth.npy", mmap_mode="r")[frames][:, cams]
    gt = {
        "depth": torch.from_numpy(np.ascontiguousarray(depth) / scene.scale).float(),
        # [C, 4, 4], or [F, C, 4, 4] for a monocular capture (per-frame poses)
        "c2w_source": torch.from_numpy(cams_npz["c2w"][frames][:, cams] if monocular
                                       else cams_npz["c2w"][cams]).float(),
        "K": torch.from_numpy(cams_npz["K"][cams]).float(),
    }
    if len(frames) > 1 and np.all(np.diff(frames) == 1):
        pairs = frames[:-1]
        for key in ("flow_fw", "flow_bw", "occ_fw", "occ_bw"):
            stored = np.load(gt_dir / f"{key}.npy", mmap_mode="r")
            gt[key] = torch.from_numpy(np.ascontiguousarray(stored[pairs][:, cams]))
    scene.gt = gt
    return scene
