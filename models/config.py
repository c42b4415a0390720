"""Command-line / config-file options of the 4D NeRF programs (the release's keys, plus a few of ours).

:func:`build_parser` returns the configargparse parser of ``stream_train.py``; ``stream_edit.py`` adds its own
options to it. Config files are ``key = value`` lines (``#`` comments, lists as ``[a, b]``). A key the parser does
not know is an error naming the file and the key. A run directory's resolved config (``config.txt``, written by
:func:`write_config`) reads back with ``--config``; the release's ``config.py`` (Python assignments) is read by
:func:`read_config_file` too.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import configargparse
import torch

from common.atomic import atomic_write
from common.errors import UserError
from common.settings import add_settings

from .settings import FitSettings

log = logging.getLogger(__name__)

RESOLVED_CONFIG = "config.txt"
RELEASE_CONFIG = "config.py"
NOT_WRITTEN = ("config", "ckpt", "render_only", "cfg_options")  # per-invocation options, not part of a run
DEFAULT_N_LAMB_SIGMA = [16, 4, 4]
DEFAULT_N_LAMB_SH = [48, 12, 12]


class ConfigError(UserError, ValueError):
    """A config file or option is wrong; the message names the file/key and how to fix it."""


def default_device() -> str:
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def build_parser() -> configargparse.ArgumentParser:
    """The parser of ``stream_train.py``: every key of the release's parser, plus ``--device``, ``--skip_cams``,
    ``--hold_out_test``, ``--seed``, ``--sampling`` and ``--occupancy_*``, ``--uniform_sampling_from``,
    ``--ckpt_every``, ``--chunk``, ``--path_views``."""
    p = configargparse.ArgumentParser(description="Fit a 4D NeRF (stream TensoRF) to a multi-view video scene.",
                                      ignore_unknown_config_file_keys=True)
    add = p.add_argument
    add("--config", is_config_file=True, help="config file (key = value lines)")
    # run and data
    add("--expname", type=str, default="run", help="run name: the run directory is {basedir}/{expname}")
    add("--basedir", type=str, default="./log", help="folder holding run directories")
    add("--add_timestamp", type=int, default=0, help="1: append -YYYYmmdd-HHMMSS to the run directory")
    add("--datadir", type=str, default=None, help="scene folder (poses_bounds.npy + camXX.mp4 or frames/camXX/)")
    add("--dataset_name", type=str, default="n3dv_dynamic", help="scene reader: n3dv, n3dv_dynamic, synthetic")
    add("--downsample_train", type=float, default=1.0, help="image size divisor for fitting and renders")
    add("--downsample_test", type=float, default=1.0, help="accepted for release configs; renders use downsample_train")
    add("--num_frames", type=int, default=None, help="frames to load (first N); all when unset")
    add("--frame_list", type=str, default="[]", help="explicit 0-based frames, e.g. \"200,201,202\" (overrides "
                                                     "num_frames)")
    add("--skip_cams", type=int, action="append", default=None, help="camera number to leave out (repeatable), "
                                                                      "e.g. 12 for coffee_martini")
    add("--hold_out_test", type=int, default=0, help="1: do not fit on the test camera (cam 0), so test PSNR is on "
                                                     "an unseen view")
    add("--ndc_ray", type=int, default=0, help="1: forward-facing NDC rays (the n3dv configs)")
    add("--with_depth", action="store_true", help="accepted for release configs; unused")
    add("--idx_view", type=int, default=0, help="accepted for release configs; unused")
    # optimisation, grid and sampling, outputs: the fitting loop's settings (models/settings.py)
    add_settings(p, FitSettings)
    add("--L1_weight_rest", type=float, default=0.0, help="accepted for release configs (used after alpha-mask "
                                                          "updates, which are disabled)")
    add("--feat_diff_weight", type=float, default=0.0, help="accepted for release configs; must be 0")
    # model
    add("--model_name", type=str, default="StreamTensorVMSplit", help="field class: StreamTensorVMSplit or "
                                                                      "StreamTensorCP")
    add("--n_lamb_sigma", type=int, action="append", help="density channels per time of the 3 factor pairs")
    add("--n_lamb_sh", type=int, action="append", help="appearance channels per time of the 3 factor pairs")
    add("--data_dim_color", type=int, default=27, help="appearance feature size fed to the shader")
    add("--ld_per_frame", type=float, default=1, help="new factor channels per frame (0.5: one every 2 frames; "
                                                      "1: one per frame; 0: no streaming)")
    add("--rm_weight_mask_thre", type=float, default=0.0001, help="evaluate colour only where weight exceeds this")
    add("--alpha_mask_thre", type=float, default=0.0001, help="alpha-mask threshold (kept in checkpoints)")
    add("--distance_scale", type=float, default=25, help="multiplies sample distances in compositing")
    add("--density_shift", type=float, default=-10, help="shift before softplus (fea2denseAct = softplus)")
    add("--shadingMode", type=str, default="MLP_PE", help="MLP_Fea, MLP_PE, MLP, SH or RGB")
    add("--pos_pe", type=int, default=6, help="positional-encoding frequencies of positions (MLP_PE)")
    add("--view_pe", type=int, default=6, help="positional-encoding frequencies of view directions")
    add("--fea_pe", type=int, default=6, help="positional-encoding frequencies of features (MLP_Fea)")
    add("--featureC", type=int, default=128, help="hidden width of the shading MLP")
    add("--fea2denseAct", type=str, default="softplus", help="feature to density: relu or softplus")
    add("--virtual_cannonical", type=int, default=0, help="accepted for release configs; must be 0")
    add("--target_portion", type=int, action="append", default=[], help="accepted for release configs; unused")
    add("--share_portion_embeddings", type=int, default=1, help="accepted for release configs; unused")
    add("--portion_weight", type=float, default=0, help="accepted for release configs; must be 0")
    add("--update_AlphaMask_list", type=int, action="append", help="alpha-mask updates: only -1 (off) is supported, "
                                                                   "as in the release")
    add("--lindisp", action="store_true", help="accepted for release configs; unused")
    add("--perturb", type=float, default=1.0, help="accepted for release configs; training always jitters")
    add("--accumulate_decay", type=float, default=0.998, help="accepted for release configs; unused")
    # run outputs
    add("--ckpt", type=str, default=None, help="checkpoint to resume from (or to render with --render_only 1)")
    add("--render_only", type=int, default=0, help="1: only render from --ckpt")
    add("--render_test", type=int, default=0, help="1: render the test cameras at every frame after fitting")
    add("--render_train", type=int, default=0, help="accepted for release configs; unused")
    add("--render_path", type=int, default=0, help="1: render the spiral path after fitting")
    add("--path_views", type=int, default=-1, help="views of the spiral path to render; -1: all")
    add("--export_mesh", type=int, default=0, help="accepted for release configs; unused")
    add("--device", type=str, default=default_device(), help="torch device of the field, e.g. cuda:0 or cpu")
    add("--cfg_options", nargs="+", help="accepted for release command lines; not supported")
    return p


def known_keys(parser: argparse.ArgumentParser) -> set[str]:
    """Config-file keys a parser accepts (its long option names without dashes)."""
    return {s[2:] for a in parser._actions for s in a.option_strings if s.startswith("--")}


def check_config_file(parser: argparse.ArgumentParser, path: str | Path) -> None:
    """Raise :class:`ConfigError` naming ``path`` and the first key the parser does not know."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found: check --config")
    with open(path) as stream:
        items = configargparse.DefaultConfigFileParser().parse(stream)
    keys = known_keys(parser)
    for key in items:
        if key not in keys:
            close = difflib.get_close_matches(key, sorted(keys), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path}: unknown key {key!r}{hint}; remove it or fix its spelling")


def config_path_from_argv(argv: Sequence[str]) -> str | None:
    """Value of ``--config`` in a command line, or None."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def parse_frame_list(value) -> list[int]:
    """``"200,201"``, ``"[200, 201]"``, ``"[]"`` or a list -> list of ints."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    text = str(value).strip().strip("[]()").strip()
    if not text:
        return []
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise ConfigError(f"frame_list = {value!r}: expected comma-separated frame numbers like \"0,1,2\"") from err


# Numeric options and their smallest valid value (checked before any work starts).
POSITIVE_OPTIONS = {"n_iters": 1, "batch_size": 1, "N_voxel_init": 1, "N_voxel_final": 1, "nSamples": 1,
                    "step_ratio": 1e-6, "downsample_train": 1e-6, "chunk": 1, "num_frames": 0,
                    "progress_refresh_rate": 1, "distortion_weight": 0, "L1_weight_inital": 0, "Ortho_weight": 0,
                    "TV_weight_density": 0, "TV_weight_app": 0, "lr_init": 0, "lr_basis": 0, "occupancy_cells": 1,
                    "occupancy_alpha": 0}


def check_torch_device(device, key: str = "device"):
    """``device`` as a torch.device; ConfigError when it cannot be parsed or is a CUDA device this machine lacks."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"{key} = {device!r}: not a device; pass e.g. cpu, cuda or cuda:0") from err
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{key} = {device}: CUDA is not available on this machine; pass {key} cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ConfigError(f"{key} = {device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                              f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return parsed


def finalize(args: argparse.Namespace) -> argparse.Namespace:
    """Fill defaults the release leaves to the config files and check release-only options are off."""
    args.frame_list = parse_frame_list(args.frame_list)
    args.skip_cams = list(args.skip_cams or [])
    args.n_lamb_sigma = list(args.n_lamb_sigma or DEFAULT_N_LAMB_SIGMA)
    args.n_lamb_sh = list(args.n_lamb_sh or DEFAULT_N_LAMB_SH)
    args.upsamp_list = list(args.upsamp_list or [])
    args.update_AlphaMask_list = list(args.update_AlphaMask_list or [-1])
    if any(i >= 0 for i in args.update_AlphaMask_list):
        raise ConfigError(f"update_AlphaMask_list = {args.update_AlphaMask_list}: alpha-mask updates are disabled in "
                          "the release (it raises when asked for one); use [-1]")
    for key in ("feat_diff_weight", "virtual_cannonical", "portion_weight"):
        if getattr(args, key):
            raise ConfigError(f"{key} = {getattr(args, key)}: the released models never use it and it is not "
                              "implemented; set it to 0")
    for key in ("importance_fine", "importance_coarse", "importance_uniform", "importance_polish"):
        value = getattr(args, key, None)
        if value is not None and not 0.0 <= value <= 1.0:
            what = "of n_iters" if key == "importance_polish" else "of the dense sample count"
            raise ConfigError(f"{key} = {value}: must be in [0, 1] (a share {what})")
    if getattr(args, "importance_volumes_mib", 0) < 0:
        raise ConfigError(f"importance_volumes_mib = {args.importance_volumes_mib}: must be >= 0 (MiB; 0 turns the "
                          "volumes off)")
    if getattr(args, "importance_fine", 0) and not getattr(args, "importance_coarse", 1):
        raise ConfigError("importance_coarse = 0 with importance_fine > 0: the coarse pass needs samples; set "
                          "importance_coarse (e.g. 0.25) or importance_fine = 0")
    for key, low in POSITIVE_OPTIONS.items():
        value = getattr(args, key, None)
        if value is not None and value < low:
            raise ConfigError(f"{key} = {value}: must be at least {low}")
    if getattr(args, "occupancy_alpha", 0) >= 1:
        raise ConfigError(f"occupancy_alpha = {args.occupancy_alpha}: must be below 1 (an opacity over one sampling "
                          "step; the default is 1e-4)")
    check_torch_device(getattr(args, "device", "cpu"), "device")
    if args.cfg_options:
        raise ConfigError("--cfg_options (mmcv overrides) is not supported: pass the options directly, "
                          "e.g. --n_iters 1000")
    for key in ("render_train", "export_mesh"):
        if getattr(args, key):
            log.warning("%s = 1 is accepted for release configs but not implemented; ignoring it", key)
    return args


def parse_args(argv: Sequence[str] | None = None,
               parser: configargparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parse a command line (and its ``--config`` file), checking the file's keys first."""
    parser = parser or build_parser()
    argv = list(argv) if argv is not None else None
    config = config_path_from_argv(argv if argv is not None else sys.argv[1:])
    if config is not None:
        check_config_file(parser, config)
    return finalize(parser.parse_args(argv))


def format_value(value) -> str:
    """A value as a config-file string (lists as ``[a, b]``, bools as ``true``/``false``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def write_config(args: argparse.Namespace, path: str | Path, parser: argparse.ArgumentParser | None = None) -> Path:
    """Write the resolved options as a config file that ``--config`` reads back (atomically)."""
    parser = parser or build_parser()
    path = Path(path)
    lines = ["# resolved options of this run; read back with --config"]
    for action in parser._actions:
        dest = action.dest
        if dest in NOT_WRITTEN or dest == "help" or not hasattr(args, dest):
            continue
        value = getattr(args, dest)
        if value is None or (isinstance(value, (list, tuple)) and not value and action.nargs is None
                             and not isinstance(action, argparse._AppendAction)):
            continue
        if isinstance(action, argparse._StoreTrueAction) and not value:
            continue
        if dest == "frame_list":
            value = '"' + ",".join(str(v) for v in value) + '"' if value else "[]"
        elif isinstance(value, (list, tuple)) and not value:
            continue
        lines.append(f"{dest} = {format_value(value)}")
    text = ("\n".join(lines) + "\n").encode()
    atomic_write(path, lambda handle: handle.write(text))
    return path


def read_config_file(path: str | Path) -> dict:
    """Options of a run's config: our ``config.txt`` (key = value) or the release's ``config.py`` (Python).

    Values that are not literals (e.g. mmcv objects in a ``config.py``) are left out.
    """
    path = Path(path)
    if path.suffix == ".py":
        values = {}
        for node in ast.parse(path.read_text(), filename=str(path)).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                try:
                    values[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    continue
        return values
    with open(path) as stream:
        items = configargparse.DefaultConfigFileParser().parse(stream)
    values = {}
    for key, raw in items.items():
        if isinstance(raw, list):
            values[key] = [_literal(v) for v in raw]
        else:
            values[key] = _literal(raw)
    return values


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {"true": True, "false": False}.get(text.lower(), text) if isinstance(text, str) else text


def find_run_config(folder: str | Path) -> Path | None:
    """The run config in ``folder``: ours (``config.txt``) or the release's (``config.py``)."""
    for name in (RESOLVED_CONFIG, RELEASE_CONFIG):
        candidate = Path(folder) / name
        if candidate.is_file():
            return candidate
    return None
