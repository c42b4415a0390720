"""Convert RAFT weights of the original repository (raft-things.pth, raft-small.pth, ...) to torchvision's layout.

The output is a plain state dict that ``torchvision.models.optical_flow.raft_large()`` (or ``raft_small()``) loads
with ``strict=True``; ``--raft_ckpt`` accepts either file, so converting is optional (it saves the conversion at
every start and gives a file other torchvision code can use).

Usage:
    python tools/convert_raft_weights.py weights/raft-things.pth weights/raft_large_tv.pth
"""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ip2p_models.raft_convert import (
    RaftWeightsError,
    build_torchvision_raft,
    is_original_layout,
    original_to_torchvision,
)

log = logging.getLogger(__name__)


def convert_raft_weights(src: str | Path, dst: str | Path) -> str:
    """Read an original-layout RAFT file, write torchvision's layout to ``dst``, return the variant."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"{src} not found: give the path of the original RAFT checkpoint "
                                "(e.g. raft-things.pth or raft-small.pth from princeton-vl/RAFT)")
    try:
        data = torch.load(src, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise RaftWeightsError(f"{src} is not a readable PyTorch checkpoint ({type(err).__name__}; truncated, or "
                               "not a checkpoint): download it again") from err
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not is_original_layout(data):
        raise RaftWeightsError(f"{src} is not in the original RAFT layout (no fnet./cnet. keys); if it is already a "
                               "torchvision state dict, pass it to --raft_ckpt directly")
    state, variant = original_to_torchvision(data, source=str(src))
    build_torchvision_raft(variant).load_state_dict(state)  # strict: proves the file is complete
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(dst)
    return variant


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="original RAFT checkpoint (state dict with module.fnet... keys)")
    parser.add_argument("dst", type=Path, help="output file: torchvision raft_large / raft_small state dict")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        variant = convert_raft_weights(args.src, args.dst)
    except (FileNotFoundError, RaftWeightsError) as err:
        raise SystemExit(f"convert_raft_weights: {err}") from err
    print(f"wrote {args.dst}: torchvision raft_{variant} state dict (load with "
          f"torchvision.models.optical_flow.raft_{variant}() or pass it as --raft_ckpt)")


if __name__ == "__main__":
    main()
