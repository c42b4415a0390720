"""The built-in synthetic dynamic scene: its geometry, analytic ray casting, and the DyNeRF-layout writer.

A forward-facing rig of cameras looks at a textured wall and floor with a few textured ellipsoids that
move, rotate and deform over time. Everything is ray cast analytically with numpy, so depth, optical flow
and occlusion are known exactly.

Writes into OUT:
    poses_bounds.npy                 [C, 17] LLFF rows (as COLMAP/DyNeRF write them)
    camXX.mp4                        one video per camera (unless --no_videos)
    frames/camXX/%06d.png            lossless frames, 1-based
    gt/depth.npy                     float32 [F, C, H, W] z-depth, source world units
    gt/cameras.npz                   c2w [C, 4, 4] (OpenGL, source world), K [C, 3, 3], height, width
    gt/flow_fw.npy, gt/flow_bw.npy   float32 [F-1, C, H, W, 2] pixels; fw[k]: frame k -> k+1, bw[k]: k+1 -> k
    gt/occ_fw.npy, gt/occ_bw.npy     bool [F-1, C, H, W] True where the pixel is not visible in the other frame
    gt/meta.json                     the parameters used

Written by ``tools/make_synthetic_scene.py``; read back by :mod:`dataloader.synthetic`. With ``--monocular``
(:func:`make_monocular_capture`) the same scene is written as a monocular capture in the Nerfies layout: one
camera moving through the rig, one image per time, two static validation cameras, and ``gt/`` with per-frame
poses.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cameras import intrinsics, opengl_to_llff

log = logging.getLogger(__name__)

WALL_Z = -7.0
FLOOR_Y = -1.6
BACKGROUND_IDS = (0, 1)  # wall, floor; ellipsoids are 2, 3, ...


@dataclass
class Ellipsoid:
    """An ellipsoid whose centre, rotation (about y) and semi-axes vary with time t in [0, 1]."""

    center0: np.ndarray
    velocity: np.ndarray
    wobble: np.ndarray  # amplitude of a sinusoidal offset of the centre
    axes0: np.ndarray
    pulse: np.ndarray  # relative change of the semi-axes over a period
    spin: float  # radians of rotation about y over t in [0, 1]
    color_a: np.ndarray
    color_b: np.ndarray
    stripes: int

    def pose(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centre ``[3]``, rotation ``[3, 3]`` and semi-axes ``[3]`` at time ``t``."""
        phase = 2.0 * np.pi * t
        center = self.center0 + self.velocity * t + self.wobble * np.sin(phase)
        axes = self.axes0 * (1.0 + self.pulse * np.sin(phase))
        a = self.spin * t
        rot = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
        return center, rot, axes

    def to_world(self, u: np.ndarray, t: float) -> np.ndarray:
        """Points with local unit-sphere coordinates ``u [N, 3]`` placed at time ``t``."""
        center, rot, axes = self.pose(t)
        return (u * axes) @ rot.T + center

    def intersect(self, rays_o: np.ndarray, rays_d: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Nearest positive ray parameter (inf on a miss) and local coordinates of the hit, ``[N]``, ``[N, 3]``."""
        center, rot, axes = self.pose(t)
        o = ((rays_o - center) @ rot) / axes
        d = (rays_d @ rot) / axes
        a = (d * d).sum(-1)
        b = 2.0 * (o * d).sum(-1)
        c = (o * o).sum(-1) - 1.0
        disc = b * b - 4 * a * c
        hit = disc > 0
        root = np.sqrt(np.where(hit, disc, 0.0))
        s = np.where(hit, (-b - root) / (2 * a), np.inf)
        s = np.where(s > 1e-6, s, np.inf)
        return s, o + s[:, None] * d

    def color(self, u: np.ndarray, t: float) -> np.ndarray:
        """Texture at local coordinates ``u [N, 3]`` with a little fixed lighting."""
        lon = np.arctan2(u[:, 2], u[:, 0])
        lat = np.clip(u[:, 1], -1.0, 1.0)
        pattern = 0.5 + 0.5 * np.sin(self.stripes * lon) * np.cos(2.5 * np.pi * lat)
        base = self.color_a * pattern[:, None] + self.color_b * (1.0 - pattern[:, None])
        _, rot, axes = self.pose(t)
        normal = (u / axes) @ rot.T
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
        light = np.array([0.4, 0.7, 0.6]) / np.linalg.norm([0.4, 0.7, 0.6])
        shade = 0.75 + 0.25 * np.clip(normal @ light, 0.0, 1.0)
        return base * shade[:, None]


def make_objects(rng: np.random.Generator) -> list[Ellipsoid]:
    """Three ellipsoids with slightly randomised colours and motion."""
    jitter = lambda scale: rng.uniform(-scale, scale, 3)  # noqa: E731
    return [
        Ellipsoid(np.array([-1.0, 0.1, -3.8]) + jitter(0.05), np.array([0.7, 0.0, 0.0]), np.array([0.0, 0.2, 0.0]),
                  np.array([0.6, 0.6, 0.6]), np.array([0.15, -0.1, 0.0]), 0.0,
                  np.array([0.95, 0.35, 0.2]), np.array([0.95, 0.85, 0.3]), 6),
        Ellipsoid(np.array([1.0, -0.4, -4.6]) + jitter(0.05), np.array([-0.2, 0.0, 0.4]), np.array([0.0, 0.0, 0.0]),
                  np.array([0.5, 0.85, 0.5]), np.array([0.0, 0.1, 0.0]), 0.9 * np.pi,
                  np.array([0.2, 0.45, 0.95]), np.array([0.85, 0.9, 0.95]), 4),
        Ellipsoid(np.array([0.15, 0.75, -3.1]) + jitter(0.05), np.array([0.35, -0.25, 0.0]), np.array([0.1, 0.0, 0.0]),
                  np.array([0.35, 0.35, 0.35]), np.array([0.1, 0.1, 0.1]), 0.5 * np.pi,
                  np.array([0.25, 0.8, 0.3]), np.array([0.1, 0.25, 0.1]), 5),
    ]


def background_color(points: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Static textures of the wall (id 0) and the floor (id 1) at world points ``[N, 3]``."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    wall = np.stack([
        0.55 + 0.25 * np.sin(1.7 * x) * np.sin(1.9 * y) + 0.12 * np.sin(4.1 * x + 2.3 * y),
        0.5 + 0.2 * np.cos(1.3 * x - 0.7 * y) + 0.12 * np.sin(3.7 * y - 1.1 * x),
        0.6 + 0.25 * np.sin(0.9 * x + 2.1 * y + 1.0) * np.cos(2.9 * x),
    ], axis=-1)
    floor = np.stack([
        0.45 + 0.2 * np.sin(2.3 * x) * np.cos(2.1 * z),
        0.4 + 0.15 * np.sin(3.1 * x + 1.7 * z),
        0.3 + 0.15 * np.cos(2.7 * z - 0.9 * x),
    ], axis=-1)
    return np.where((ids == 0)[:, None], wall, floor)


def make_rig(cams: int, width: int, height: int, fov_deg: float = 55.0) -> tuple[np.ndarray, np.ndarray]:
    """Forward-facing rig: cameras on two rows near z = 0, turned towards a point in the scene.

    Returns:
        ``c2w [C, 4, 4]`` OpenGL and ``K [C, 3, 3]``.
    """
    cols = int(np.ceil(cams / 2)) if cams > 1 else 1
    focus = np.array([0.0, 0.0, -4.5])
    poses = []
    for c in range(cams):
        row, col = divmod(c, cols)
        x = (col - (cols - 1) / 2) * 0.35
        y = (0.5 - row) * 0.25 if cams > 1 else 0.0
        center = np.array([x, y, 0.05 * np.sin(1.3 * c)])
        z = center - focus
        z /= np.linalg.norm(z)
        xa = np.cross([0.0, 1.0, 0.0], z)
        xa /= np.linalg.norm(xa)
        ya = np.cross(z, xa)
        pose = np.eye(4)
        pose[:3, :3] = np.stack([xa, ya, z], axis=1)
        pose[:3, 3] = center
        poses.append(pose)
    fx = 0.5 * width / np.tan(np.deg2rad(fov_deg) / 2)
    K = np.stack([intrinsics(fx, fx, width, height)] * cams)
    return np.stack(poses), K


def camera_rays(c2w: np.ndarray, K: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Rays through every pixel centre, row-major ``[H * W, 3]``; the ray parameter is z-depth."""
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    dirs = np.stack([(xs + 0.5 - K[0, 2]) / K[0, 0], -(ys + 0.5 - K[1, 2]) / K[1, 1], -np.ones_like(xs, float)], -1)
    rays_d = dirs.reshape(-1, 3) @ c2w[:3, :3].T
    return np.broadcast_to(c2w[:3, 3], rays_d.shape), rays_d


def cast(rays_o: np.ndarray, rays_d: np.ndarray, objects: list[Ellipsoid], t: float):
    """Ray cast one time step.

    Returns:
        depth ``[N]``, surface ids ``[N]``, colours ``[N, 3]``, and per-pixel local coordinates ``[N, 3]``
        (object-local for ellipsoids, world for the static background).
    """
    s_wall = (WALL_Z - rays_o[:, 2]) / rays_d[:, 2]
    s_floor = np.where(rays_d[:, 1] < 0, (FLOOR_Y - rays_o[:, 1]) / np.minimum(rays_d[:, 1], -1e-12), np.inf)
    depth = np.where(s_floor < s_wall, s_floor, s_wall)
    ids = np.where(s_floor < s_wall, 1, 0)
    local = rays_o + depth[:, None] * rays_d
    for k, obj in enumerate(objects):
        s, u = obj.intersect(rays_o, rays_d, t)
        closer = s < depth
        depth = np.where(closer, s, depth)
        ids = np.where(closer, k + 2, ids)
        local = np.where(closer[:, None], u, local)
    color = background_color(local, ids)
    for k, obj in enumerate(objects):
        sel = ids == k + 2
        if sel.any():
            color[sel] = obj.color(local[sel], t)
    return depth, ids, np.clip(color, 0.0, 1.0), local


def project(points: np.ndarray, c2w: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points ``[N, 3]`` to pixel index coordinates ``[N, 2]`` and z-depth ``[N]``."""
    cam = (points - c2w[:3, 3]) @ c2w[:3, :3]
    z = -cam[:, 2]
    x = K[0, 0] * cam[:, 0] / z + K[0, 2] - 0.5
    y = -K[1, 1] * cam[:, 1] / z + K[1, 2] - 0.5
    return np.stack([x, y], -1), z


def flow_between(ids, local, t_dst, objects, c2w, K, depth_dst, ids_dst, width, height):
    """Flow of every pixel of one frame into another frame of the same camera, and its occlusion mask."""
    points = local.copy()
    for k, obj in enumerate(objects):
        sel = ids == k + 2
        if sel.any():
            points[sel] = obj.to_world(local[sel], t_dst)
    xy_dst, z_dst = project(points, c2w, K)
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    flow = xy_dst - np.stack([xs.reshape(-1), ys.reshape(-1)], -1)
    xi, yi = np.round(xy_dst[:, 0]).astype(int), np.round(xy_dst[:, 1]).astype(int)
    inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height) & (z_dst > 0)
    flat = np.clip(yi, 0, height - 1) * width + np.clip(xi, 0, width - 1)
    same_surface = ids_dst[flat] == ids
    depth_ok = np.abs(depth_dst[flat] - z_dst) < 0.03 * z_dst
    occluded = ~(inside & same_surface & depth_ok)
    return flow.reshape(height, width, 2).astype(np.float32), occluded.reshape(height, width)


def make_synthetic_scene(out_dir: str | Path, cams: int = 6, frames: int = 12, width: int = 160, height: int = 120,
                         seed: int = 0, videos: bool = True) -> Path:
    """Render the scene into ``out_dir`` (see the module docstring for the layout) and return the folder."""
    if cams < 1 or frames < 1 or width < 8 or height < 8:
        raise ValueError(f"make_synthetic_scene: need cams >= 1, frames >= 1 and a size of at least 8x8, got "
                         f"cams={cams}, frames={frames}, {width}x{height}")
    import imageio.v3 as iio

    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    objects = make_objects(rng)
    c2w, K = make_rig(cams, width, height)
    times = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)

    depth = np.zeros((frames, cams, height, width), np.float32)
    images = np.zeros((frames, cams, height, width, 3), np.uint8)
    flow_fw = np.zeros((max(frames - 1, 0), cams, height, width, 2), np.float32)
    flow_bw = np.zeros_like(flow_fw)
    occ_fw = np.zeros((max(frames - 1, 0), cams, height, width), bool)
    occ_bw = np.zeros_like(occ_fw)
    for c in range(cams):
        rays_o, rays_d = camera_rays(c2w[c], K[c], width, height)
        casts = [cast(rays_o, rays_d, objects, t) for t in times]
        for f, (d, _, rgb, _) in enumerate(casts):
            depth[f, c] = d.reshape(height, width)
            images[f, c] = np.round(rgb.reshape(height, width, 3) * 255).astype(np.uint8)
        for f in range(frames - 1):
            (d0, i0, _, l0), (d1, i1, _, l1) = casts[f], casts[f + 1]
            flow_fw[f, c], occ_fw[f, c] = flow_between(i0, l0, times[f + 1], objects, c2w[c], K[c], d1, i1,
                                                       width, height)
            flow_bw[f, c], occ_bw[f, c] = flow_between(i1, l1, times[f], objects, c2w[c], K[c], d0, i0,
                                                       width, height)

    out.mkdir(parents=True, exist_ok=True)
    (out / "gt").mkdir(exist_ok=True)
    hwf = np.stack([np.array([height, width, K[c, 0, 0]]) for c in range(cams)])
    llff = opengl_to_llff(c2w[:, :3], hwf).reshape(cams, 15)
    near = depth.min(axis=(0, 2, 3)) * 0.9
    far = depth.max(axis=(0, 2, 3)) * 1.1
    np.save(out / "poses_bounds.npy", np.concatenate([llff, near[:, None], far[:, None]], 1))
    for c in range(cams):
        cam_dir = out / "frames" / f"cam{c:02d}"
        cam_dir.mkdir(parents=True, exist_ok=True)
        for f in range(frames):
            iio.imwrite(cam_dir / f"{f + 1:06d}.png", images[f, c])
        if videos:
            iio.imwrite(out / f"cam{c:02d}.mp4", images[:, c], fps=30, codec="libx264", macro_block_size=1,
                        quality=9)
    np.save(out / "gt" / "depth.npy", depth)
    np.savez(out / "gt" / "cameras.npz", c2w=c2w, K=K, height=height, width=width)
    np.save(out / "gt" / "flow_fw.npy", flow_fw)
    np.save(out / "gt" / "flow_bw.npy", flow_bw)
    np.save(out / "gt" / "occ_fw.npy", occ_fw)
    np.save(out / "gt" / "occ_bw.npy", occ_bw)
    meta = dict(cams=cams, frames=frames, width=width, height=height, seed=seed, videos=videos,
                wall_z=WALL_Z, floor_y=FLOOR_Y, times=times.tolist())
    (out / "gt" / "meta.json").write_text(json.dumps(meta, indent=2))
    return out


def render_view(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """One view of the scene with random object jitter, time and camera (a rig camera moved and turned a little).

    Returns:
        ``[height, width, 3]`` float64 RGB in [0, 1].
    """
    objects = make_objects(rng)
    c2w, K = make_rig(int(rng.integers(1, 9)), width, height, fov_deg=float(rng.uniform(40.0, 70.0)))
    pose = c2w[rng.integers(len(c2w))].copy()
    pose[:3, 3] += rng.uniform(-0.4, 0.4, 3)
    a, b = rng.uniform(-0.15, 0.15, 2)  # small yaw and pitch, radians
    yaw = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
    pitch = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(b), -np.sin(b)], [0.0, np.sin(b), np.cos(b)]])
    pose[:3, :3] = yaw @ pitch @ pose[:3, :3]
    rays_o, rays_d = camera_rays(pose, K[0], width, height)
    _, _, rgb, _ = cast(rays_o, rays_d, objects, float(rng.uniform(0.0, 1.0)))
    return rgb.reshape(height, width, 3)


def look_at(position, target) -> np.ndarray:
    """``[4, 4]`` OpenGL camera-to-world at ``position`` looking at ``target`` (y up)."""
    z = np.asarray(position, dtype=np.float64) - np.asarray(target, dtype=np.float64)
    z /= np.linalg.norm(z)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    pose[:3, 3] = position
    return pose


def monocular_trajectory(frames: int, focus: np.ndarray = np.array([0.0, 0.0, -4.5])) -> np.ndarray:
    """``[F, 4, 4]`` OpenGL poses of a hand-held camera: a smooth sideways arc with a little bob, facing ``focus``."""
    steps = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
    return np.stack([look_at([-0.6 + 1.2 * s, 0.12 * np.sin(2 * np.pi * s), 0.25 * np.sin(np.pi * s)], focus)
                     for s in steps])


def make_monocular_capture(out_dir: str | Path, frames: int = 24, width: int = 160, height: int = 120,
                           seed: int = 0, scale: float = 0.25) -> Path:
    """Render the scene as a monocular capture in the Nerfies layout (read by :mod:`dataloader.nerfies`).

    One camera moves smoothly through the rig (:func:`monocular_trajectory`), one image per time; two static
    validation cameras see every time. Image ids are ``{camera}_{time:05d}``. Besides the layout's files it writes
    ``gt/`` as :func:`make_synthetic_scene` does, with per-frame poses: ``cameras.npz`` holds ``c2w [F, C, 4, 4]``
    (source world), ``K [C, 3, 3]``, ``height``, ``width``; ``depth.npy`` is ``[F, C, H, W]``; flows and
    occlusions ``[F-1, C, H, W(, 2)]`` follow the moving camera from one frame to the next.
    """
    if frames < 2 or width < 8 or height < 8:
        raise ValueError(f"make_monocular_capture: need frames >= 2 and at least 8x8, got {frames}, {width}x{height}")
    import imageio.v3 as iio

    from .nerfies import camera_to_json

    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    objects = make_objects(rng)
    statics, K_rig = make_rig(2, width, height)
    poses = np.concatenate([monocular_trajectory(frames)[:, None], np.repeat(statics[None], frames, axis=0)], axis=1)
    streams = poses.shape[1]
    K = np.repeat(K_rig[:1], streams, axis=0)
    times = np.linspace(0.0, 1.0, frames)

    depth = np.zeros((frames, streams, height, width), np.float32)
    images = np.zeros((frames, streams, height, width, 3), np.uint8)
    flow_fw = np.zeros((frames - 1, streams, height, width, 2), np.float32)
    flow_bw = np.zeros_like(flow_fw)
    occ_fw = np.zeros((frames - 1, streams, height, width), bool)
    occ_bw = np.zeros_like(occ_fw)
    points = []
    for c in range(streams):
        casts = []
        for f, t in enumerate(times):
            rays_o, rays_d = camera_rays(poses[f, c], K[c], width, height)
            casts.append(cast(rays_o, rays_d, objects, t))
            depth[f, c] = casts[-1][0].reshape(height, width)
            images[f, c] = np.round(casts[-1][2].reshape(height, width, 3) * 255).astype(np.uint8)
            points.append(rays_o[::7] + casts[-1][0][::7, None] * rays_d[::7])
        for f in range(frames - 1):
            (d0, i0, _, l0), (d1, i1, _, l1) = casts[f], casts[f + 1]
            flow_fw[f, c], occ_fw[f, c] = flow_between(i0, l0, times[f + 1], objects, poses[f + 1, c], K[c], d1, i1,
                                                       width, height)
            flow_bw[f, c], occ_bw[f, c] = flow_between(i1, l1, times[f], objects, poses[f, c], K[c], d0, i0,
                                                       width, height)

    # the layout: images, one camera file per image, the id lists, the scene's normalization
    points = np.concatenate(points)
    center = 0.5 * (points.min(0) + points.max(0))
    (out / "rgb" / "1x").mkdir(parents=True, exist_ok=True)
    (out / "camera").mkdir(exist_ok=True)
    (out / "gt").mkdir(exist_ok=True)
    ids = [[f"{c}_{f:05d}" for c in range(streams)] for f in range(frames)]
    metadata = {}
    for f in range(frames):
        for c in range(streams):
            iio.imwrite(out / "rgb" / "1x" / f"{ids[f][c]}.png", images[f, c])
            camera = camera_to_json(poses[f, c], K[c], [0.0] * 5, (width, height))
            (out / "camera" / f"{ids[f][c]}.json").write_text(json.dumps(camera, indent=1))
            metadata[ids[f][c]] = {"warp_id": f, "appearance_id": f, "camera_id": c}
    train = [ids[f][0] for f in range(frames)]
    val = [ids[f][c] for f in range(frames) for c in range(1, streams)]
    (out / "dataset.json").write_text(json.dumps({"count": len(metadata), "num_exemplars": len(train),
                                                  "ids": train + val, "train_ids": train, "val_ids": val}, indent=1))
    (out / "metadata.json").write_text(json.dumps(metadata, indent=1))
    margin = 0.05 * (points.max(0) - points.min(0))
    (out / "scene.json").write_text(json.dumps({
        "center": center.tolist(), "scale": scale, "near": float(depth.min() * 0.9 * scale),
        "far": float(depth.max() * 1.1 * scale),
        "bbox": [(points.min(0) - margin).tolist(), (points.max(0) + margin).tolist()]}, indent=1))
    np.save(out / "gt" / "depth.npy", depth)
    np.savez(out / "gt" / "cameras.npz", c2w=poses, K=K, height=height, width=width)
    for name, array in (("flow_fw", flow_fw), ("flow_bw", flow_bw), ("occ_fw", occ_fw), ("occ_bw", occ_bw)):
        np.save(out / "gt" / f"{name}.npy", array)
    meta = dict(monocular=True, frames=frames, width=width, height=height, seed=seed, wall_z=WALL_Z, floor_y=FLOOR_Y,
                times=times.tolist(), streams=["moving", "static 1", "static 2"])
    (out / "gt" / "meta.json").write_text(json.dumps(meta, indent=2))
    return out
