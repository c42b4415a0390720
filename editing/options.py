"""Options of ``stream_edit.py``: every option of ``stream_train.py`` (the scene and the NeRF fit) plus the edit's.

The edit keys are the release's (``prompt``, ``guidance_scale``, ``image_guidance_scale``, ``diffusion_steps``,
``refine_num_steps``, ``refine_diffusion_steps``, ``restview_refine_num_steps``, ``restview_refine_diffusion_steps``,
``sequence_length``, ``warp_ratio``, ``keyframe_rounds``) and ours (``edit_schedule``, ``key_cams``,
``edit_rounds``, ``workers``, ``resume``, ``cache``, the editor and flow backends ...). Config files mix both kinds.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import configargparse
import torch

from common.settings import add_settings
from ip2p_models.settings import DEFAULT_IP2P_MODEL
from models.config import (
    ConfigError,
    build_parser,
    check_config_file,
    check_torch_device,
    config_path_from_argv,
    finalize,
)

from .schedules import EditSettings

SCHEDULES = ("keyframe", "keyview", "monocular", "perframe", "anchor")


def default_ip2p_device() -> str:
    """``cuda:1`` with two GPUs or more (trainer and editor apart), ``cuda:0`` with one, else ``cpu``."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return "cuda:1" if count >= 2 else "cuda:0" if count == 1 else "cpu"


def build_edit_parser() -> configargparse.ArgumentParser:
    """The parser of ``stream_edit.py``: :func:`models.config.build_parser` plus the edit's options."""
    p = build_parser()
    p.description = "Edit a fitted 4D NeRF with an instruction (Instruct 4D-to-4D)."
    group = p.add_argument_group("editing")
    add = group.add_argument
    # the prompt, guidance, steps, windows, refinement levels and the seed: editing.schedules.EditSettings
    add_settings(group, EditSettings)
    add("--edit_schedule", type=str, default=None, choices=SCHEDULES,
        help="keyframe (default for multi-view scenes): edit frame 0 of all cameras, then each camera through time "
             "(the release); keyview: edit key cameras through time, then build the others from them (the paper); "
             "monocular (default, and the only full schedule, for a monocular capture): the video is one pseudo-view "
             "edited through time with the sliding window; baselines for ablations: perframe (every image edited "
             "alone, no anchor, flow or depth) and anchor (anchor-aware batches per camera, no flow or depth)")
    add("--key_cams", type=int, action="append", default=None,
        help="keyview: camera number of a key camera (repeatable); default the camera nearest the rig's centre")
    add("--edit_rounds", type=int, default=1, help="full editing passes; pass 2 and later start from the NeRF's "
                                                   "renders (iterative dataset update)")
    add("--post_edit_iters", type=int, default=2000, help="NeRF iterations after the editor finished (at least; "
                                                          "fitting also runs to n_iters)")
    # editor and flow
    add("--ip2p_model", type=str, default=DEFAULT_IP2P_MODEL,
        help="InstructPix2Pix weights: local diffusers folder (works offline) or hub id")
    add("--ip2p_device", type=str, default=default_ip2p_device(),
        help="editor device(s), comma-separated for several editor processes, e.g. cuda:1,cuda:2")
    add("--ip2p_use_full_precision", type=int, default=0, help="1: fp32 on CUDA too (default fp16)")
    add("--attention_slicing", type=int, default=0, help="1: less editor memory, slower")
    add("--cpu_offload", type=int, default=0, help="1: keep IP2P on the CPU, move each part to the GPU while it runs")
    add("--ip2p_fallback_tiny", type=int, default=0, help="no longer used (the demo edits with weights/mini-ip2p)")
    add("--editor", type=str, default="ip2p",
        help="ip2p, or module:factory returning an object with edit_sequence (research and tests)")
    add("--flow", type=str, default=None, choices=("raft", "dis"),
        help="optical flow backend (default: raft with --raft_ckpt, else dis)")
    add("--raft_ckpt", type=str, default=None, help="RAFT weights file")
    add("--raft_iters", type=int, default=None, help="RAFT iterations")
    # processes, resume, outputs
    add("--workers", type=int, default=0, help="editor processes over disjoint camera sets (0: one per "
                                               "--ip2p_device)")
    add("--editor_threads", type=int, default=0, help="torch threads of each editor process (0: torch's default)")
    add("--resume", action="store_true", help="continue an interrupted edit in the same run directory")
    add("--cache", type=str, default=None, help="folder for the rendered depth cache (default {run dir}/cache)")
    add("--edit_save_every", type=float, default=120.0, help="seconds between saves of the edited images")
    add("--preview_every", type=int, default=1, help="write a preview grid every this many editing steps (0: never)")
    return p


def parse_edit_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``stream_edit.py``'s command line and config; check the edit options."""
    import sys

    parser = build_edit_parser()
    argv = list(argv) if argv is not None else sys.argv[1:]
    config = config_path_from_argv(argv)
    if config is not None:
        check_config_file(parser, config)
    args = finalize(parser.parse_args(argv))
    return check_edit_args(args)


def check_edit_args(args: argparse.Namespace) -> argparse.Namespace:
    """Raise :class:`ConfigError` for edit options that cannot work; normalize lists."""
    args.prompt = (args.prompt or "").strip()
    if not args.prompt:
        raise ConfigError("the prompt is empty: pass --prompt 'What if it was painted by Van Gogh?' (or prompt = "
                          "... in the config)")
    if not args.ckpt and not args.resume:
        raise ConfigError("no NeRF to edit: pass --ckpt log/.../train_{scene}/ckpt-N.th (a stream_train.py "
                          "checkpoint or the release's)")
    args.key_cams = list(args.key_cams or [])
    args.ip2p_devices = [d.strip() for d in str(args.ip2p_device).split(",") if d.strip()]
    if not args.ip2p_devices:
        raise ConfigError("--ip2p_device is empty: pass e.g. cuda:1 or cpu")
    for device in args.ip2p_devices:
        check_torch_device(device, "ip2p_device")
    if args.workers < 0:
        raise ConfigError(f"workers = {args.workers}: pass 0 (one per --ip2p_device) or a positive number")
    args.workers = args.workers or len(args.ip2p_devices)
    if args.sequence_length < 2:
        raise ConfigError(f"sequence_length = {args.sequence_length}: need at least 2 (an anchor and one frame)")
    if not 1 <= args.overlap_length < args.sequence_length:
        # 0 would edit every window from noise on its own: no shared frame carries the edit on (seams at each join)
        raise ConfigError(f"overlap_length = {args.overlap_length}: need 1 <= overlap_length < sequence_length "
                          f"({args.sequence_length}; consecutive windows share at least the frame that carries the "
                          "edit on, and each adds a new one)")
    if args.keyframe_rounds < 1 or args.edit_rounds < 1:
        raise ConfigError("keyframe_rounds and edit_rounds must be at least 1")
    if not 0.0 <= args.warp_ratio <= 1.0:
        raise ConfigError(f"warp_ratio = {args.warp_ratio}: must be in [0, 1]")
    for level, steps in (("refine_num_steps", "refine_diffusion_steps"),
                         ("restview_refine_num_steps", "restview_refine_diffusion_steps")):
        T, n = getattr(args, level), getattr(args, steps)
        if not 1 <= T <= 1000 or not 1 <= n <= T:
            raise ConfigError(f"{level} = {T}, {steps} = {n}: need 1 <= {steps} <= {level} <= 1000")
    if not 1 <= args.diffusion_steps <= 1000:
        raise ConfigError(f"diffusion_steps = {args.diffusion_steps}: must be in 1..1000")
    return args
