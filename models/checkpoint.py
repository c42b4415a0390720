"""Checkpoints in the release's format, written atomically, and loading of release checkpoints.

File ``ckpt-{iteration}.th`` is a ``torch.save`` dict:
    ``kwargs``       constructor arguments (the release's names; a model rebuilds itself from them)
    ``state_dict``   parameters (``density_plane.0``, ..., ``basis_mat.weight``, ``renderModule.mlp.0.weight``, ...)
    ``alphaMask.shape``, ``alphaMask.mask`` (np.packbits), ``alphaMask.aabb``   optional alpha mask
Ours add ``instruct4d`` (format version, model name, iteration) and, when saved by the trainer, ``optimizer``.
The release's ``kwargs`` always say ``num_frames: 1, ld_per_frame: 1``; for a checkpoint without ``instruct4d``
those two come from the run config next to it (``config.txt`` of ours or the release's ``config.py``) or from
the caller.

Checkpoints are pickles (they hold numpy arrays): load only files you trust.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.atomic import atomic_write
from common.errors import UserError

from .config import find_run_config, read_config_file
from .fields import AlphaGridMask, FieldError, StreamTensorBase
from .registry import MODELS

log = logging.getLogger(__name__)

FORMAT_KEY = "instruct4d"
FORMAT_VERSION = 1
CKPT_NAME = re.compile(r"ckpt-(\d+)\.th$")


class CheckpointError(UserError, ValueError):
    """A checkpoint is missing, unreadable, or does not fit the model; the message says which key and why."""


def checkpoint_name(iteration: int) -> str:
    return f"ckpt-{iteration}.th"


def iteration_from_name(path: str | Path) -> int | None:
    """The iteration in a ``ckpt-{iteration}.th`` file name, or None."""
    match = CKPT_NAME.search(Path(path).name)
    return int(match.group(1)) if match else None


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The ``ckpt-*.th`` of ``folder`` with the highest iteration, or None."""
    found = [(iteration_from_name(p), p) for p in Path(folder).glob("ckpt-*.th")]
    found = [(i, p) for i, p in found if i is not None]
    return max(found)[1] if found else None


def save_checkpoint(field: StreamTensorBase, path: str | Path, *, iteration: int | None = None,
                    optimizer: torch.optim.Optimizer | None = None, extra: dict | None = None) -> Path:
    """Write ``field`` in the release's layout to ``path``, atomically (temp file in the same folder + rename).

    Args:
        field: the model.
        path: destination, conventionally ``{run_dir}/ckpt-{iteration}.th``.
        iteration: last completed training iteration (stored under ``instruct4d``).
        optimizer: saved under ``optimizer`` so training resumes with its moments.
        extra: more entries for the ``instruct4d`` dict.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {"kwargs": field.get_kwargs(),
            "state_dict": {k: v.detach().cpu() for k, v in field.state_dict().items()},
            FORMAT_KEY: {"version": FORMAT_VERSION, "model_name": type(field).__name__, "iteration": iteration,
                         **(extra or {})}}
    if field.alphaMask is not None:
        volume = field.alphaMask.alpha_volume.bool().cpu().numpy()[0, 0]
        ckpt["alphaMask.shape"] = volume.shape
        ckpt["alphaMask.mask"] = np.packbits(volume.reshape(-1))
        ckpt["alphaMask.aabb"] = field.alphaMask.aabb.cpu()
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    atomic_write(path, lambda handle: torch.save(ckpt, handle))
    return path


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict at ``path`` (on the CPU)."""
    path = Path(path)
    if not path.is_file():
        hint = ""
        if path.parent.is_dir():
            latest = latest_checkpoint(path.parent)
            hint = f" ({path.parent} holds {latest.name})" if latest else f" ({path.parent} holds no ckpt-*.th)"
        raise CheckpointError(f"checkpoint {path} not found{hint}: check --ckpt")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        with open(path, "rb") as handle:
            head = handle.read(4)
        # torch.save writes a zip archive (PK..); the release's older checkpoints are plain pickles (0x80)
        kind = ("it is not a torch checkpoint (neither a zip archive nor a pickle): pass a ckpt-N.th file that "
                "stream_train.py or the release wrote" if not (head.startswith(b"PK") or head[:1] == b"\x80")
                else "the file looks truncated or corrupt (an interrupted copy?): copy it again, or pass an "
                     "earlier checkpoint")
        raise CheckpointError(f"could not read checkpoint {path}: {kind} ({type(err).__name__}: {err})") from err
    for key in ("kwargs", "state_dict"):
        if not isinstance(ckpt, dict) or key not in ckpt:
            raise CheckpointError(f"{path} is not a stream TensoRF checkpoint: it has no {key!r} entry")
    return ckpt


def resolve_streaming(path: Path, ckpt: dict, config: dict | None) -> tuple[int, float, str]:
    """``num_frames``, ``ld_per_frame`` and where they came from, for a checkpoint's kwargs.

    The checkpoint's own record (ours) or its training run's config (the release's ``config.py`` next to it) wins
    over ``config`` (the caller's options, e.g. an edit config); a disagreement on ``ld_per_frame`` is logged with both
    values (the release's ``edit_coffee_300_4`` says 0.1 while its ``train_coffee_300_4`` trained with 1.0).
    """
    kwargs = ckpt["kwargs"]
    found = None
    if FORMAT_KEY in ckpt:
        found = int(kwargs["num_frames"]), float(kwargs["ld_per_frame"]), "the checkpoint"
    else:
        run_config = find_run_config(path.parent)
        values = read_config_file(run_config) if run_config is not None else {}
        if "num_frames" in values and "ld_per_frame" in values and values["num_frames"]:
            frames = values["num_frames"]
            frame_list = values.get("frame_list")
            if isinstance(frame_list, (list, tuple)) and frame_list:
                frames = len(frame_list)
            found = int(frames), float(values["ld_per_frame"]), str(run_config)
    if found is not None:
        given = (config or {}).get("ld_per_frame")
        if given is not None and float(given) != found[1]:
            log.warning("ld_per_frame = %g in this run's config, but %s was trained with ld_per_frame = %g (%s): "
                        "using the checkpoint's training value", float(given), path, found[1], found[2])
        return found
    if config and config.get("num_frames") and config.get("ld_per_frame") is not None:
        return int(config["num_frames"]), float(config["ld_per_frame"]), "the given config"
    raise CheckpointError(
        f"{path} was written by the original release, whose kwargs always say num_frames 1 and ld_per_frame 1; "
        f"the real values come from the training config: put the run's config.py next to the checkpoint, or pass "
        f"--num_frames and --ld_per_frame (with --config of the training run)")


def check_state_dict(field: nn.Module, state_dict: dict, path: Path, source: str) -> None:
    """Raise :class:`CheckpointError` naming the first key whose presence or shape differs from ``field``'s."""
    expected = field.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{path}: state_dict keys differ from the model's: missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]}; check model_name / shadingMode")
    for key, value in state_dict.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{path}: {key!r} has shape {list(value.shape)} in the checkpoint but {list(expected[key].shape)} in "
                f"the model built from its kwargs with num_frames/ld_per_frame from {source}; the frame count, "
                f"ld_per_frame or n_lamb_sigma/n_lamb_sh of the config do not match the checkpoint's training run")


# Which options decide each parameter's non-spatial shape (for messages).
SHAPE_OPTIONS = (("density", "n_lamb_sigma"), ("app_", "n_lamb_sh"), ("basis_mat", "data_dim_color / n_lamb_sh"),
                 ("renderModule", "shadingMode / featureC / pos_pe / view_pe / fea_pe / data_dim_color"))


def check_matches_config(loaded: nn.Module, configured: nn.Module, path: str | Path) -> None:
    """Raise :class:`CheckpointError` when the checkpoint's field differs from the one the config describes.

    Grid planes and lines are compared without their spatial sizes (those grow during training); every other
    parameter by its whole shape. The message names the parameter, both shapes and the options behind it.
    """
    ours, theirs = loaded.state_dict(), configured.state_dict()
    for key in sorted(set(ours) ^ set(theirs)):
        raise CheckpointError(f"--ckpt {path}: parameter {key!r} exists only in the "
                              f"{'checkpoint' if key in ours else 'config'}'s model; check model_name / shadingMode")
    for key, value in ours.items():
        grid = "plane" in key or "line" in key
        a, b = tuple(value.shape), tuple(theirs[key].shape)
        if (a[:2] if grid else a) != (b[:2] if grid else b):
            options = next((o for prefix, o in SHAPE_OPTIONS if key.startswith(prefix)), "the model options")
            raise CheckpointError(
                f"--ckpt {path} does not match the config: parameter {key!r} has shape {list(a)} in the checkpoint "
                f"but {list(b)} in the model the config describes ({options}"
                f"{'; grid sizes aside' if grid else ''}). Resume with the config of the run that wrote the "
                f"checkpoint (its config.txt), or start a new run without --ckpt")


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu", model_name: str | None = None,
                    config: dict | None = None) -> tuple[StreamTensorBase, dict]:
    """Rebuild a field from a checkpoint (ours or the release's).

    Args:
        path: a ``ckpt-*.th`` file.
        device: where the field goes.
        model_name: model class for checkpoints that do not name one (the release's); default
            ``StreamTensorVMSplit``.
        config: options of the training run (``num_frames``, ``ld_per_frame``), used for a release checkpoint
            when no run config sits next to it.

    Returns:
        The field (eval mode is not set; it has no dropout) and the raw checkpoint dict (``optimizer``, ...).
    """
    path = Path(path)
    ckpt = read_checkpoint(path)
    num_frames, ld_per_frame, source = resolve_streaming(path, ckpt, config)
    name = ckpt.get(FORMAT_KEY, {}).get("model_name") or model_name or "StreamTensorVMSplit"
    if name not in MODELS:
        raise CheckpointError(f"unknown model_name {name!r} for {path}: choose one of {sorted(MODELS)}")
    kwargs = dict(ckpt["kwargs"])
    kwargs.update(num_frames=num_frames, ld_per_frame=ld_per_frame)
    aabb = torch.as_tensor(kwargs.pop("aabb")).float().cpu()
    grid = [int(v) for v in kwargs.pop("gridSize")]
    try:
        field = MODELS[name](aabb, grid, **kwargs)
    except (FieldError, ValueError, TypeError) as err:
        raise CheckpointError(f"cannot rebuild the model of {path} from its kwargs: {err}") from err
    check_state_dict(field, ckpt["state_dict"], path, source)
    field.load_state_dict(ckpt["state_dict"])
    if "alphaMask.aabb" in ckpt:
        shape = tuple(ckpt["alphaMask.shape"])
        bits = np.unpackbits(np.asarray(ckpt["alphaMask.mask"]))[: int(np.prod(shape))].reshape(shape)
        field.alphaMask = AlphaGridMask(torch.as_tensor(ckpt["alphaMask.aabb"]).float(), torch.from_numpy(bits))
    log.info("loaded %s (%s, grid %s, %d frames, ld_per_frame %s from %s)", path, name, grid, num_frames,
             ld_per_frame, source)
    return field.to(device), ckpt
