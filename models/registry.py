"""The model registry: field classes by the name configs use (``model_name``), and building one from options."""

from __future__ import annotations

from collections.abc import Callable

from common.errors import UserError

from .fields import StreamTensorBase, StreamTensorCP, StreamTensorVMSplit

MODELS: dict[str, Callable[..., StreamTensorBase]] = {
    "StreamTensorVMSplit": StreamTensorVMSplit,
    "StreamTensorCP": StreamTensorCP,
}


class ModelError(UserError, ValueError):
    """An unknown model name or bad model options."""


def build_model(model_name: str, aabb, grid_size, **kwargs) -> StreamTensorBase:
    """A new field of class ``MODELS[model_name]`` (kwargs: the release's constructor names)."""
    if model_name not in MODELS:
        raise ModelError(f"unknown model_name {model_name!r}: choose one of {sorted(MODELS)}")
    return MODELS[model_name](aabb, grid_size, **kwargs)
