"""Reader for monocular 4D captures in the Nerfies layout: Nerfies, HyperNeRF and DyCheck (iPhone) scenes.

Layout (the formats' public releases: google/nerfies ``nerfies/camera.py`` and ``datasets/nerfies.py``,
google/hypernerf, KAIR-BAIR/dycheck)::

    dataset.json        {"ids": [...], "train_ids": [...], "val_ids": [...]}
    metadata.json       {id: {"warp_id" (or "time_id"): t, "camera_id": c, "appearance_id": a}}
    scene.json          {"center": [x, y, z], "scale": s, "near": n, "far": f, optional "bbox": [[min], [max]]}
    camera/<id>.json    one camera per image (see below)
    rgb/<s>x/<id>.png   images at 1/s of the full size (1x, 2x, 4x ...)
    splits/train.json, splits/val.json   optional (DyCheck): {"frame_names": [...], "time_ids": [...],
                        "camera_ids": [...]}; they take precedence over dataset.json and metadata.json

A camera file holds ``orientation`` (3x3 world-to-camera rotation, rows = the camera's axes in the world),
``position`` (the camera centre in the world), ``focal_length`` (pixels, x), ``pixel_aspect_ratio`` (fy / fx),
``principal_point`` (pixels, where pixel i spans [i, i + 1]), ``skew``, ``radial_distortion`` (k1, k2, k3),
``tangential_distortion`` (p1, p2; Nerfies writes the key ``tangential``) and ``image_size`` (width, height), all
at the full size. Camera axes are OpenCV's (x right, y down, z forward); distortion is OpenCV's radial-tangential
model in normalized image coordinates. The world is normalized as those codebases do: ``(p - center) * scale``;
``near`` and ``far`` are already in normalized units.

Here: one :class:`Scene` whose camera axis holds the *streams*: stream 0 is the training camera (a moving phone:
its pose changes every frame, ``scene.frame_c2w``), further streams are the validation cameras that have an image
at every loaded frame (DyCheck's two static cameras); they are the test views and are never fitted. Frames are the
training items' time ids in order; ``scene.times`` spans [0, 1] over them. Rays are made on the fly, undistorted.
Box mode only (no NDC).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from common.image_io import read_rgb

from . import cameras
from .n3dv import downsampled_size
from .scene import Scene, SceneError

log = logging.getLogger(__name__)

OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0])
PATH_VIEWS = 60


@dataclass
class Item:
    """One image of the capture."""

    id: str
    time: int
    camera: int


@dataclass
class CaptureCamera:
    """A camera file, converted: OpenGL camera-to-world in the source world, intrinsics and distortion at full size."""

    c2w: np.ndarray  # [4, 4]
    K: np.ndarray  # [3, 3]
    distortion: np.ndarray  # [5] k1 k2 k3 p1 p2
    size: tuple[int, int]  # (width, height)


def read_json(path: Path) -> dict | list:
    if not path.is_file():
        raise SceneError(f"{path} not found: a Nerfies / HyperNeRF / DyCheck capture needs it (see "
                         "dataloader/nerfies.py for the layout)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SceneError(f"could not read {path}: {err}") from err


def read_camera(path: Path) -> CaptureCamera:
    """A Nerfies camera file as an OpenGL camera-to-world, intrinsics (skew in ``K[0, 1]``) and distortion."""
    data = read_json(path)
    try:
        R = np.asarray(data["orientation"], dtype=np.float64).reshape(3, 3)
        position = np.asarray(data["position"], dtype=np.float64).reshape(3)
        f = float(data["focal_length"])
        cx, cy = (float(v) for v in data["principal_point"])
        aspect = float(data.get("pixel_aspect_ratio", 1.0))
        skew = float(data.get("skew", 0.0))
        radial = list(data.get("radial_distortion", [0.0, 0.0, 0.0])) + [0.0] * 3
        tangential = list(data.get("tangential_distortion", data.get("tangential", [0.0, 0.0]))) + [0.0] * 2
        width, height = (int(v) for v in data["image_size"])
    except (KeyError, TypeError, ValueError) as err:
        raise SceneError(f"{path}: not a Nerfies camera file ({err!r}); it needs orientation, position, "
                         "focal_length, principal_point and image_size") from err
    c2w = np.eye(4)
    c2w[:3, :3] = R.T @ OPENCV_TO_OPENGL  # camera axes in the world, flipped to OpenGL's y up, z back
    c2w[:3, 3] = position
    K = np.array([[f, skew, cx], [0.0, f * aspect, cy], [0.0, 0.0, 1.0]])
    return CaptureCamera(c2w, K, np.array(radial[:3] + tangential[:2], dtype=np.float64), (width, height))


def camera_to_json(c2w: np.ndarray, K: np.ndarray, distortion: Sequence[float], size: tuple[int, int]) -> dict:
    """The inverse of :func:`read_camera`: a Nerfies camera file's content (used by the synthetic capture)."""
    R = (np.asarray(c2w, dtype=np.float64)[:3, :3] @ OPENCV_TO_OPENGL).T
    k = [float(v) for v in distortion]
    return {"orientation": R.tolist(), "position": [float(v) for v in np.asarray(c2w)[:3, 3]],
            "focal_length": float(K[0, 0]), "principal_point": [float(K[0, 2]), float(K[1, 2])],
            "skew": float(K[0, 1]), "pixel_aspect_ratio": float(K[1, 1] / K[0, 0]), "radial_distortion": k[:3],
            "tangential_distortion": k[3:5], "image_size": [int(size[0]), int(size[1])]}


def read_items(datadir: Path) -> tuple[list[Item], list[Item]]:
    """Training and validation items from ``splits/`` (DyCheck) or ``dataset.json`` + ``metadata.json``."""
    splits = datadir / "splits"
    if (splits / "train.json").is_file():
        out = []
        for name in ("train", "val"):
            path = splits / f"{name}.json"
            if not path.is_file():
                out.append([])
                continue
            split = read_json(path)
            try:
                out.append([Item(str(i), int(t), int(c)) for i, t, c in
                            zip(split["frame_names"], split["time_ids"], split["camera_ids"], strict=True)])
            except (KeyError, ValueError) as err:
                raise SceneError(f"{path}: needs equally long frame_names, time_ids and camera_ids ({err})") from err
        return out[0], out[1]
    dataset = read_json(datadir / "dataset.json")
    metadata = read_json(datadir / "metadata.json")

    def item(i) -> Item:
        entry = metadata.get(str(i))
        if entry is None:
            raise SceneError(f"{datadir / 'metadata.json'} has no entry for image {i!r} of dataset.json")
        time = entry.get("warp_id", entry.get("time_id"))
        if time is None:
            raise SceneError(f"{datadir / 'metadata.json'}: image {i!r} has neither warp_id nor time_id")
        return Item(str(i), int(time), int(entry.get("camera_id", 0)))

    return [item(i) for i in dataset.get("train_ids", dataset.get("ids", []))], \
        [item(i) for i in dataset.get("val_ids", [])]


def rgb_folder(datadir: Path, downsample: float) -> tuple[Path, float]:
    """The ``rgb/<s>x`` folder to read and the factor its images still need (1: none)."""
    wanted = datadir / "rgb" / f"{int(downsample)}x"
    if float(downsample).is_integer() and wanted.is_dir():
        return wanted, 1.0
    scales = sorted(int(p.name[:-1]) for p in (datadir / "rgb").glob("*x") if p.name[:-1].isdigit())
    usable = [s for s in scales if s <= downsample]
    if not usable:
        raise SceneError(f"{datadir / 'rgb'} has no image folder at or above 1/{downsample} of the full size "
                         f"(found {[f'{s}x' for s in scales]}); the layout is rgb/1x/<id>.png")
    return datadir / "rgb" / f"{usable[-1]}x", downsample / usable[-1]


def warn_transparent(path: Path) -> None:
    """Say so when a capture's images carry alpha 0 (DyCheck iPhone marks the pixels its depth missed that way): the
    loader keeps RGB only, so those pixels are fitted as they are stored (black)."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is not None and image.ndim == 3 and image.shape[2] == 4:
        share = float((image[..., 3] == 0).mean())
        if share > 0:
            log.warning("%s has alpha 0 on %.1f%% of its pixels (pixels the capture marks invalid); this loader keeps "
                        "RGB only, so they are fitted as stored (black): masks are not supported yet", path,
                        100 * share)


def read_nerfies(datadir: str | Path, *, downsample: float = 1.0, num_frames: int | None = None,
                 frame_list: Sequence[int] | None = None, skip_cams: Sequence[int] = (), ndc: bool = False,
                 hold_out_test: bool = False, test_cam: int | None = None, num_workers: int | None = None) -> Scene:
    """Load a monocular capture (see the module docstring).

    Args:
        downsample: image size divisor; ``rgb/<downsample>x`` is read when it exists, else a finer folder resized.
        num_frames, frame_list: the first N frames, or these 0-based frames (in time order of the training items).
        skip_cams: validation camera ids to leave out.
        ndc: must be False (these scenes are not forward-facing).
        hold_out_test: accepted for symmetry; the validation cameras are never fitted anyway.
    """
    datadir = Path(datadir)
    if not datadir.is_dir():
        raise SceneError(f"scene folder {datadir} not found: check --datadir")
    if ndc:
        raise SceneError(f"{datadir}: a monocular capture is fitted in box mode; set ndc_ray = 0")
    train, val = read_items(datadir)
    if not train:
        raise SceneError(f"{datadir}: no training images listed (dataset.json train_ids or splits/train.json)")
    scene_info = read_json(datadir / "scene.json")
    try:
        center = np.asarray(scene_info["center"], dtype=np.float64).reshape(3)
        scale = float(scene_info["scale"])
        near, far = float(scene_info["near"]), float(scene_info["far"])
    except (KeyError, TypeError, ValueError) as err:
        raise SceneError(f"{datadir / 'scene.json'} needs center, scale, near and far ({err!r})") from err

    # 1. frames: the training items' time ids, one training image per time
    by_time: dict[int, Item] = {}
    for item in train:
        if item.time in by_time:
            raise SceneError(f"{datadir}: training images {by_time[item.time].id!r} and {item.id!r} share time id "
                             f"{item.time}; a monocular capture has one training image per time")
        by_time[item.time] = item
    times_all = sorted(by_time)
    if frame_list:
        bad = [f for f in frame_list if not 0 <= f < len(times_all)]
        if bad:
            raise SceneError(f"frame_list {list(frame_list)} asks for frames {bad}; {datadir} has frames 0.."
                             f"{len(times_all) - 1}")
        chosen = [times_all[f] for f in frame_list]
    else:
        if num_frames and num_frames > len(times_all):
            raise SceneError(f"num_frames = {num_frames}, but {datadir} has {len(times_all)} training frames: lower "
                             f"num_frames to at most {len(times_all)}")
        chosen = times_all[:num_frames] if num_frames else times_all
    # 2. streams: the training camera, then validation cameras seen at every chosen time
    val_by_camera: dict[int, dict[int, Item]] = {}
    for item in val:
        val_by_camera.setdefault(item.camera, {})[item.time] = item
    streams = [[by_time[t] for t in chosen]]
    cam_ids = [train[0].camera]
    skipped = {int(c) for c in skip_cams}
    unknown = sorted(skipped - set(val_by_camera))
    if unknown:
        raise SceneError(f"skip_cams {unknown}: {datadir} has no such validation camera (validation cameras: "
                         f"{sorted(val_by_camera)})")
    for camera in sorted(val_by_camera):
        if camera in skipped:
            continue
        seen = val_by_camera[camera]
        if all(t in seen for t in chosen):
            streams.append([seen[t] for t in chosen])
            cam_ids.append(camera)
        else:
            log.warning("validation camera %d has images at %d of the %d loaded times: not used as a test view "
                        "(a test view needs every loaded time; frame_list or num_frames can choose times it has)",
                        camera, sum(t in seen for t in chosen), len(chosen))
    if len(streams) == 1 and val_by_camera:
        log.warning("no validation camera covers the loaded times: test figures are measured on the training camera")

    # 3. cameras (full size, source world) and the image size
    capture = [[read_camera(datadir / "camera" / f"{item.id}.json") for item in stream] for stream in streams]
    folder, extra = rgb_folder(datadir, downsample)
    first = read_rgb(folder / f"{streams[0][0].id}.png")
    warn_transparent(folder / f"{streams[0][0].id}.png")
    stored_h, stored_w = first.shape[:2]
    width, height = downsampled_size(stored_w, stored_h, extra)
    full_w, full_h = capture[0][0].size
    sx, sy = width / full_w, height / full_h
    for s, stream in enumerate(capture):
        if any(c.size != stream[0].size for c in stream):
            raise SceneError(f"{datadir}: the images of camera {cam_ids[s]} differ in size; one size per camera")

    # 4. images into one uint8 store
    images = torch.empty((len(chosen), len(streams), height, width, 3), dtype=torch.uint8)

    def fill(job: tuple[int, int]) -> None:
        f, s = job
        path = folder / f"{streams[s][f].id}.png"
        image = read_rgb(path)
        if image.shape[:2] != (stored_h, stored_w):
            size = f"{path} is {image.shape[1]}x{image.shape[0]}, the training camera's images {stored_w}x{stored_h}"
            if s == 0:
                raise SceneError(f"{size}: the training camera's images must have one size")
            raise SceneError(f"{size}: validation camera {cam_ids[s]} has another size, which is not supported; leave "
                             f"it out with skip_cams [{cam_ids[s]}]")
        if (width, height) != (stored_w, stored_h):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        images[f, s] = torch.from_numpy(image)

    jobs = [(f, s) for f in range(len(chosen)) for s in range(len(streams))]
    with ThreadPoolExecutor(max_workers=num_workers or 8) as pool:
        list(pool.map(fill, jobs))

    # 5. the world normalized as the format does, (p - center) * scale; intrinsics at the loaded size
    world_from_source = np.diag([scale, scale, scale, 1.0])
    world_from_source[:3, 3] = -center * scale
    frame_c2w = np.stack([[world_from_source @ c.c2w @ np.diag([1 / scale] * 3 + [1.0]) for c in stream]
                          for stream in capture], axis=1)  # [F, C, 4, 4]; rotation kept orthonormal
    resize = np.diag([sx, sy, 1.0])
    K = np.stack([resize @ stream[0].K for stream in capture])
    distortion = np.stack([stream[0].distortion for stream in capture])
    if "bbox" in scene_info:
        box = (np.asarray(scene_info["bbox"], dtype=np.float64).reshape(2, 3) - center) * scale
    else:
        box = cameras.frustum_box(frame_c2w.reshape(-1, 4, 4)[:, :3], np.tile(K, (len(chosen), 1, 1)), width,
                                  height, near, far)
    path_poses = frame_c2w[np.linspace(0, len(chosen) - 1, min(PATH_VIEWS, len(chosen))).round().astype(int), 0]
    lo, hi = min(chosen), max(chosen)  # a frame_list need not be in order: times stay in [0, 1]
    times = torch.tensor([(t - lo) / max(hi - lo, 1) for t in chosen], dtype=torch.float32)
    test_cams = list(range(1, len(streams))) or [0]
    train_cams = [0]
    log.info("nerfies capture %s: %d frames, %d validation camera(s), %dx%d, near %.3f far %.3f", datadir,
             len(chosen), len(streams) - 1, width, height, near, far)
    return Scene(
        images=images, original=images, K=torch.from_numpy(K).float(),
        c2w=torch.from_numpy(frame_c2w[0]).float(),
        bounds=torch.tensor([[near, far]] * len(streams), dtype=torch.float32), near_far=(near, far), ndc=False,
        scene_box=torch.from_numpy(box).float(), times=times, frame_ids=chosen, cam_ids=cam_ids, test_cams=test_cams,
        train_cams=train_cams, render_path=torch.from_numpy(path_poses).float(), scale=1 / scale,
        world_from_source=torch.from_numpy(world_from_source), datadir=datadir,
        frame_c2w=torch.from_numpy(frame_c2w).float(),
        distortion=torch.from_numpy(distortion).float() if np.any(distortion) else None,
    )

