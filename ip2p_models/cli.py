"""Command-line flags shared by the programs that run InstructPix2Pix (the demos, benchmarks)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from common.settings import add_settings

from .settings import DEFAULT_IP2P_MODEL, RefineSettings

DEFAULT_PROMPT = "What if it was painted by Van Gogh?"


def add_ip2p_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by the IP2P demos: model, device, guidance, steps, size, seed."""
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the editing instruction")
    parser.add_argument("--resize", type=int, default=512,
                        help="long side in pixels (aspect kept, both sides rounded down to multiples of 64); "
                             "0 keeps the input size")
    parser.add_argument("--steps", type=int, default=RefineSettings.diffusion_steps, help="diffusion (DDIM) steps")
    add_settings(parser, RefineSettings, ["guidance_scale", "image_guidance_scale"])
    add_model_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="noise seed: the same seed gives the same edit")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags that choose the IP2P weights and where and how they run."""
    parser.add_argument("--ip2p_model", default=DEFAULT_IP2P_MODEL,
                        help="InstructPix2Pix weights: a local diffusers folder (works offline) or a hub id "
                             "(needs the network once)")
    parser.add_argument("--device", "--ip2p_device", dest="device",
                        default="cuda" if torch.cuda.is_available() else "cpu", help="device to run IP2P on")
    parser.add_argument("--ip2p_use_full_precision", action="store_true", help="fp32 on CUDA too (default fp16)")
    parser.add_argument("--attention_slicing", action="store_true", help="less memory, slower (small GPUs)")
    parser.add_argument("--cpu_offload", action="store_true",
                        help="keep the models on the CPU, move each to the GPU only while it runs (small GPUs)")


def add_flow_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags that choose the optical-flow backend and its weights."""
    from ip2p_models.flow import FLOW_BACKENDS

    parser.add_argument("--flow", choices=FLOW_BACKENDS, default=None,
                        help="flow backend (default: raft when --raft_ckpt is given, else dis)")
    parser.add_argument("--raft_ckpt", type=Path, default=None,
                        help="RAFT weights: original raft-things.pth / raft-small.pth or a torchvision state dict")
    parser.add_argument("--raft_iters", type=int, default=None, help="RAFT iterations (default 20 large, 12 small)")


def load_editor(args: argparse.Namespace, sequence_length: int | None = None):
    """The IP2P editor the demo flags ask for; exits with the loader's message when the weights are missing."""
    from ip2p_models import IP2PWeightsError, load_ip2p

    try:
        return load_ip2p(args.ip2p_model, device=args.device, full_precision=args.ip2p_use_full_precision,
                         sequence_length=sequence_length, attention_slicing=args.attention_slicing,
                         cpu_offload=args.cpu_offload, progress=True)
    except (IP2PWeightsError, ValueError) as err:
        raise SystemExit(f"error: {err}") from err
