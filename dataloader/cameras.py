"""Camera math shared by every reader and by the editing code.

Conventions (used everywhere in the project):
- World space and camera-to-world matrices are OpenGL: x right, y up, z back; a camera looks along -z.
- Pixel (column i, row j) has its centre at continuous pixel coordinates (i, j) ("pixel index
  coordinates"); the ray through it uses direction ``((i + 0.5 - cx) / fx, -(j + 0.5 - cy) / fy, -1)``
  with ``cx = W / 2``, ``cy = H / 2`` (the release's convention), so ``K[:2, 2] = (W/2, H/2)`` and a
  projection returns ``K`` coordinates minus 0.5.
- Depth is z-depth: the distance along the camera's viewing axis (positive in front of it).
- NDC is the forward-facing NDC of the release: near plane at world z = -1, x focal for both axes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def normalize(v: np.ndarray) -> np.ndarray:
    """Unit vector along ``v``."""
    return v / np.linalg.norm(v)


def llff_to_opengl(poses: np.ndarray) -> np.ndarray:
    """LLFF ``[N, 3, 5]`` (rotation columns down, right, back; centre; hwf) to OpenGL ``[N, 3, 4]``."""
    R = poses[:, :, :3]
    return np.concatenate([R[:, :, 1:2], -R[:, :, 0:1], R[:, :, 2:3], poses[:, :, 3:4]], axis=2)


def opengl_to_llff(c2w: np.ndarray, hwf: np.ndarray) -> np.ndarray:
    """OpenGL ``[N, 3, 4]`` camera-to-world plus ``hwf [N, 3]`` to the LLFF ``[N, 3, 5]`` layout."""
    x, y, z, t = (c2w[:, :, k : k + 1] for k in range(4))
    return np.concatenate([-y, x, z, t, hwf[:, :, None]], axis=2)


def average_pose(c2w: np.ndarray) -> np.ndarray:
    """The release's average pose ``[3, 4]`` of ``c2w [N, 3, 4]`` (OpenGL)."""
    center = c2w[:, :, 3].mean(0)
    z = normalize(c2w[:, :, 2].mean(0))
    x = normalize(np.cross(z, c2w[:, :, 1].mean(0)))
    y = np.cross(x, z)
    return np.stack([x, y, z, center], axis=1)


def to_homogeneous(c2w: np.ndarray) -> np.ndarray:
    """``[N, 3, 4]`` -> ``[N, 4, 4]``."""
    bottom = np.broadcast_to(np.array([0.0, 0.0, 0.0, 1.0]), (c2w.shape[0], 1, 4))
    return np.concatenate([c2w, bottom], axis=1)


def recenter_poses(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left-multiply every pose by the inverse of the average pose.

    Returns:
        The recentred poses ``[N, 3, 4]`` and the ``[4, 4]`` transform applied to world points.
    """
    avg = to_homogeneous(average_pose(c2w)[None])[0]
    world_from_old = np.linalg.inv(avg)
    return (world_from_old @ to_homogeneous(c2w))[:, :3], world_from_old


def intrinsics(fx: float, fy: float, width: int, height: int) -> np.ndarray:
    """``[3, 3]`` pinhole matrix with the principal point at the image centre."""
    return np.array([[fx, 0.0, width / 2.0], [0.0, fy, height / 2.0], [0.0, 0.0, 1.0]], dtype=np.float64)


def pixel_directions(xs: Tensor, ys: Tensor, K: Tensor) -> Tensor:
    """Camera-space directions (OpenGL, z = -1) through pixel centres.

    Args:
        xs, ys: pixel columns / rows ``[N]`` (integer or float pixel index coordinates).
        K: intrinsics ``[N, 3, 3]`` or ``[3, 3]``.

    Returns:
        ``[N, 3]`` float32 directions, not normalized.
    """
    K = K.expand(xs.shape[0], 3, 3) if K.dim() == 2 else K
    dx = (xs.float() + 0.5 - K[:, 0, 2]) / K[:, 0, 0]
    dy = -(ys.float() + 0.5 - K[:, 1, 2]) / K[:, 1, 1]
    return torch.stack([dx, dy, -torch.ones_like(dx)], dim=-1)


def rays_from_pixels(xs: Tensor, ys: Tensor, K: Tensor, c2w: Tensor) -> tuple[Tensor, Tensor]:
    """World rays through pixel centres.

    Args:
        xs, ys: ``[N]`` pixel columns / rows.
        K: ``[N, 3, 3]`` or ``[3, 3]``.
        c2w: ``[N, 3|4, 4]`` or ``[3|4, 4]`` OpenGL camera-to-world.

    Returns:
        ``rays_o [N, 3]``, ``rays_d [N, 3]`` (direction = R · camera direction, not normalized).
    """
    dirs = pixel_directions(xs, ys, K)
    c2w = c2w.expand(xs.shape[0], *c2w.shape[-2:]) if c2w.dim() == 2 else c2w
    rays_d = torch.einsum("nij,nj->ni", c2w[:, :3, :3], dirs)
    rays_o = c2w[:, :3, 3].expand_as(rays_d)
    return rays_o.contiguous(), rays_d


def ndc_rays(rays_o: Tensor, rays_d: Tensor, fx: Tensor | float, width: int, height: int) -> tuple[Tensor, Tensor]:
    """World rays to the release's forward-facing NDC (near plane 1.0, x focal on both axes).

    Args:
        rays_o, rays_d: ``[N, 3]`` world rays.
        fx: x focal length in pixels (scalar or ``[N]``).

    Returns:
        NDC ``rays_o [N, 3]``, ``rays_d [N, 3]``; the NDC ray parameter runs 0 (near plane) to 1 (infinity).
    """
    t = -(1.0 + rays_o[:, 2]) / rays_d[:, 2]
    o = rays_o + t[:, None] * rays_d
    ax = -fx / (width / 2.0)
    ay = -fx / (height / 2.0)
    ox, oy, oz = o.unbind(-1)
    dx, dy, dz = rays_d.unbind(-1)
    o_ndc = torch.stack([ax * ox / oz, ay * oy / oz, 1.0 + 2.0 / oz], dim=-1)
    d_ndc = torch.stack([ax * (dx / dz - ox / oz), ay * (dy / dz - oy / oz), -2.0 / oz], dim=-1)
    return o_ndc, d_ndc


def ndc_depth_to_points(t_ndc: Tensor, rays_o: Tensor, rays_d: Tensor) -> Tensor:
    """World points at NDC ray parameter ``t_ndc`` along the *world* rays they came from.

    A point at NDC parameter t has world z = -1 / (1 - t) (near plane z = -1, t = 1 at infinity).

    Args:
        t_ndc: ``[N]`` NDC ray parameters (e.g. a depth rendered in NDC), in [0, 1).
        rays_o, rays_d: ``[N, 3]`` world rays (before the NDC conversion).

    Returns:
        ``[N, 3]`` world points.
    """
    z = -1.0 / (1.0 - t_ndc.clamp(max=1.0 - 1e-6))
    s = (z - rays_o[:, 2]) / rays_d[:, 2]
    return rays_o + s[:, None] * rays_d


def points_to_ndc_depth(points: Tensor) -> Tensor:
    """NDC ray parameter ``t`` of world points ``[N, 3]`` (inverse of :func:`ndc_depth_to_points`)."""
    return 1.0 + 1.0 / points[:, 2]


def unproject_depth(depth: Tensor, K: Tensor, c2w: Tensor) -> Tensor:
    """World points of every pixel of a z-depth map.

    Args:
        depth: ``[H, W]`` z-depth in world units.
        K: ``[3, 3]``; c2w: ``[3|4, 4]``.

    Returns:
        ``[H, W, 3]`` world points.
    """
    H, W = depth.shape
    ys, xs = torch.meshgrid(torch.arange(H, device=depth.device), torch.arange(W, device=depth.device), indexing="ij")
    dirs = pixel_directions(xs.reshape(-1), ys.reshape(-1), K.to(depth))  # z = -1, so depth scales it
    cam_pts = dirs * depth.reshape(-1, 1)
    world = cam_pts @ c2w[:3, :3].to(depth).T + c2w[:3, 3].to(depth)
    return world.reshape(H, W, 3)


def project_points(points: Tensor, K: Tensor, c2w: Tensor) -> tuple[Tensor, Tensor]:
    """Project world points into a camera.

    Args:
        points: ``[..., 3]`` world points.
        K: ``[3, 3]``; c2w: ``[3|4, 4]``.

    Returns:
        ``xy [..., 2]`` in pixel index coordinates (pixel (i, j)'s centre is (i, j)) and
        ``z [...]`` z-depth (positive in front of the camera).
    """
    R = c2w[:3, :3].to(points)
    cam = (points - c2w[:3, 3].to(points)) @ R  # R^T (p - c), row-vector form
    z = -cam[..., 2]
    K = K.to(points)
    x = K[0, 0] * cam[..., 0] / z + K[0, 2] - 0.5
    y = -K[1, 1] * cam[..., 1] / z + K[1, 2] - 0.5
    return torch.stack([x, y], dim=-1), z


def spiral_path(c2w: np.ndarray, near: float, far: float, n_views: int = 120, n_rots: int = 2,
                zrate: float = 0.5, path_radius_percentile: float = 90) -> np.ndarray:
    """LLFF-style spiral of camera-to-world matrices around the average pose.

    Args:
        c2w: ``[N, 3, 4]`` OpenGL poses (after recentring).
        near, far: closest and farthest scene depths (scene units).

    Returns:
        ``[n_views, 4, 4]`` camera-to-world matrices with the handedness of ``c2w``: the release's recentring
        (average x axis = cross(z, y)) mirrors the world, leaving det(R) = -1, and a path of right-handed
        cameras would render mirror images of the training views.
    """
    avg = average_pose(c2w)
    handedness = np.sign(np.linalg.det(c2w[0, :3, :3]))
    close, inf = near * 0.9, far * 5.0
    dt = 0.75
    focal = 1.0 / ((1.0 - dt) / close + dt / inf)
    rads = np.percentile(np.abs(c2w[:, :, 3] - avg[:, 3]), path_radius_percentile, axis=0)
    rads = np.append(rads, 1.0)
    poses = []
    for theta in np.linspace(0.0, 2.0 * np.pi * n_rots, n_views + 1)[:-1]:
        offset = np.array([np.cos(theta), -np.sin(theta), -np.sin(theta * zrate), 1.0]) * rads
        center = avg @ offset
        z = normalize(center - avg @ np.array([0.0, 0.0, -focal, 1.0]))
        x = normalize(np.cross(avg[:, 1], z))
        y = np.cross(z, x)
        poses.append(np.stack([handedness * x, y, z, center], axis=1))
    return to_homogeneous(np.stack(poses))


def frustum_box(c2w: np.ndarray, K: np.ndarray, width: int, height: int, near: float, far: float) -> np.ndarray:
    """Axis-aligned ``[2, 3]`` box around every camera's frustum between ``near`` and ``far``."""
    corners = np.array([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]], dtype=np.float64)
    pts = []
    for pose, k in zip(c2w, K):
        dirs = np.stack([(corners[:, 0] + 0.5 - k[0, 2]) / k[0, 0], -(corners[:, 1] + 0.5 - k[1, 2]) / k[1, 1],
                         -np.ones(4)], axis=1) @ pose[:3, :3].T
        for d in (near, far):
            pts.append(pose[:3, 3] + d * dirs)
    pts = np.concatenate(pts)
    return np.stack([pts.min(0), pts.max(0)])


# --- lens distortion (the radial-tangential model of OpenCV, as the Nerfies / HyperNeRF / DyCheck cameras use it) ---
def distort(x: Tensor, y: Tensor, coeffs: Tensor) -> tuple[Tensor, Tensor]:
    """Distorted normalized image coordinates of undistorted ones (OpenCV axes: x right, y down).

    ``coeffs = (k1, k2, k3, p1, p2)``: with ``r = x² + y²``, ``x_d = x (1 + k1 r + k2 r² + k3 r³) + 2 p1 x y +
    p2 (r + 2 x²)`` and ``y_d = y (...) + 2 p2 x y + p1 (r + 2 y²)``.
    """
    k1, k2, k3, p1, p2 = (coeffs[..., i] for i in range(5))
    r = x * x + y * y
    radial = 1 + r * (k1 + r * (k2 + r * k3))
    return (x * radial + 2 * p1 * x * y + p2 * (r + 2 * x * x),
            y * radial + 2 * p2 * x * y + p1 * (r + 2 * y * y))


def undistort(xd: Tensor, yd: Tensor, coeffs: Tensor, iterations: int = 10) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`distort` by Newton's method from the distorted point (float64 inside)."""
    xd64, yd64, c = xd.double(), yd.double(), coeffs.double()
    x, y = xd64.clone(), yd64.clone()
    for _ in range(iterations):
        x_req = x.detach().requires_grad_(True)
        y_req = y.detach().requires_grad_(True)
        with torch.enable_grad():
            fx, fy = distort(x_req, y_req, c)
            # the 2x2 Jacobian of (fx, fy) per point, from two backward passes over the sums
            dfx = torch.autograd.grad(fx.sum(), (x_req, y_req), retain_graph=True)
            dfy = torch.autograd.grad(fy.sum(), (x_req, y_req))
        ex, ey = fx.detach() - xd64, fy.detach() - yd64
        a, b, cc, d = dfx[0], dfx[1], dfy[0], dfy[1]
        det = a * d - b * cc
        safe = det.abs() > 1e-12
        det = torch.where(safe, det, torch.ones_like(det))
        x = x - torch.where(safe, (d * ex - b * ey) / det, torch.zeros_like(x))
        y = y - torch.where(safe, (a * ey - cc * ex) / det, torch.zeros_like(y))
    return x.to(xd.dtype), y.to(yd.dtype)


def distorted_pixel_directions(xs: Tensor, ys: Tensor, K: Tensor, coeffs: Tensor) -> Tensor:
    """:func:`pixel_directions` for a camera with lens distortion ``coeffs [5]`` or ``[N, 5]`` and skew ``K[0, 1]``:
    the pixel's normalized coordinates are undistorted before they become a direction (OpenGL, z = -1)."""
    K = K.expand(xs.shape[0], 3, 3) if K.dim() == 2 else K
    coeffs = coeffs.expand(xs.shape[0], 5) if coeffs.dim() == 1 else coeffs
    y = (ys.float() + 0.5 - K[:, 1, 2]) / K[:, 1, 1]
    x = (xs.float() + 0.5 - K[:, 0, 2] - K[:, 0, 1] * y) / K[:, 0, 0]
    x, y = undistort(x, y, coeffs)
    return torch.stack([x, -y, -torch.ones_like(x)], dim=-1).float()
