"""2D editing primitives: InstructPix2Pix loading, anchor-aware attention, the sequence editor (and flow/warping).

Conventions used across the package: images are float in [0, 1], CHW / NCHW (``[F, 3, H, W]`` for a sequence);
optical flow is in pixels with ``flow[..., 0]`` the x component; latents are scaled by the VAE's
``scaling_factor``.

Heavy libraries (diffusers, transformers) are imported on first use of the IP2P names, so that importing a
submodule such as ``ip2p_models.warp`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .anchor_attention import (
        AnchorAttnProcessor,
        install_anchor_attention,
        remove_anchor_attention,
    )
    from .loading import DEFAULT_IP2P_MODEL, IP2PWeightsError, load_ip2p
    from .sequence_editor import IP2PEditor

_LAZY = {
    "AnchorAttnProcessor": "anchor_attention",
    "install_anchor_attention": "anchor_attention",
    "remove_anchor_attention": "anchor_attention",
    "DEFAULT_IP2P_MODEL": "loading",
    "IP2PWeightsError": "loading",
    "load_ip2p": "loading",
    "IP2PEditor": "sequence_editor",
}

__all__ = [
    "DEFAULT_IP2P_MODEL",
    "AnchorAttnProcessor",
    "IP2PEditor",
    "IP2PWeightsError",
    "install_anchor_attention",
    "load_ip2p",
    "remove_anchor_attention",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
