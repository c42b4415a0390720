"""Write a tiny random-weight InstructPix2Pix pipeline folder, fully offline (for tests and smoke runs).

The model itself is built by :mod:`ip2p_models.tiny` (its docstring describes the layout).

Usage:
    python tools/make_tiny_ip2p.py OUT [--seed 0]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ip2p_models.tiny import build_tiny_ip2p, tiny_ip2p_pipeline

__all__ = ["build_tiny_ip2p", "main", "tiny_ip2p_pipeline"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the pipeline into")
    parser.add_argument("--seed", type=int, default=0, help="torch seed of the random weights")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = build_tiny_ip2p(args.out, seed=args.seed)
    print(f"tiny InstructPix2Pix written to {out} (load it with --ip2p_model {out})")


if __name__ == "__main__":
    main()
