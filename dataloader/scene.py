"""The one `Scene` type every reader produces.

Images are kept as uint8 ``[F, C, H, W, 3]`` (frames, cameras, rows, columns, RGB): 3 bytes per pixel.
Rays are never stored; they are made on the fly for a batch of ``(frame, camera, y, x)`` indices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from common.errors import UserError

from . import cameras

NDC_SCENE_BOX = ((-1.5, -1.67, -1.0), (1.5, 1.67, 1.0))


class SceneError(UserError, ValueError):
    """A scene folder or a loading option is wrong; the message says which and how to fix it."""


@dataclass
class Scene:
    """A dynamic scene seen by cameras: fixed ones (multi-view rigs) or, for monocular captures, cameras whose pose
    changes from frame to frame (``frame_c2w``).

    Attributes:
        images: uint8 ``[F, C, H, W, 3]`` current images (the editor writes here). Right after loading it is
            the same tensor as ``original``; :meth:`make_editable` gives it storage of its own.
        original: uint8 ``[F, C, H, W, 3]`` images as loaded; never written.
        K: float32 ``[C, 3, 3]`` intrinsics at the loaded resolution.
        c2w: float32 ``[C, 4, 4]`` OpenGL camera-to-world, recentred and rescaled.
        bounds: float32 ``[C, 2]`` per-camera near/far depth in scene units.
        near_far: sampling range along rays: ``(0, 1)`` in NDC, else the scene's near/far.
        ndc: whether rays are converted to NDC.
        scene_box: float32 ``[2, 3]`` axis-aligned box (min, max) holding the scene (in NDC space if ``ndc``).
        times: float32 ``[F]`` frame times in [0, 1].
        frame_ids: source frame index (0-based) of every loaded frame.
        cam_ids: source camera index (the ``XX`` of ``camXX``) of every loaded camera.
        test_cams: positions along the C axis of the test cameras.
        train_cams: positions along the C axis used for fitting.
        render_path: float32 ``[P, 4, 4]`` camera-to-world matrices of a spiral path.
        scale: the factor scene units were divided by (world / scale = scene).
        world_from_source: float64 ``[4, 4]`` maps homogeneous source-world points to scene space (rescale + recentre).
        datadir: folder the scene was read from.
        gt: ground truth of synthetic scenes (``depth [F, C, H, W]`` in scene units, flows, occlusions), or None.
        frame_c2w: float32 ``[F, C, 4, 4]`` camera-to-world of every frame when cameras move (monocular captures);
            None for fixed cameras (then ``c2w`` is every frame's pose; with ``frame_c2w``, ``c2w`` is frame 0's).
        distortion: float32 ``[C, 5]`` lens distortion ``(k1, k2, k3, p1, p2)`` (:func:`dataloader.cameras.distort`),
            or None for pinhole cameras.
    """

    images: Tensor
    original: Tensor
    K: Tensor
    c2w: Tensor
    bounds: Tensor
    near_far: tuple[float, float]
    ndc: bool
    scene_box: Tensor
    times: Tensor
    frame_ids: list[int]
    cam_ids: list[int]
    test_cams: list[int]
    train_cams: list[int]
    render_path: Tensor
    scale: float = 1.0
    world_from_source: Tensor | None = None
    datadir: Path | None = None
    gt: dict[str, Tensor] | None = field(default=None, repr=False)
    frame_c2w: Tensor | None = None
    distortion: Tensor | None = None

    # -- sizes ---------------------------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return self.images.shape[0]

    @property
    def num_cams(self) -> int:
        return self.images.shape[1]

    @property
    def height(self) -> int:
        return self.images.shape[2]

    @property
    def width(self) -> int:
        return self.images.shape[3]

    @property
    def focal(self) -> float:
        """x focal length (pixels) of camera 0, the one NDC uses."""
        return float(self.K[0, 0, 0])

    # -- image store ---------------------------------------------------------------------------------------
    def make_editable(self) -> Scene:
        """Give ``images`` storage of its own so edits never touch ``original`` (doubles image memory)."""
        if self.images.data_ptr() == self.original.data_ptr():
            self.images = self.original.clone()
        return self

    def share_memory_(self) -> Scene:
        """Move the image store to shared memory so spawned processes see one buffer."""
        self.images.share_memory_()
        if self.original.data_ptr() != self.images.data_ptr():
            self.original.share_memory_()
        return self

    def rgb(self, frames: Tensor, cams: Tensor, ys: Tensor, xs: Tensor, original: bool = False) -> Tensor:
        """Colours of a batch of pixels as float ``[N, 3]`` in [0, 1]."""
        store = self.original if original else self.images
        return store[frames, cams, ys, xs].float() / 255.0

    def image(self, frame: int, cam: int, original: bool = False) -> Tensor:
        """One image as float ``[H, W, 3]`` in [0, 1]."""
        store = self.original if original else self.images
        return store[frame, cam].float() / 255.0

    # -- cameras and rays --------------------------------------------------------------------------------------
    @property
    def moving(self) -> bool:
        """Whether camera poses change from frame to frame (a monocular capture)."""
        return self.frame_c2w is not None

    def pose(self, frame: int, cam: int) -> Tensor:
        """``[4, 4]`` camera-to-world of camera ``cam`` at frame ``frame``."""
        return self.frame_c2w[frame, cam] if self.frame_c2w is not None else self.c2w[cam]

    def poses(self, frame: int) -> Tensor:
        """``[C, 4, 4]`` camera-to-world of every camera at frame ``frame``."""
        return self.frame_c2w[frame] if self.frame_c2w is not None else self.c2w

    def world_rays(self, cams: Tensor, ys: Tensor, xs: Tensor, frames: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """World-space rays ``rays_o, rays_d [N, 3]`` through pixels ``(ys, xs)`` of cameras ``cams`` (at
        ``frames``, which only matter when cameras move)."""
        if self.frame_c2w is not None:
            if frames is None:
                raise ValueError("this scene's cameras move: world_rays needs the frames")
            c2w = self.frame_c2w[frames, cams]
        else:
            c2w = self.c2w[cams]
        if self.distortion is None:
            return cameras.rays_from_pixels(xs, ys, self.K[cams], c2w)
        dirs = cameras.distorted_pixel_directions(xs, ys, self.K[cams], self.distortion[cams])
        rays_d = torch.einsum("nij,nj->ni", c2w[:, :3, :3], dirs)
        return c2w[:, :3, 3].expand_as(rays_d).contiguous(), rays_d

    def rays(self, frames: Tensor, cams: Tensor, ys: Tensor, xs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Rays of a batch of pixel indices, in the space the model samples (NDC if ``ndc``).

        Args:
            frames, cams, ys, xs: long ``[N]`` (or broadcastable scalars) pixel indices.

        Returns:
            ``rays_o [N, 3]``, ``rays_d [N, 3]``, ``times [N]``.
        """
        frames, cams, ys, xs = torch.broadcast_tensors(*(torch.as_tensor(v) for v in (frames, cams, ys, xs)))
        rays_o, rays_d = self.world_rays(cams, ys, xs, frames)
        if self.ndc:
            rays_o, rays_d = cameras.ndc_rays(rays_o, rays_d, self.focal, self.width, self.height)
        return rays_o, rays_d, self.times[frames]

    def camera_rays(self, c2w: Tensor, K: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Rays of every pixel of a free camera (e.g. on the render path), row-major ``[H * W, 3]`` each.

        Args:
            c2w: ``[3|4, 4]`` camera-to-world in scene space.
            K: ``[3, 3]`` intrinsics; camera 0's by default.
        """
        K = self.K[0] if K is None else K
        ys, xs = torch.meshgrid(torch.arange(self.height), torch.arange(self.width), indexing="ij")
        rays_o, rays_d = cameras.rays_from_pixels(xs.reshape(-1), ys.reshape(-1), K, c2w.float())
        if self.ndc:
            rays_o, rays_d = cameras.ndc_rays(rays_o, rays_d, float(K[0, 0]), self.width, self.height)
        return rays_o, rays_d

    def image_rays(self, cam: int, frame: int = 0) -> tuple[Tensor, Tensor]:
        """Rays of every pixel of dataset camera ``cam`` (at ``frame`` when cameras move), row-major ``[H * W, 3]``."""
        if self.frame_c2w is None and self.distortion is None:
            return self.camera_rays(self.c2w[cam], self.K[cam])
        ys, xs = torch.meshgrid(torch.arange(self.height), torch.arange(self.width), indexing="ij")
        return self.rays(frame, cam, ys.reshape(-1), xs.reshape(-1))[:2]

    def nbytes(self) -> int:
        """Bytes held by the tensors of this scene, ground truth excluded (shared storage counted once)."""
        seen, total = set(), 0
        for name, t in vars(self).items():
            if name != "gt" and isinstance(t, Tensor) and t.untyped_storage().data_ptr() not in seen:
                seen.add(t.untyped_storage().data_ptr())
                total += t.untyped_storage().nbytes()
        return total
