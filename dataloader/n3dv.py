"""Reader for DyNeRF / Neural 3D Video scenes (``poses_bounds.npy`` + ``camXX.mp4`` + ``frames/camXX/``).

Camera handling follows the release (see ``../shared/spec/stream-tensorf.md``, "Camera and rays"): LLFF rows to
OpenGL, rescale by ``min(near) * 1.8 * 0.6``, recentre on the average pose, optional NDC.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

from common.image_io import ImageError, read_rgb, write_rgb

from . import cameras
from .scene import NDC_SCENE_BOX, Scene, SceneError
from .video import extract_frames

FRAME_HINT = "delete it and re-run tools/prepare_video.py on the scene folder"
log = logging.getLogger(__name__)

SCALE_FACTOR = 1.8 * 0.6
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")


def find_cameras(datadir: Path) -> list[str]:
    """Camera names (``cam00``, ``cam01``, ...) from the videos, or from ``frames/`` when there are none."""
    videos = sorted(p.stem for p in datadir.glob("cam*.mp4"))
    if videos:
        return videos
    frame_root = datadir / "frames"
    names = sorted(p.name for p in frame_root.glob("cam*")
                   if p.is_dir() and not p.name.endswith((".partial", ".stale")))
    if not names:
        raise SceneError(f"no cameras in {datadir}: expected camXX.mp4 videos or frames/camXX/ folders; "
                         "check --datadir")
    return names


def camera_number(name: str) -> int:
    """The number of a camera name (``cam12`` -> 12)."""
    match = re.fullmatch(r"cam(\d+)", name)
    if match is None:
        raise SceneError(f"camera name {name!r} is not of the form camXX")
    return int(match.group(1))


def list_frames(frame_dir: Path) -> list[Path]:
    """Frame files of one camera, sorted; PNG preferred over JPEG when both exist (suffixes in any case)."""
    candidates = [p for p in frame_dir.glob("[0-9]*") if p.is_file()]
    for suffix in FRAME_SUFFIXES:
        files = sorted(p for p in candidates if p.suffix.lower() == suffix)
        if files:
            return files
    return []


def frame_numbers(files: list[Path]) -> dict[int, Path]:
    """``{frame number: file}`` from file names like ``000012.jpg``; SceneError for a name that is not a number."""
    numbered = {}
    for path in files:
        if not path.stem.isdigit():
            raise SceneError(f"frame file {path} is not named by its frame number (e.g. 000001.jpg): rename or "
                             "remove it")
        numbered[int(path.stem)] = path
    return numbered


def common_frames(files: dict[str, list[Path]], datadir: Path) -> tuple[list[int], dict[str, dict[int, Path]]]:
    """The frame numbers every camera has, matched by number, and each camera's ``{number: file}``.

    Raises:
        SceneError: a camera's numbering has a gap (a frame file is missing in the middle), or cameras start at
            different frame numbers: loading by position would put frames of different times side by side.
    """
    numbered = {name: frame_numbers(fs) for name, fs in files.items()}
    for name, frames in numbered.items():
        first, last = min(frames), max(frames)
        missing = sorted(set(range(first, last + 1)) - set(frames))
        if missing:
            shown = ", ".join(f"{m:06d}" for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise SceneError(f"{datadir / 'frames' / name} misses frame(s) {shown} of {first:06d}..{last:06d}: "
                             f"every later frame of {name} would be out of time. Re-extract the camera (delete the "
                             f"folder and run tools/prepare_video.py {datadir}) or restore the missing file(s)")
    starts = {name: min(frames) for name, frames in numbered.items()}
    if len(set(starts.values())) > 1:
        raise SceneError(f"cameras of {datadir / 'frames'} start at different frame numbers {starts}: frames are "
                         "matched by number, so every camera must start at the same one")
    ends = {name: max(frames) for name, frames in numbered.items()}
    common = sorted(set.intersection(*(set(frames) for frames in numbered.values())))
    if len(set(ends.values())) > 1:
        log.warning("cameras end at different frame numbers %s; using the frames all cameras have (%06d..%06d), "
                    "the same frame numbers for every camera", ends, common[0], common[-1])
    return common, numbered


def camera_frames(datadir: Path, name: str) -> list[Path]:
    """Frame files of camera ``name``, extracting them from its video first when needed."""
    frame_dir = datadir / "frames" / name
    files = list_frames(frame_dir) if frame_dir.is_dir() else []
    video = datadir / f"{name}.mp4"
    if not files:
        if not video.exists():
            raise SceneError(f"no frames in {frame_dir} and no video {video}: run tools/prepare_video.py {datadir}")
        log.info("extracting frames of %s (once; tools/prepare_video.py does all cameras)", video)
        extract_frames(video, frame_dir)
        files = list_frames(frame_dir)
    return files


def select_frames(available: int, num_frames: int | None, frame_list: Sequence[int] | None,
                  datadir: Path, shortest: str) -> list[int]:
    """0-based frame indices (into the frames every camera has) to load, checked against their number.

    ``shortest`` names the camera with the fewest frames, for the messages.
    """
    if frame_list:
        frame_ids = [int(f) for f in frame_list]
        bad = [f for f in frame_ids if f < 0 or f >= available]
        if bad:
            raise SceneError(f"frame_list holds {bad}, but camera {shortest} has only {available} frames "
                             f"({datadir / 'frames' / shortest}; 0-based indices 0..{available - 1}): fix frame_list")
        return frame_ids
    if num_frames is not None and num_frames > 0:
        if num_frames > available:
            raise SceneError(f"num_frames = {num_frames}, but camera {shortest} has only {available} frames "
                             f"({datadir / 'frames' / shortest}; its video may be short or partly extracted): "
                             f"lower num_frames to at most {available}, or re-extract with tools/prepare_video.py")
        return list(range(num_frames))
    return list(range(available))


def downsampled_size(width: int, height: int, downsample: float, key: str = "downsample") -> tuple[int, int]:
    """``(int(W / d), int(H / d))``, refusing sizes that leave no pixel."""
    if downsample <= 0:
        raise SceneError(f"{key} = {downsample} must be positive (1 = full resolution, 2 = half, ...)")
    w, h = int(width / downsample), int(height / downsample)
    if w < 1 or h < 1:
        raise SceneError(f"{key} = {downsample} turns {width}x{height} frames into {w}x{h}: "
                         f"use a {key} of at most {min(width, height)}")
    return w, h


def cache_dir_name(downsample: float) -> str:
    """``frames2x`` for 2, ``frames2.5x`` for 2.5."""
    return f"frames{int(downsample) if float(downsample).is_integer() else downsample}x"


def other_aspect(width: int, height: int, ref_width: float, ref_height: float) -> bool:
    """Whether a ``width x height`` image has another aspect ratio than ``ref_width x ref_height`` (beyond the
    rounding of a downsampled size: 2 pixels or 1%)."""
    return abs(height - width * ref_height / ref_width) > max(2.0, 0.01 * height)


def load_frame(source: Path, cache: Path | None, size: tuple[int, int]) -> np.ndarray:
    """One frame at ``size = (W, H)``, read from the PNG cache or resized from the source and cached."""
    # a cache entry older than its source (frames replaced or re-extracted since) or damaged is rebuilt
    if cache is not None and cache.exists() and cache.stat().st_mtime >= source.stat().st_mtime:
        try:
            image = read_rgb(cache, FRAME_HINT)
            if image.shape[1::-1] == size:
                return image
        except ImageError:
            log.warning("damaged cached frame %s: resizing %s again", cache, source)
    image = read_rgb(source, FRAME_HINT)
    h, w = image.shape[:2]
    if other_aspect(w, h, *size):  # resizing would stretch it
        raise SceneError(f"{source} is {w}x{h}, another aspect ratio than the scene's {size[0]}x{size[1]} (the first "
                         "camera's frames): all cameras need one image size; rotated or cropped frames? fix them or "
                         "leave the camera out with skip_cams")
    if image.shape[1::-1] != size:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if cache is not None:
        tmp = cache.with_name(f".{cache.stem}.{os.getpid()}.tmp{cache.suffix}")
        write_rgb(tmp, image)
        os.replace(tmp, cache)
    return image


def read_n3dv(datadir: str | Path, *, downsample: float = 1.0, num_frames: int | None = None,
              frame_list: Sequence[int] | None = None, skip_cams: Sequence[int] = (), ndc: bool = True,
              hold_out_test: bool = False, test_cam: int = 0, num_workers: int | None = None) -> Scene:
    """Load a DyNeRF-layout scene.

    Args:
        datadir: scene folder with ``poses_bounds.npy`` and ``camXX.mp4`` and/or ``frames/camXX/%06d.(jpg|png)``.
        downsample: image size divisor; resized frames are cached losslessly under ``frames{d}x/``.
        num_frames: load the first ``num_frames`` frames (all when None or 0).
        frame_list: explicit 0-based frame indices (overrides ``num_frames``).
        skip_cams: camera numbers (the XX of camXX) to leave out, e.g. ``[12]`` for coffee_martini.
        ndc: convert rays to the release's forward-facing NDC.
        hold_out_test: leave the test camera out of ``train_cams``.
        test_cam: camera number of the test view.
        num_workers: threads decoding frames.

    Returns:
        The scene, images uint8 ``[F, C, H, W, 3]``.
    """
    datadir = Path(datadir)
    if not datadir.is_dir():
        raise SceneError(f"scene folder {datadir} not found: check --datadir")
    poses_path = datadir / "poses_bounds.npy"
    if not poses_path.is_file():
        raise SceneError(f"{poses_path} not found: a DyNeRF scene folder holds poses_bounds.npy (one LLFF row per "
                         "camera) next to its camXX.mp4 videos; check --datadir")
    try:
        poses_bounds = np.load(poses_path).astype(np.float64)
    except (OSError, ValueError) as err:
        raise SceneError(f"could not read {poses_path}: {err}") from err
    if poses_bounds.ndim != 2 or poses_bounds.shape[1] != 17:
        raise SceneError(f"{poses_path} has shape {poses_bounds.shape}; expected [cameras, 17] (3x5 pose + near, far)")

    # 1. cameras, in the order of the video files, minus the skipped ones
    names = find_cameras(datadir)
    if len(names) != poses_bounds.shape[0]:
        raise SceneError(f"{poses_path} has {poses_bounds.shape[0]} pose rows but {datadir} has {len(names)} cameras "
                         f"({names[0]}..{names[-1]}): poses_bounds.npy needs one row per video, in the same order")
    numbers = [camera_number(n) for n in names]
    unknown = sorted(set(int(c) for c in skip_cams) - set(numbers))
    if unknown:
        raise SceneError(f"skip_cams names cameras {unknown} that {datadir} does not have (cameras {numbers})")
    keep = [i for i, n in enumerate(numbers) if n not in set(int(c) for c in skip_cams)]
    if not keep:
        raise SceneError(f"skip_cams = {list(skip_cams)} leaves no camera of {datadir}")
    names = [names[i] for i in keep]
    numbers = [numbers[i] for i in keep]
    poses_bounds = poses_bounds[keep]

    # 2. frames and image size
    files = {name: camera_frames(datadir, name) for name in names}
    for name, fs in files.items():
        if not fs:
            raise SceneError(f"no frames in {datadir / 'frames' / name}: run tools/prepare_video.py {datadir}")
    common, numbered = common_frames(files, datadir)
    frame_ids = select_frames(len(common), num_frames, frame_list, datadir,
                              shortest=min(numbered, key=lambda name: len(numbered[name])))
    files = {name: [numbered[name][number] for number in common] for name in names}
    first = read_rgb(files[names[0]][frame_ids[0]], FRAME_HINT)
    src_h, src_w = first.shape[:2]
    poses = poses_bounds[:, :15].reshape(-1, 3, 5)
    hwf_h, hwf_w, focal = poses[0, :, 4]
    if other_aspect(src_w, src_h, hwf_w, hwf_h):
        raise SceneError(f"{files[names[0]][frame_ids[0]]} is {src_w}x{src_h} but {datadir / 'poses_bounds.npy'} "
                         f"says {int(hwf_w)}x{int(hwf_h)}, another aspect ratio (rotated or cropped frames?): the "
                         "intrinsics would not fit; use the frames the poses were made for")
    if (src_h, src_w) != (int(hwf_h), int(hwf_w)):
        log.info("frames are %dx%d while poses_bounds.npy says %dx%d; scaling the focal length to the frames",
                 src_w, src_h, int(hwf_w), int(hwf_h))
        focal = focal * src_w / hwf_w
    width, height = downsampled_size(src_w, src_h, downsample)

    # 3. images, decoded straight into one uint8 store (3 bytes per pixel)
    cache_root = None
    if (width, height) != (src_w, src_h):
        cache_root = datadir / cache_dir_name(downsample)
        for name in names:
            (cache_root / name).mkdir(parents=True, exist_ok=True)
    images = torch.empty((len(frame_ids), len(names), height, width, 3), dtype=torch.uint8)

    def fill(job: tuple[int, int]) -> None:
        f, c = job
        source = files[names[c]][frame_ids[f]]
        cache = None if cache_root is None else cache_root / names[c] / (source.stem + ".png")
        image = load_frame(source, cache, (width, height))
        images[f, c] = torch.from_numpy(image)

    jobs = [(f, c) for f in range(len(frame_ids)) for c in range(len(names))]
    with ThreadPoolExecutor(max_workers=num_workers or min(8, (os.cpu_count() or 2) * 2)) as pool:
        list(pool.map(fill, jobs))

    # 4. cameras: LLFF -> OpenGL, rescale, recentre
    c2w = cameras.llff_to_opengl(poses)
    bounds = poses_bounds[:, 15:17].copy()
    scale = float(bounds.min() * SCALE_FACTOR)
    bounds /= scale
    c2w[:, :, 3] /= scale
    c2w, recenter = cameras.recenter_poses(c2w)
    world_from_source = recenter @ np.diag([1.0 / scale] * 3 + [1.0])
    K = np.stack([cameras.intrinsics(focal * width / src_w, focal * height / src_h, width, height)] * len(names))

    if ndc:
        near_far = (0.0, 1.0)
        scene_box = np.array(NDC_SCENE_BOX)
    else:
        near_far = (float(bounds.min()), float(bounds.max()))
        scene_box = cameras.frustum_box(c2w, K, width, height, *near_far)
    render_path = cameras.spiral_path(c2w, float(bounds.min()), float(bounds.max()))

    if test_cam not in numbers:
        log.warning("test_cam %d is not loaded (missing or in skip_cams): cam%02d is the test camera", test_cam,
                    numbers[0])
    test_cams = [numbers.index(test_cam)] if test_cam in numbers else [0]
    train_cams = [c for c in range(len(names)) if not (hold_out_test and c in test_cams)]
    if not train_cams:
        raise SceneError("hold_out_test leaves no training camera: the scene has only the test camera")
    times = torch.arange(len(frame_ids), dtype=torch.float32) / max(len(frame_ids) - 1, 1)
    return Scene(
        images=images, original=images, K=torch.from_numpy(K).float(),
        c2w=torch.from_numpy(cameras.to_homogeneous(c2w)).float(), bounds=torch.from_numpy(bounds).float(),
        near_far=near_far, ndc=ndc, scene_box=torch.from_numpy(scene_box).float(), times=times,
        frame_ids=frame_ids, cam_ids=numbers, test_cams=test_cams, train_cams=train_cams,
        render_path=torch.from_numpy(render_path).float(), scale=scale,
        world_from_source=torch.from_numpy(world_from_source), datadir=datadir,
    )
