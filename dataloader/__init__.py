"""Scene readers producing one :class:`Scene` type, and the camera math they share.

Conventions: images uint8 ``[F, C, H, W, 3]`` in the store (float ``[0, 1]`` when handed out); time in
``[0, 1]``; OpenGL camera-to-world (x right, y up, z back); pixel (i, j)'s centre at pixel index coordinates
(i, j). See :mod:`dataloader.cameras`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .n3dv import read_n3dv
from .nerfies import read_nerfies
from .scene import Scene, SceneError
from .synthetic import read_synthetic

DATASETS: dict[str, Callable[..., Scene]] = {
    "n3dv": read_n3dv,
    "n3dv_dynamic": read_n3dv,  # the release's name for the same reader
    "synthetic": read_synthetic,  # either layout, with ground truth
    "nerfies": read_nerfies,  # monocular captures: Nerfies, HyperNeRF, DyCheck (iPhone)
    "dycheck": read_nerfies,
    "iphone": read_nerfies,
    "hypernerf": read_nerfies,
}


def load_scene(dataset_name: str, datadir: str | Path, **options) -> Scene:
    """Read a scene with the reader registered under ``dataset_name``.

    Args:
        dataset_name: a key of :data:`DATASETS`.
        datadir: the scene folder.
        **options: reader options (``downsample``, ``num_frames``, ``frame_list``, ``skip_cams``, ``ndc``,
            ``hold_out_test``, ``test_cam``); see :func:`dataloader.n3dv.read_n3dv`.
    """
    if dataset_name not in DATASETS:
        raise SceneError(f"unknown dataset_name {dataset_name!r}: choose one of {sorted(DATASETS)}")
    return DATASETS[dataset_name](datadir, **options)


__all__ = ["DATASETS", "Scene", "SceneError", "load_scene"]
