"""Score an edit: temporal and cross-view consistency, preservation, fidelity and CLIP similarity.

Scores the edited dataset (``edited_images.npy``) and the edited NeRF's renders of a ``stream_edit.py`` run
directory, next to the original frames and the original NeRF's renders as floors, and writes ``RUN_DIR/eval/``:
``metrics.json``, ``metrics.md`` (the table) and ``per_frame.png``. The metrics are defined in the README
("Scoring an edit") and in ``editing/evaluation.py``.

Usage:
    python tools/evaluate_edit.py log/synthetic/edit_demo
    python tools/evaluate_edit.py log/neural_3d/edit_coffee_50_2 --reference log/neural_3d/train_coffee_50_2 \
        --flow raft --raft_ckpt weights/raft-things.pth --clip_model weights/clip-vit-large-patch14

Exit codes: 0 scored, 2 bad input (no edit in the folder, a scene that does not match, a missing CLIP folder).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.errors import UserError
from editing.edit_report import EvalOptions, evaluate_run, markdown_table

log = logging.getLogger("evaluate_edit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="the edit's run directory (stream_edit.py's {basedir}/{expname})")
    parser.add_argument("--datadir", default=None, help="the scene folder (default: the one in the run's config.txt)")
    parser.add_argument("--reference", default=None,
                        help="the original NeRF: its training run directory or checkpoint (default: the checkpoint "
                             "the edit started from, recorded in edit_state.json)")
    parser.add_argument("--flow", default="auto", choices=("auto", "gt", "dis", "raft"),
                        help="flow for the temporal error, computed on the original frames (auto: ground truth when "
                             "the scene has it, else dis)")
    parser.add_argument("--raft_ckpt", default=None, help="RAFT weights for --flow raft")
    parser.add_argument("--clip_model", default=None,
                        help="a local transformers CLIP folder; without it the CLIP columns say 'no CLIP weights'")
    parser.add_argument("--source_caption", default=None,
                        help="caption of the original (default: the instruction's, or 'a photo')")
    parser.add_argument("--target_caption", default=None,
                        help="caption of the edit (default: the instruction's, or the prompt itself)")
    parser.add_argument("--renders", default="all", choices=("all", "test", "none"),
                        help="which cameras the NeRFs render for scoring (all: every camera, cached in eval/)")
    parser.add_argument("--clip_frames", type=int, default=8, help="frames per camera CLIP scores (evenly spaced)")
    parser.add_argument("--neighbours", type=int, default=2, help="nearest cameras each camera is compared with")
    parser.add_argument("--device", default="cpu", help="device of the renders, flow and CLIP")
    parser.add_argument("--out", default=None, help="output folder (default RUN_DIR/eval)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.clip_frames < 1 or args.neighbours < 1:
        parser.error("--clip_frames and --neighbours must be at least 1")
    options = EvalOptions(**{k: v for k, v in vars(args).items() if k != "run_dir"})
    try:
        report = evaluate_run(args.run_dir, options)
    except UserError as err:
        log.error("%s", err)
        return 2
    print(markdown_table(report))
    print(f"\nwritten to {Path(options.out or args.run_dir / 'eval')}/ (metrics.json, metrics.md, per_frame.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
