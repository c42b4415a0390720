"""Convert RAFT weights between the original repository's layout and torchvision's.

The original repository (princeton-vl/RAFT) saves the state dict of a ``DataParallel`` model, so every key starts
with ``module.``: ``fnet``/``cnet`` encoders (``conv1``, ``norm1``, ``layerN.M.convK``/``normK``, ``conv2``) and
``update_block.{encoder, gru, flow_head, mask}``. torchvision's ``raft_large``/``raft_small`` hold the same
tensors under ``feature_encoder``/``context_encoder`` (``convnormrelu``...), ``update_block.{motion_encoder,
recurrent_block, flow_head}`` and, for the large model, a top-level ``mask_predictor``. The mapping below renames
keys; :func:`original_to_torchvision` then checks every name and shape against a freshly built torchvision model.

In the original large model the context encoder's stride-2 residual blocks register their downsampling
BatchNorm twice (``normK`` and ``downsample.1``); the duplicate ``norm3`` is dropped after checking it is equal.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from common.errors import UserError

VARIANTS = ("large", "small")

# (pattern, replacement) applied in order to a key without "module."; the variant picks the block rules.
_COMMON_RULES = [
    (r"^fnet\.", "feature_encoder."),
    (r"^cnet\.", "context_encoder."),
    (r"^(feature_encoder|context_encoder)\.conv1\.", r"\1.convnormrelu.0."),
    (r"^(feature_encoder|context_encoder)\.norm1\.", r"\1.convnormrelu.1."),
    (r"^(feature_encoder|context_encoder)\.conv2\.", r"\1.conv."),
    (r"(layer\d\.\d)\.conv(\d)\.", r"\1.convnormrelu\2.0."),
    (r"^update_block\.encoder\.convc(\d)\.", r"update_block.motion_encoder.convcorr\1.0."),
    (r"^update_block\.encoder\.convf(\d)\.", r"update_block.motion_encoder.convflow\1.0."),
    (r"^update_block\.encoder\.conv\.", "update_block.motion_encoder.conv.0."),
    (r"^update_block\.gru\.conv([zrq])([12])\.", r"update_block.recurrent_block.convgru\2.conv\1."),
    (r"^update_block\.gru\.conv([zrq])\.", r"update_block.recurrent_block.convgru1.conv\1."),
    (r"^update_block\.mask\.0\.", "mask_predictor.convrelu.0."),
    (r"^update_block\.mask\.2\.", "mask_predictor.conv."),
]
# Residual blocks (large): norm1/norm2 follow conv1/conv2, norm3 is the downsampling norm (= downsample.1).
_LARGE_NORM_RULES = [(r"(layer\d\.\d)\.norm([12])\.", r"\1.convnormrelu\2.1."), (r"(layer\d\.\d)\.norm3\.", None)]
# Bottleneck blocks (small): norm1..3 follow conv1..3, norm4 is the downsampling norm.
_SMALL_NORM_RULES = [(r"(layer\d\.\d)\.norm([123])\.", r"\1.convnormrelu\2.1."), (r"(layer\d\.\d)\.norm4\.", None)]


class RaftWeightsError(UserError, ValueError):
    """A RAFT weight file that cannot be read as either layout, or whose tensors do not fit the model."""


def strip_module(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop the ``module.`` prefix ``DataParallel`` adds (keys without it are kept as they are)."""
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}


def is_original_layout(state_dict: dict[str, Tensor]) -> bool:
    """True for the original repository's key names (``fnet.``, ``cnet.``, with or without ``module.``)."""
    return any(k.startswith(("fnet.", "cnet.")) for k in strip_module(state_dict))


def detect_variant(state_dict: dict[str, Tensor]) -> str:
    """``"large"`` or ``"small"`` from the keys of an original or torchvision state dict."""
    keys = strip_module(state_dict)
    if "update_block.mask.0.weight" in keys or "mask_predictor.conv.weight" in keys:
        return "large"
    if "update_block.gru.convz.weight" in keys or "update_block.recurrent_block.convgru1.convz.weight" in keys:
        return "small"
    raise RaftWeightsError("cannot tell RAFT large from small: the state dict has neither the mask head "
                           "(update_block.mask / mask_predictor) nor the single-stage GRU (gru.convz); "
                           "is this a RAFT checkpoint?")


def build_torchvision_raft(variant: str) -> torch.nn.Module:
    """A randomly initialised torchvision ``raft_large`` or ``raft_small`` (no download)."""
    from torchvision.models.optical_flow import raft_large, raft_small

    if variant not in VARIANTS:
        raise RaftWeightsError(f"unknown RAFT variant {variant!r}: choose one of {VARIANTS}")
    return raft_large(weights=None) if variant == "large" else raft_small(weights=None)


def _rename(key: str, variant: str) -> str | None:
    """The torchvision name of an original key (None for a duplicate to drop)."""
    for pattern, repl in _COMMON_RULES[:2]:
        key = re.sub(pattern, repl, key)
    for pattern, repl in (_LARGE_NORM_RULES if variant == "large" else _SMALL_NORM_RULES):
        if re.search(pattern, key):
            if repl is None:
                return None
            key = re.sub(pattern, repl, key)
    for pattern, repl in _COMMON_RULES[2:]:
        key = re.sub(pattern, repl, key)
    return key


def original_to_torchvision(state_dict: dict[str, Tensor], source: str = "state dict") -> tuple[dict, str]:
    """Rename an original RAFT state dict to torchvision's layout and check it against the model.

    Args:
        state_dict: the original checkpoint's tensors (``module.`` prefix optional).
        source: what to call it in errors (e.g. the file name).

    Returns:
        ``(torchvision_state_dict, variant)``; the dict loads into ``raft_<variant>()`` with ``strict=True``.

    Raises:
        RaftWeightsError: naming the key and the shapes that disagree, or the keys missing.
    """
    original = strip_module(state_dict)
    variant = detect_variant(original)
    reference = build_torchvision_raft(variant).state_dict()
    converted: dict[str, Tensor] = {}
    for key, value in original.items():
        new_key = _rename(key, variant)
        if new_key is None:
            twin = re.sub(r"norm[34]\.", "downsample.1.", key)
            if twin in original and not torch.equal(original[twin], value):
                raise RaftWeightsError(f"{source}: {key} differs from {twin}; the original model shares this "
                                       "BatchNorm between both names, so the file looks corrupted")
            continue
        if new_key not in reference:
            raise RaftWeightsError(f"{source}: key {key!r} (as {new_key!r}) has no place in torchvision's "
                                   f"raft_{variant}; this is not a RAFT-{variant} checkpoint of the original repo")
        if tuple(value.shape) != tuple(reference[new_key].shape):
            raise RaftWeightsError(f"{source}: {key!r} has shape {tuple(value.shape)} but torchvision's "
                                   f"{new_key!r} expects {tuple(reference[new_key].shape)}; the file does not match "
                                   f"RAFT-{variant}")
        converted[new_key] = value
    missing = [k for k in reference if k not in converted]
    for key in [k for k in missing if k.endswith("num_batches_tracked")]:  # absent from files of old torch versions
        converted[key] = reference[key]
        missing.remove(key)
    if missing:
        raise RaftWeightsError(f"{source}: {len(missing)} tensors of torchvision's raft_{variant} are missing, "
                               f"e.g. {missing[:3]}; the checkpoint is incomplete")
    return {k: converted[k] for k in reference}, variant


def torchvision_to_original(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of :func:`original_to_torchvision`: torchvision names to ``module.``-prefixed original names.

    Used to write test files in the layout users' ``raft-things.pth`` / ``raft-small.pth`` have; the large model's
    duplicated ``norm3`` BatchNorm is written under both of its names, as in the original files.
    """
    variant = detect_variant(state_dict)
    inverse = {}
    for key in state_dict:
        orig = _original_name(key, variant)
        inverse[orig] = key
    out: dict[str, Tensor] = {}
    for orig, key in inverse.items():
        out["module." + orig] = state_dict[key]
        match = re.match(r"(cnet|fnet)\.(layer\d\.\d)\.downsample\.1\.(.*)$", orig)
        if match:
            norm = "norm3" if variant == "large" else "norm4"
            out[f"module.{match[1]}.{match[2]}.{norm}.{match[3]}"] = state_dict[key]
    return out


def _original_name(key: str, variant: str) -> str:
    """Original name of a torchvision key (the rules of :func:`_rename` run backwards)."""
    rules = [
        (r"^update_block\.motion_encoder\.convcorr(\d)\.0\.", r"update_block.encoder.convc\1."),
        (r"^update_block\.motion_encoder\.convflow(\d)\.0\.", r"update_block.encoder.convf\1."),
        (r"^update_block\.motion_encoder\.conv\.0\.", "update_block.encoder.conv."),
        (r"^update_block\.recurrent_block\.convgru1\.conv([zrq])\.",
         r"update_block.gru.conv\g<1>1." if variant == "large" else r"update_block.gru.conv\1."),
        (r"^update_block\.recurrent_block\.convgru2\.conv([zrq])\.", r"update_block.gru.conv\g<1>2."),
        (r"^mask_predictor\.convrelu\.0\.", "update_block.mask.0."),
        (r"^mask_predictor\.conv\.", "update_block.mask.2."),
        (r"(layer\d\.\d)\.convnormrelu(\d)\.0\.", r"\1.conv\2."),
        (r"(layer\d\.\d)\.convnormrelu(\d)\.1\.", r"\1.norm\2."),
        (r"^(feature_encoder|context_encoder)\.convnormrelu\.0\.", r"\1.conv1."),
        (r"^(feature_encoder|context_encoder)\.convnormrelu\.1\.", r"\1.norm1."),
        (r"^(feature_encoder|context_encoder)\.conv\.", r"\1.conv2."),
        (r"^feature_encoder\.", "fnet."),
        (r"^context_encoder\.", "cnet."),
    ]
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key
