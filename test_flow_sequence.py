"""Sliding-window editing of a frame sequence: flow-guided warping with anchor-aware IP2P painting.

The routine ``stream_edit.py`` runs (``ip2p_models.sliding_window``): the first window of ``--sequence_length``
frames is edited from noise; each next window shares ``--overlap_length`` frames with the previous one, its new
frames are filled by warping their predecessor's edit frame to frame (flow computed on the original frames;
unreliable pixels keep the original) and the window is refined from noise level ``--refine_num_steps`` with
``--refine_diffusion_steps`` steps, the shared frame as anchor. The release's names of those two options,
``--painting_num_train_timesteps`` and ``--painting_diffusion_steps``, are accepted too.
Writes to ``--output_dir``:
    edited/<k>.png           every edited frame (at the working size)
    window_<i>_filled.png    the editor's input of window i >= 1 (warped fills), its masks in window_<i>_mask.png
    window_<i>_edited.png    window i after editing
    sequence.png             originals (top) over edited frames (bottom)

    python test_flow_sequence.py --image_dir examples/flow/frames --prompt 'What if it was painted by Van Gogh?' \\
        --sequence_length 3 --resize 512 --guidance_scale 10.5 --image_guidance_scale 1.5 \\
        --painting_diffusion_steps 5 --painting_num_train_timesteps 600
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from common.settings import add_settings, settings_from_args
from ip2p_models.cli import add_flow_arguments, add_model_arguments, load_editor
from ip2p_models.flow import make_flow
from ip2p_models.image_io import fit_size, image_row, list_images, read_image, resize, save_image
from ip2p_models.settings import RefineSettings
from ip2p_models.sliding_window import Window, sliding_window_edit

log = logging.getLogger("test_flow_sequence")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image_dir", type=Path, default=Path("examples/flow/frames"),
                        help="folder of frames (0.png, 1.png, ... in numeric order, else sorted by name)")
    parser.add_argument("--prompt", default="What if it was painted by Van Gogh?", help="editing instruction")
    parser.add_argument("--sequence_length", type=int, default=5, help="frames per window")
    parser.add_argument("--overlap_length", type=int, default=1, help="frames shared by consecutive windows")
    parser.add_argument("--resize", type=int, default=512,
                        help="long side of the working size in pixels (both sides rounded down to multiples of 8)")
    # guidance, steps, --refine_num_steps (alias --painting_num_train_timesteps), --refine_diffusion_steps (alias
    # --painting_diffusion_steps), --photometric_threshold
    add_settings(parser, RefineSettings)
    add_model_arguments(parser)  # --ip2p_model, --device/--ip2p_device, --ip2p_use_full_precision, ...
    add_flow_arguments(parser)  # --flow, --raft_ckpt, --raft_iters
    parser.add_argument("--seed", type=int, default=7070, help="base seed (window i uses seed + i)")
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/test_flow_sequence"), help="where to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    # 1. frames at the working size
    files = list_images(args.image_dir)
    first = read_image(files[0])
    size = fit_size(*first.shape[1:], args.resize)
    originals = torch.stack([resize(read_image(f), size) for f in files])
    log.info("loaded %d frames from %s at %dx%d", len(files), args.image_dir, size[1], size[0])

    # 2. models
    editor = load_editor(args)
    flow = make_flow(args.flow, args.raft_ckpt, device=args.device, iters=args.raft_iters)

    # 3. edit, writing each window as it is done
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)

    def write_window(window: Window) -> None:
        save_image(out / f"window_{window.index}_edited.png", image_row(list(window.edited)))
        if window.filled is not None:
            save_image(out / f"window_{window.index}_filled.png", image_row(list(window.filled)))
            save_image(out / f"window_{window.index}_mask.png", image_row(list(window.masks.float())))
            log.info("window %d (frames %d-%d): warp reliable on %.1f%% of the new frames' pixels", window.index,
                     window.frames[0], window.frames[-1], 100 * window.masks.float().mean())

    settings = settings_from_args(RefineSettings, args)
    edited = sliding_window_edit(editor, originals, args.prompt, flow, sequence_length=args.sequence_length,
                                 overlap_length=args.overlap_length, settings=settings, seed=args.seed,
                                 on_window=write_window)

    # 4. write the frames and an overview
    for k, frame in enumerate(edited):
        save_image(out / "edited" / f"{k}.png", frame)
    save_image(out / "sequence.png", torch.cat([image_row(list(originals)), image_row(list(edited))], dim=1))
    log.info("wrote %s (%d edited frames, windows, sequence.png)", out, len(edited))


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as err:  # a missing or malformed input, RAFT weights included
        raise SystemExit(f"error: {err}") from err
