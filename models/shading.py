"""Shading modules: appearance features (+ view direction, position) to colour.

The module names and layer layout match the release, so ``renderModule.mlp.{0,2,4}.*`` checkpoint keys load.
Positions are the box-normalized sample coordinates in [-1, 1]; view directions are unit vectors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from common.errors import UserError

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)


class ShadingError(UserError, ValueError):
    """An unknown shading mode or a feature size the mode cannot use."""


def positional_encoding(x: Tensor, n_freqs: int) -> Tensor:
    """``[sin(x_d 2^k) for d, k] + [cos(...)]``, dimension-major.

    Args:
        x: ``[N, D]``.
        n_freqs: frequencies ``2^0 .. 2^(n_freqs-1)``.

    Returns:
        ``[N, 2 * D * n_freqs]``.
    """
    freqs = 2.0 ** torch.arange(n_freqs, dtype=x.dtype, device=x.device)
    scaled = (x[..., None] * freqs).reshape(*x.shape[:-1], x.shape[-1] * n_freqs)
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=-1)


def sh_bases_deg2(dirs: Tensor) -> Tensor:
    """Real spherical-harmonic bases up to degree 2 of unit directions ``[N, 3]`` -> ``[N, 9]``."""
    x, y, z = dirs.unbind(-1)
    xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    return torch.stack([
        torch.full_like(x, SH_C0), -SH_C1 * y, SH_C1 * z, -SH_C1 * x,
        SH_C2[0] * xy, SH_C2[1] * yz, SH_C2[2] * (2.0 * zz - xx - yy), SH_C2[3] * xz, SH_C2[4] * (xx - yy),
    ], dim=-1)


def _mlp(in_channels: int, hidden: int) -> nn.Sequential:
    mlp = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                        nn.ReLU(inplace=True), nn.Linear(hidden, 3))
    nn.init.constant_(mlp[-1].bias, 0)
    return mlp


class MLPFeaShader(nn.Module):
    """``MLP_Fea``: MLP on ``[features, viewdir, PE(features), PE(viewdir)]``, sigmoid output."""

    def __init__(self, app_dim: int, view_pe: int = 6, fea_pe: int = 6, featureC: int = 128):
        super().__init__()
        self.view_pe, self.fea_pe = view_pe, fea_pe
        self.mlp = _mlp(app_dim + 3 + 2 * fea_pe * app_dim + 2 * view_pe * 3, featureC)

    def forward(self, pts: Tensor, viewdirs: Tensor, features: Tensor) -> Tensor:
        """``pts [N, 3]``, ``viewdirs [N, 3]``, ``features [N, app_dim]`` -> ``rgb [N, 3]``."""
        parts = [features, viewdirs]
        if self.fea_pe > 0:
            parts.append(positional_encoding(features, self.fea_pe))
        if self.view_pe > 0:
            parts.append(positional_encoding(viewdirs, self.view_pe))
        return torch.sigmoid(self.mlp(torch.cat(parts, dim=-1)))


class MLPPEShader(nn.Module):
    """``MLP_PE``: MLP on ``[features, viewdir, pts, PE(pts), PE(viewdir)]``, sigmoid output.

    The release sizes this MLP's input for the raw positions too but forgets to pass them (so the mode crashes
    there); here they are passed, which keeps the release's layer shapes.
    """

    def __init__(self, app_dim: int, view_pe: int = 6, pos_pe: int = 6, featureC: int = 128):
        super().__init__()
        self.view_pe, self.pos_pe = view_pe, pos_pe
        self.mlp = _mlp((3 + 2 * view_pe * 3) + (3 + 2 * pos_pe * 3) + app_dim, featureC)

    def forward(self, pts: Tensor, viewdirs: Tensor, features: Tensor) -> Tensor:
        """``pts [N, 3]``, ``viewdirs [N, 3]``, ``features [N, app_dim]`` -> ``rgb [N, 3]``."""
        parts = [features, viewdirs, pts]
        if self.pos_pe > 0:
            parts.append(positional_encoding(pts, self.pos_pe))
        if self.view_pe > 0:
            parts.append(positional_encoding(viewdirs, self.view_pe))
        return torch.sigmoid(self.mlp(torch.cat(parts, dim=-1)))


class MLPShader(nn.Module):
    """``MLP``: MLP on ``[features, viewdir, PE(viewdir)]``, sigmoid output."""

    def __init__(self, app_dim: int, view_pe: int = 6, featureC: int = 128):
        super().__init__()
        self.view_pe = view_pe
        self.mlp = _mlp(app_dim + 3 + 2 * view_pe * 3, featureC)

    def forward(self, pts: Tensor, viewdirs: Tensor, features: Tensor) -> Tensor:
        """``pts [N, 3]``, ``viewdirs [N, 3]``, ``features [N, app_dim]`` -> ``rgb [N, 3]``."""
        parts = [features, viewdirs]
        if self.view_pe > 0:
            parts.append(positional_encoding(viewdirs, self.view_pe))
        return torch.sigmoid(self.mlp(torch.cat(parts, dim=-1)))


class SHShader(nn.Module):
    """``SH``: features are 3 x 9 degree-2 SH coefficients; ``relu(sum + 0.5)``. No parameters."""

    def forward(self, pts: Tensor, viewdirs: Tensor, features: Tensor) -> Tensor:
        """``features [N, 27]`` -> ``rgb [N, 3]``."""
        bases = sh_bases_deg2(viewdirs)[:, None]  # [N, 1, 9]
        return torch.relu((bases * features.view(-1, 3, bases.shape[-1])).sum(-1) + 0.5)


class RGBShader(nn.Module):
    """``RGB``: the 3 features are the colour. No parameters."""

    def forward(self, pts: Tensor, viewdirs: Tensor, features: Tensor) -> Tensor:
        """``features [N, 3]`` -> ``rgb [N, 3]``."""
        return features


def _sh(app_dim: int, **_) -> nn.Module:
    if app_dim != 27:
        raise ShadingError(f"shadingMode = SH needs data_dim_color = 27 (3 colours x 9 bases), got {app_dim}")
    return SHShader()


def _rgb(app_dim: int, **_) -> nn.Module:
    if app_dim != 3:
        raise ShadingError(f"shadingMode = RGB needs data_dim_color = 3, got {app_dim}")
    return RGBShader()


SHADERS: dict[str, Callable[..., nn.Module]] = {
    "MLP_Fea": lambda app_dim, view_pe, fea_pe, featureC, **_: MLPFeaShader(app_dim, view_pe, fea_pe, featureC),
    "MLP_PE": lambda app_dim, view_pe, pos_pe, featureC, **_: MLPPEShader(app_dim, view_pe, pos_pe, featureC),
    "MLP": lambda app_dim, view_pe, featureC, **_: MLPShader(app_dim, view_pe, featureC),
    "SH": _sh,
    "RGB": _rgb,
}


def build_shader(shadingMode: str, app_dim: int, pos_pe: int, view_pe: int, fea_pe: int, featureC: int) -> nn.Module:
    """The shading module registered under ``shadingMode`` (a key of :data:`SHADERS`)."""
    if shadingMode not in SHADERS:
        raise ShadingError(f"unknown shadingMode {shadingMode!r}: choose one of {sorted(SHADERS)}")
    return SHADERS[shadingMode](app_dim=app_dim, pos_pe=pos_pe, view_pe=view_pe, fea_pe=fea_pe, featureC=featureC)
