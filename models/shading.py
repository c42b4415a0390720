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


def view_inputs(viewdirs: Tensor, view_pe: int) -> Tensor:
    """``[viewdir, PE(viewdir)]`` (just the directions when ``view_pe`` is 0), ``[N, 3]`` -> ``[N, 3 + 6 view_pe]``."""
    return torch.cat([viewdirs, positional_encoding(viewdirs, view_pe)], -1) if view_pe > 0 else viewdirs


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


class Shader(nn.Module):
    """A shading module: ``forward(pts [N, 3], viewdirs [N, 3], features [N, app_dim]) -> rgb [N, 3]``."""

    def other_inputs(self, pts: Tensor, viewdirs: Tensor) -> Tensor | None:
        """The inputs of the MLP's first layer after the features (``[N, k]``), when the features enter the MLP
        only there, in its first ``app_dim`` columns and without an encoding (what :func:`shade_folded` needs);
        None for a shader that uses them otherwise."""
        return None


def shade_folded(shader: Shader, basis: Tensor, components: list[Tensor], others: Tensor) -> Tensor:
    """``shader``'s colour of the features ``basis @ cat(components)``, without making the features.

    For an MLP whose first layer takes the features linearly (:meth:`Shader.other_inputs`), the basis matrix folds
    into that layer's weight; the layers then run channel-major (points along the columns), so neither the features
    nor a transposed or concatenated copy of the components is made. The same colour as ``shader(pts, viewdirs,
    features)`` up to float rounding; what renders use.

    Args:
        basis: ``[app_dim, n_comp]`` the field's basis matrix.
        components: ``[C_i, N]`` appearance components, ``sum C_i = n_comp``, in the basis' column order.
        others: ``[N, k]`` from :meth:`Shader.other_inputs`.

    Returns:
        ``rgb [N, 3]``.
    """
    first, hidden, last = shader.mlp[0], shader.mlp[2], shader.mlp[4]
    app_dim = basis.shape[0]
    folded = first.weight[:, :app_dim] @ basis  # [featureC, n_comp]
    h = torch.addmm(first.bias[:, None], first.weight[:, app_dim:], others.T)
    column = 0
    for part in components:
        h = h.addmm_(folded[:, column:column + part.shape[0]], part)
        column += part.shape[0]
    h = torch.addmm(hidden.bias[:, None], hidden.weight, h.relu_()).relu_()
    return torch.sigmoid(torch.addmm(last.bias[:, None], last.weight, h)).T


class MLPFeaShader(Shader):
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

    def other_inputs(self, pts: Tensor, viewdirs: Tensor) -> Tensor | None:
        return None if self.fea_pe > 0 else view_inputs(viewdirs, self.view_pe)


class MLPPEShader(Shader):
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
        return torch.sigmoid(self.mlp(torch.cat([features, self.other_inputs(pts, viewdirs)], dim=-1)))

    def other_inputs(self, pts: Tensor, viewdirs: Tensor) -> Tensor:
        parts = [viewdirs, pts]
        if self.pos_pe > 0:
            parts.append(positional_encoding(pts, self.pos_pe))
        if self.view_pe > 0:
            parts.append(positional_encoding(viewdirs, self.view_pe))
        return torch.cat(parts, dim=-1)


class MLPShader(Shader):
    """``MLP``: MLP on ``[features, viewdir, PE(viewdir)]``, sigmoid output."""

    def __init__(self, app_dim: int, view_pe: int = 6, featureC: int = 128):
        super().__init__()
        self.view_pe = view_pe
        self.mlp = _mlp(app_dim + 3 + 2 * view_pe * 3, featureC)

    def forward(self, pts: Tensor, viewdirs: Tensor, features: Tensor) -> Tensor:
        """``pts [N, 3]``, ``viewdirs [N, 3]``, ``features [N, app_dim]`` -> ``rgb [N, 3]``."""
        return torch.sigmoid(self.mlp(torch.cat([features, self.other_inputs(pts, viewdirs)], dim=-1)))

    def other_inputs(self, pts: Tensor, viewdirs: Tensor) -> Tensor:
        return view_inputs(viewdirs, self.view_pe)


class SHShader(Shader):
    """``SH``: features are 3 x 9 degree-2 SH coefficients; ``relu(sum + 0.5)``. No parameters."""

    def forward(self, pts: Tensor, viewdirs: Tensor, features: Tensor) -> Tensor:
        """``features [N, 27]`` -> ``rgb [N, 3]``."""
        bases = sh_bases_deg2(viewdirs)[:, None]  # [N, 1, 9]
        return torch.relu((bases * features.view(-1, 3, bases.shape[-1])).sum(-1) + 0.5)


class RGBShader(Shader):
    """``RGB``: the 3 features are the colour. No parameters."""

    def forward(self, pts: Tensor, viewdirs: Tensor, features: Tensor) -> Tensor:
        """``features [N, 3]`` -> ``rgb [N, 3]``."""
        return features


def _sh(app_dim: int, **_) -> Shader:
    if app_dim != 27:
        raise ShadingError(f"shadingMode = SH needs data_dim_color = 27 (3 colours x 9 bases), got {app_dim}")
    return SHShader()


def _rgb(app_dim: int, **_) -> Shader:
    if app_dim != 3:
        raise ShadingError(f"shadingMode = RGB needs data_dim_color = 3, got {app_dim}")
    return RGBShader()


SHADERS: dict[str, Callable[..., Shader]] = {
    "MLP_Fea": lambda app_dim, view_pe, fea_pe, featureC, **_: MLPFeaShader(app_dim, view_pe, fea_pe, featureC),
    "MLP_PE": lambda app_dim, view_pe, pos_pe, featureC, **_: MLPPEShader(app_dim, view_pe, pos_pe, featureC),
    "MLP": lambda app_dim, view_pe, featureC, **_: MLPShader(app_dim, view_pe, featureC),
    "SH": _sh,
    "RGB": _rgb,
}


def build_shader(shadingMode: str, app_dim: int, pos_pe: int, view_pe: int, fea_pe: int, featureC: int) -> Shader:
    """The shading module registered under ``shadingMode`` (a key of :data:`SHADERS`)."""
    if shadingMode not in SHADERS:
        raise ShadingError(f"unknown shadingMode {shadingMode!r}: choose one of {sorted(SHADERS)}")
    return SHADERS[shadingMode](app_dim=app_dim, pos_pe=pos_pe, view_pe=view_pe, fea_pe=fea_pe, featureC=featureC)
