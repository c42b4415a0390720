"""Stream TensoRF fields: per-frame tensor-decomposed density and appearance (``../shared/spec/stream-tensorf.md``).

A field computes density and appearance features at points and turns features into colour; it never samples
rays or composites (see :mod:`models.sampling`, :mod:`models.compositing` and :mod:`models.rendering`).

Conventions: ``xyz`` passed to a field is box-normalized to [-1, 1] (:meth:`StreamTensorBase.normalize_coord`);
``t`` is the time in [0, 1] of the one frame a batch holds; grids are sampled with bilinear ``grid_sample``,
``align_corners=True``. Constructor arguments use the release's names, because checkpoints carry them as
``kwargs`` and a model rebuilds itself from them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.errors import UserError

from .shading import build_shader
from .streaming import ChannelStream

log = logging.getLogger(__name__)

MAT_MODE = ((0, 1), (0, 2), (1, 2))  # plane axes (a, b); the plane tensor is [1, C, res_b, res_a]
VEC_MODE = (2, 1, 0)  # line axis paired with each plane
RELEASE_ONLY_KWARGS = ("deform_field", "portion_decoder", "virtual_cannonical", "share_portion_embeddings",
                       "portion_weight", "device")


class FrameTimes(NamedTuple):
    """Times of a lookup's points at several frames: the first ``counts[0]`` points at ``times[0]``, and so on (a
    training batch's frames in one lookup)."""

    times: tuple[float, ...]
    counts: tuple[int, ...]


def each_frame(lookup: Callable[[Tensor, float], Tensor], xyz: Tensor, t: float | FrameTimes, dim: int = 0) -> Tensor:
    """``lookup(xyz, t)``; for :class:`FrameTimes`, one lookup per frame, concatenated along ``dim``."""
    if not isinstance(t, FrameTimes):
        return lookup(xyz, t)
    return torch.cat([lookup(x, time) for x, time in zip(xyz.split(list(t.counts)), t.times)], dim=dim)


class FieldError(UserError, ValueError):
    """A field cannot be built from the given arguments; the message names the argument and a fix."""


def N_to_reso(n_voxels: int, aabb: Tensor) -> list[int]:
    """Grid resolution ``[3]`` holding about ``n_voxels`` cubic voxels in the box ``aabb [2, 3]``.

    Computed in float32 like the release, so truncation gives the same sizes.
    """
    size = (aabb[1] - aabb[0]).float().cpu()
    voxel = (size.prod() / n_voxels).pow(1.0 / 3.0)
    return (size / voxel).long().tolist()


def n_samples_for(reso: Sequence[int], step_ratio: float) -> int:
    """Training samples per ray for a grid resolution: ``int(|reso| / step_ratio)``."""
    return int(np.linalg.norm(np.asarray(reso, dtype=np.float64)) / step_ratio)


def voxel_schedule(n_init: int, n_final: int, n_upsamples: int) -> list[int]:
    """Voxel counts after each upsampling: log-linear from ``n_init`` to ``n_final``, first entry dropped."""
    counts = torch.round(torch.exp(torch.linspace(math.log(n_init), math.log(n_final), n_upsamples + 1))).long()
    return counts.tolist()[1:]


def _as_list(n_comp: int | Sequence[int]) -> list[int]:
    return [int(n_comp)] * 3 if isinstance(n_comp, int) else [int(v) for v in n_comp]


class AlphaGridMask(nn.Module):
    """Boolean occupancy volume of a release checkpoint (``alphaMask.*``); samples with alpha 0 are skipped.

    Args:
        aabb: ``[2, 3]`` box of the volume.
        alpha_volume: ``[D, H, W]`` (z, y, x) float 0/1.
    """

    def __init__(self, aabb: Tensor, alpha_volume: Tensor):
        super().__init__()
        self.register_buffer("aabb", aabb.float(), persistent=False)
        self.register_buffer("alpha_volume", alpha_volume.float().view(1, 1, *alpha_volume.shape[-3:]),
                             persistent=False)

    def sample_alpha(self, xyz: Tensor) -> Tensor:
        """Mask value at world (box-space) points ``[N, 3]`` -> ``[N]``."""
        norm = (xyz - self.aabb[0]) * (2.0 / (self.aabb[1] - self.aabb[0])) - 1
        return F.grid_sample(self.alpha_volume, norm.view(1, -1, 1, 1, 3), align_corners=True).view(-1)


class StreamTensorBase(nn.Module):
    """Shared part of the stream TensoRF fields.

    Args:
        aabb: ``[2, 3]`` scene box (min, max).
        gridSize: grid resolution ``[3]`` (x, y, z).
        density_n_comp, appearance_n_comp: channels used per time for each of the 3 factor pairs.
        app_dim: appearance feature size fed to the shader (``data_dim_color``).
        shadingMode: a key of :data:`models.shading.SHADERS`.
        near_far: ray sampling range.
        density_shift: added before softplus (``fea2denseAct = softplus``).
        alphaMask_thres: threshold of the alpha mask volume (kept for checkpoints).
        distance_scale: multiplies sample distances in compositing.
        rayMarch_weight_thres: colour is only evaluated where the compositing weight exceeds this.
        pos_pe, view_pe, fea_pe: positional-encoding frequencies of positions, view directions, features.
        featureC: hidden width of the shading MLP.
        step_ratio: sampling step in voxels.
        fea2denseAct: ``relu`` or ``softplus``.
        num_frames, ld_per_frame: channel streaming (:class:`models.streaming.ChannelStream`).
        target_portion: kept as a buffer so release checkpoints load (unused by the math).
        alphaMask: optional :class:`AlphaGridMask`.
        **release_kwargs: other keys of release checkpoints; the deformation options must be off.
    """

    def __init__(self, aabb: Tensor, gridSize: Sequence[int], density_n_comp: int | Sequence[int] = 8,
                 appearance_n_comp: int | Sequence[int] = 24, app_dim: int = 27, shadingMode: str = "MLP_PE",
                 near_far: Sequence[float] = (2.0, 6.0), density_shift: float = -10, alphaMask_thres: float = 0.001,
                 distance_scale: float = 25, rayMarch_weight_thres: float = 0.0001, pos_pe: int = 6,
                 view_pe: int = 6, fea_pe: int = 6, featureC: int = 128, step_ratio: float = 2.0,
                 fea2denseAct: str = "softplus", num_frames: int = 1, ld_per_frame: float = 1,
                 target_portion: Sequence[int] = (0, 0, 1), alphaMask: AlphaGridMask | None = None,
                 **release_kwargs):
        super().__init__()
        unknown = sorted(set(release_kwargs) - set(RELEASE_ONLY_KWARGS))
        if unknown:
            raise FieldError(f"unknown field arguments {unknown}; known: the release's kwargs ({RELEASE_ONLY_KWARGS} "
                             "are accepted and must be off)")
        if release_kwargs.get("deform_field") is not None or release_kwargs.get("portion_decoder") is not None:
            raise FieldError("deform_field / portion_decoder are set in these kwargs; the released models never use "
                             "them and this implementation does not support them")
        if fea2denseAct not in ("relu", "softplus"):
            raise FieldError(f"fea2denseAct = {fea2denseAct!r}: use 'relu' or 'softplus'")
        self.density_n_comp = _as_list(density_n_comp)
        self.app_n_comp = _as_list(appearance_n_comp)
        self.app_dim = int(app_dim)
        self.shadingMode, self.pos_pe, self.view_pe, self.fea_pe, self.featureC = (
            shadingMode, int(pos_pe), int(view_pe), int(fea_pe), int(featureC))
        self.near_far = [float(v) for v in near_far]
        self.density_shift = float(density_shift)
        self.alphaMask_thres = float(alphaMask_thres)
        self.distance_scale = float(distance_scale)
        self.rayMarch_weight_thres = float(rayMarch_weight_thres)
        self.step_ratio = float(step_ratio)
        self.fea2denseAct = fea2denseAct
        self.num_frames = int(num_frames)
        self.ld_per_frame = float(ld_per_frame)
        self.alphaMask = alphaMask
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3).clone(),
                             persistent=False)
        self.gridSize = [int(v) for v in gridSize]
        self.init_factors()
        self.renderModule = build_shader(shadingMode, self.app_dim, self.pos_pe, self.view_pe, self.fea_pe,
                                         self.featureC)
        self.register_buffer("target_portion", torch.as_tensor(list(target_portion)))

    # -- subclasses ------------------------------------------------------------------------------------------
    def init_factors(self) -> None:
        raise NotImplementedError

    def density_feature(self, xyz: Tensor, t: float | FrameTimes) -> Tensor:
        """Raw density feature ``[N]`` at normalized points ``xyz [N, 3]`` at time ``t`` (or at the frames'
        times of :class:`FrameTimes`)."""
        raise NotImplementedError

    def app_features(self, xyz: Tensor, t: float | FrameTimes) -> Tensor:
        """Appearance features ``[N, app_dim]`` at normalized points ``xyz [N, 3]`` at time ``t`` (or at the
        frames' times of :class:`FrameTimes`)."""
        raise NotImplementedError

    #: kinds of factor multiplied in the density feature (VM: plane and line; CP: the x, y and z lines)
    factor_kinds = 2

    def node_density_feature(self, times: Sequence[float], z_start: int = 0, z_stop: int | None = None) -> Tensor:
        """Raw density feature at the grid nodes (the points where ``grid_sample`` returns stored values).

        Inside a grid cell the feature is the trilinear interpolation of its 8 corner nodes (each plane x line
        product is bilinear x linear), so its extremes over a cell are at the corners: what
        :mod:`models.occupancy` relies on.

        Args:
            times: the time in [0, 1] at which each factor kind's channels are selected (``factor_kinds`` values;
                all equal gives the field at that time, mixed ones bound it between rows of the stream table).
            z_start, z_stop: range of node indices along z (default: all ``gridSize[2]``).

        Returns:
            ``[z_stop - z_start, res_y, res_x]``.
        """
        raise NotImplementedError

    def planes(self, kind: str) -> list[Tensor]:
        """Stored plane factors of ``kind`` (``density`` or ``app``)."""
        raise NotImplementedError

    def lines(self, kind: str) -> list[Tensor]:
        """Stored line factors of ``kind`` (``density`` or ``app``)."""
        raise NotImplementedError

    def upsample(self, grid_size: Sequence[int]) -> None:
        """Resize every factor to ``grid_size`` (bilinear, align_corners=True); parameters are replaced."""
        raise NotImplementedError

    # -- field interface --------------------------------------------------------------------------------------
    def normalize_coord(self, xyz: Tensor) -> Tensor:
        """Box-space points ``[..., 3]`` to [-1, 1] inside the box."""
        return (xyz - self.aabb[0]) * (2.0 / (self.aabb[1] - self.aabb[0])) - 1

    def density(self, xyz: Tensor, t: float | FrameTimes) -> Tensor:
        """Density ``sigma [N]`` at normalized points ``xyz [N, 3]`` at time ``t`` (or :class:`FrameTimes`)."""
        return self.activate_density(self.density_feature(xyz, t))

    def activate_density(self, feature: Tensor) -> Tensor:
        """Raw density feature -> density (``fea2denseAct``: relu, or softplus after ``density_shift``)."""
        if self.fea2denseAct == "relu":
            return F.relu(feature)
        return F.softplus(feature + self.density_shift)

    def color(self, xyz: Tensor, viewdirs: Tensor, features: Tensor) -> Tensor:
        """Colour ``[N, 3]`` from normalized points, unit view directions ``[N, 3]`` and ``features``."""
        return self.renderModule(xyz, viewdirs, features)

    # -- sizes ------------------------------------------------------------------------------------------------
    def _step_tensor(self) -> Tensor:
        """Sampling step as a float32 tensor, computed like the release (for identical sample counts)."""
        size = (self.aabb[1] - self.aabb[0]).float().cpu()
        units = size / (torch.tensor(self.gridSize, dtype=torch.long) - 1)
        return torch.mean(units) * self.step_ratio

    @property
    def step_size(self) -> float:
        """Sampling step: ``mean(box size / (reso - 1)) * step_ratio``."""
        return float(self._step_tensor())

    @property
    def n_samples_full(self) -> int:
        """Samples per ray of full-image renders: ``int(|box diagonal| / step) + 1`` (the release's default)."""
        size = (self.aabb[1] - self.aabb[0]).float().cpu()
        diag = torch.sqrt(torch.sum(torch.square(size)))
        return int((diag / self._step_tensor()).item()) + 1

    def param_groups(self, lr_grid: float, lr_network: float) -> list[dict]:
        """Optimizer groups: factors at ``lr_grid`` (``lr_init``), basis and shading MLP at ``lr_network``."""
        groups = [{"params": list(self.lines("density")), "lr": lr_grid}]
        if self.planes("density"):
            groups.append({"params": list(self.planes("density")), "lr": lr_grid})
        groups.append({"params": list(self.lines("app")), "lr": lr_grid})
        if self.planes("app"):
            groups.append({"params": list(self.planes("app")), "lr": lr_grid})
        groups.append({"params": list(self.basis_mat.parameters()), "lr": lr_network})
        shader_params = list(self.renderModule.parameters())
        if shader_params:
            groups.append({"params": shader_params, "lr": lr_network})
        return groups

    def get_kwargs(self) -> dict:
        """Constructor arguments in the release's ``kwargs`` layout, with the true ``num_frames``/``ld_per_frame``."""
        return {
            "aabb": self.aabb.detach().cpu(), "gridSize": list(self.gridSize),
            "density_n_comp": list(self.density_n_comp), "appearance_n_comp": list(self.app_n_comp),
            "app_dim": self.app_dim, "density_shift": self.density_shift, "alphaMask_thres": self.alphaMask_thres,
            "distance_scale": self.distance_scale, "rayMarch_weight_thres": self.rayMarch_weight_thres,
            "fea2denseAct": self.fea2denseAct, "near_far": list(self.near_far), "step_ratio": self.step_ratio,
            "shadingMode": self.shadingMode, "pos_pe": self.pos_pe, "view_pe": self.view_pe, "fea_pe": self.fea_pe,
            "featureC": self.featureC, "num_frames": self.num_frames, "ld_per_frame": self.ld_per_frame,
            "deform_field": None, "portion_decoder": None, "virtual_cannonical": False,
            "target_portion": self.target_portion.tolist(), "share_portion_embeddings": True, "portion_weight": 0,
        }

    def extra_repr(self) -> str:
        return (f"grid={self.gridSize}, density_n_comp={self.density_n_comp}, app_n_comp={self.app_n_comp}, "
                f"num_frames={self.num_frames}, ld_per_frame={self.ld_per_frame}, shading={self.shadingMode}")


def _sample_plane(plane: Tensor, coords: Tensor) -> Tensor:
    """Bilinear samples of ``plane [1, C, Hb, Wa]`` at ``coords [N, 2]`` ((a, b) in [-1, 1]) -> ``[C, N]``."""
    return F.grid_sample(plane, coords.view(1, -1, 1, 2), align_corners=True).view(plane.shape[1], -1)


def _sample_line(line: Tensor, coord: Tensor) -> Tensor:
    """Linear samples of ``line [1, C, L, 1]`` at ``coord [N]`` in [-1, 1] -> ``[C, N]``."""
    grid = torch.stack([torch.zeros_like(coord), coord], dim=-1)
    return F.grid_sample(line, grid.view(1, -1, 1, 2), align_corners=True).view(line.shape[1], -1)


class StreamTensorVMSplit(StreamTensorBase):
    """Vector-matrix split: three (plane, line) pairs per quantity, streamed per frame. The default model."""

    def init_factors(self) -> None:
        for key, comps in (("n_lamb_sigma", self.density_n_comp), ("n_lamb_sh", self.app_n_comp)):
            if len(comps) != 3:
                raise FieldError(f"{key} = {comps}: the VM model has three plane and line pairs, so it takes three "
                                 "channel counts, e.g. [16, 4, 4]")
        self.density_streams = [ChannelStream(n, self.num_frames, self.ld_per_frame) for n in self.density_n_comp]
        self.app_streams = [ChannelStream(n, self.num_frames, self.ld_per_frame) for n in self.app_n_comp]
        self.density_plane, self.density_line = self._init_pairs(self.density_streams, 0.1)
        self.app_plane, self.app_line = self._init_pairs(self.app_streams, 0.1)
        self.basis_mat = nn.Linear(sum(self.app_n_comp), self.app_dim, bias=False)

    def _init_pairs(self, streams: list[ChannelStream], scale: float) -> tuple[nn.ParameterList, nn.ParameterList]:
        planes, lines = [], []
        for i, stream in enumerate(streams):
            a, b = MAT_MODE[i]
            planes.append(nn.Parameter(scale * torch.randn(1, stream.stored, self.gridSize[b], self.gridSize[a])))
            lines.append(nn.Parameter(scale * torch.randn(1, stream.stored, self.gridSize[VEC_MODE[i]], 1)))
        return nn.ParameterList(planes), nn.ParameterList(lines)

    def live_factors(self, kind: str, t: float) -> tuple[list[Tensor], list[Tensor]]:
        """The three planes ``[1, C, res_b, res_a]`` and lines ``[1, C, res, 1]`` of ``kind`` (``density`` or
        ``app``) with the channels live at time ``t`` (pair ``i``: plane axes ``MAT_MODE[i]``, line axis
        ``VEC_MODE[i]``)."""
        streams = self.density_streams if kind == "density" else self.app_streams
        return ([s.select(p, t) for s, p in zip(streams, self.planes(kind))],
                [s.select(v, t) for s, v in zip(streams, self.lines(kind))])

    def _products(self, xyz: Tensor, t: float | FrameTimes, kind: str) -> list[Tensor]:
        """The three pairs' plane x line products ``[C_i, N]`` (compiled loops for CPU fits:
        :mod:`models.compiled_field`)."""
        from . import compiled_field  # (it imports this module)

        if compiled_field.usable(self, xyz):
            times = t if isinstance(t, FrameTimes) else FrameTimes((float(t),), (xyz.shape[0],))
            products = compiled_field.vm_products(self, kind, xyz, times.times, times.counts)
            return list(products.split(self.density_n_comp if kind == "density" else self.app_n_comp))
        if isinstance(t, FrameTimes):
            per_frame = [self._time_products(x, time, kind) for x, time in zip(xyz.split(list(t.counts)), t.times)]
            return [torch.cat(parts, dim=1) for parts in zip(*per_frame)]
        return self._time_products(xyz, t, kind)

    def _time_products(self, xyz: Tensor, t: float, kind: str) -> list[Tensor]:
        planes, lines = self.live_factors(kind, t)
        out = []
        for i in range(3):
            a, b = MAT_MODE[i]
            out.append(_sample_plane(planes[i], xyz[:, [a, b]]) * _sample_line(lines[i], xyz[:, VEC_MODE[i]]))
        return out

    def density_feature(self, xyz: Tensor, t: float | FrameTimes) -> Tensor:
        return sum(p.sum(0) for p in self._products(xyz, t, "density"))

    def app_features(self, xyz: Tensor, t: float | FrameTimes) -> Tensor:
        return self.basis_mat(torch.cat(self._products(xyz, t, "app")).T)

    def node_density_feature(self, times: Sequence[float], z_start: int = 0, z_stop: int | None = None) -> Tensor:
        z = slice(z_start, self.gridSize[2] if z_stop is None else z_stop)
        t_plane, t_line = times
        planes = [s.select(p, t_plane)[0] for s, p in zip(self.density_streams, self.density_plane)]
        lines = [s.select(v, t_line)[0, :, :, 0] for s, v in zip(self.density_streams, self.density_line)]
        # pair 0: plane (x, y) [C, Y, X] with line z; pair 1: plane (x, z) [C, Z, X] with line y;
        # pair 2: plane (y, z) [C, Z, Y] with line x
        out = torch.einsum("cz,cyx->zyx", lines[0][:, z], planes[0])
        out = out + torch.einsum("czx,cy->zyx", planes[1][:, z], lines[1])
        return out + torch.einsum("czy,cx->zyx", planes[2][:, z], lines[2])

    def planes(self, kind: str) -> list[Tensor]:
        return list(self.density_plane if kind == "density" else self.app_plane)

    def lines(self, kind: str) -> list[Tensor]:
        return list(self.density_line if kind == "density" else self.app_line)

    @torch.no_grad()
    def upsample(self, grid_size: Sequence[int]) -> None:
        res = [int(v) for v in grid_size]
        for planes, lines in ((self.density_plane, self.density_line), (self.app_plane, self.app_line)):
            for i in range(3):
                a, b = MAT_MODE[i]
                planes[i] = nn.Parameter(F.interpolate(planes[i].data, size=(res[b], res[a]), mode="bilinear",
                                                       align_corners=True))
                lines[i] = nn.Parameter(F.interpolate(lines[i].data, size=(res[VEC_MODE[i]], 1), mode="bilinear",
                                                      align_corners=True))
        self.gridSize = res
        log.info("grid upsampled to %s", res)


class StreamTensorCP(StreamTensorBase):
    """CP decomposition: three lines per quantity (first entry of the component counts), streamed per frame."""

    def init_factors(self) -> None:
        self.density_stream = ChannelStream(self.density_n_comp[0], self.num_frames, self.ld_per_frame)
        self.app_stream = ChannelStream(self.app_n_comp[0], self.num_frames, self.ld_per_frame)
        self.density_line = self._init_lines(self.density_stream, 0.2)
        self.app_line = self._init_lines(self.app_stream, 0.2)
        self.basis_mat = nn.Linear(self.app_n_comp[0], self.app_dim, bias=False)

    def _init_lines(self, stream: ChannelStream, scale: float) -> nn.ParameterList:
        return nn.ParameterList([nn.Parameter(scale * torch.randn(1, stream.stored, self.gridSize[VEC_MODE[i]], 1))
                                 for i in range(3)])

    def _product(self, xyz: Tensor, t: float, lines, stream: ChannelStream) -> Tensor:
        out = _sample_line(stream.select(lines[0], t), xyz[:, VEC_MODE[0]])
        for i in (1, 2):
            out = out * _sample_line(stream.select(lines[i], t), xyz[:, VEC_MODE[i]])
        return out

    def density_feature(self, xyz: Tensor, t: float | FrameTimes) -> Tensor:
        return each_frame(lambda x, time: self._product(x, time, self.density_line, self.density_stream), xyz, t,
                          dim=1).sum(0)

    def app_features(self, xyz: Tensor, t: float | FrameTimes) -> Tensor:
        return self.basis_mat(each_frame(lambda x, time: self._product(x, time, self.app_line, self.app_stream),
                                         xyz, t, dim=1).T)

    factor_kinds = 3

    def node_density_feature(self, times: Sequence[float], z_start: int = 0, z_stop: int | None = None) -> Tensor:
        z = slice(z_start, self.gridSize[2] if z_stop is None else z_stop)
        x, y, zl = (self.density_stream.select(self.density_line[i], t)[0, :, :, 0]
                    for i, t in zip((2, 1, 0), times))
        return torch.einsum("cz,cy,cx->zyx", zl[:, z], y, x)

    def planes(self, kind: str) -> list[Tensor]:
        return []

    def lines(self, kind: str) -> list[Tensor]:
        return list(self.density_line if kind == "density" else self.app_line)

    @torch.no_grad()
    def upsample(self, grid_size: Sequence[int]) -> None:
        res = [int(v) for v in grid_size]
        for lines in (self.density_line, self.app_line):
            for i in range(3):
                lines[i] = nn.Parameter(F.interpolate(lines[i].data, size=(res[VEC_MODE[i]], 1), mode="bilinear",
                                                      align_corners=True))
        self.gridSize = res
        log.info("grid upsampled to %s", res)
