"""Demo: edit a folder of frames consistently with anchor-aware InstructPix2Pix.

Frames are edited ``--sequence_length`` at a time (the first frame is the anchor of every batch). Writes
OUTPUT_DIR/input/<k>.png, OUTPUT_DIR/output/<k>.png and OUTPUT_DIR/grid.png (top row input, below the anchor-aware
edit; with --per_frame a third row edits every frame on its own, for comparison).

Usage:
    python test_ip2p_sequence.py --image_dir examples/ip2p/sequence --prompt 'What if it was painted by Van Gogh?' \
        --sequence_length 6 --resize 512 --steps 20 --guidance_scale 10.5 --image_guidance_scale 1.5
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from ip2p_models.cli import add_ip2p_arguments, load_editor

DEFAULT_IMAGE_DIR = Path(__file__).resolve().parent / "examples" / "ip2p" / "sequence"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image_dir", type=Path, default=DEFAULT_IMAGE_DIR,
                        help="folder of frames (numeric names are taken in numeric order)")
    parser.add_argument("--sequence_length", type=int, default=6,
                        help="frames per anchor-aware batch, anchor included (lower it if the GPU runs out of memory)")
    parser.add_argument("--num_frames", type=int, default=None, help="edit only the first N frames")
    parser.add_argument("--init", choices=("noise", "noisy_latent", "ddim_inv"), default="noise",
                        help="start from pure noise (full edit), the frames noised to level --T, or their DDIM "
                             "inversion to level --T")
    parser.add_argument("--T", type=int, default=1000, help="noise level out of 1000 for --init noisy_latent/ddim_inv")
    parser.add_argument("--per_frame", action="store_true", help="also edit each frame alone, for comparison")
    add_ip2p_arguments(parser)
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/test_ip2p_sequence"),
                        help="where to write images")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from ip2p_models.image_io import fit_size, image_row, list_images, read_image, resize, save_image

    # 1. the frames at the size IP2P expects
    if args.num_frames is not None and args.num_frames < 1:
        raise SystemExit(f"error: --num_frames {args.num_frames}: edit at least 1 frame (or leave it out for all)")
    try:
        files = list_images(args.image_dir)[:args.num_frames]
        images = [read_image(f) for f in files]
    except FileNotFoundError as err:
        raise SystemExit(f"error: {err}") from err
    sizes = {tuple(image.shape[-2:]) for image in images}
    if len(sizes) > 1:
        raise SystemExit(f"error: the frames of {args.image_dir} differ in size ({sorted(sizes)}); "
                         "use frames of one video")
    frames = torch.stack(images)
    if args.resize > 0:
        frames = resize(frames, fit_size(*frames.shape[-2:], args.resize, multiple=64))

    # 2. anchor-aware edit (and optionally the per-frame edit for comparison)
    editor = load_editor(args, sequence_length=args.sequence_length)
    edit = dict(guidance_scale=args.guidance_scale, image_guidance_scale=args.image_guidance_scale,
                diffusion_steps=args.steps, T=args.T, init=args.init, seed=args.seed)
    start = time.perf_counter()
    edited = editor.edit_sequence(frames, frames, args.prompt, **edit)
    seconds, evals = time.perf_counter() - start, editor.unet_evals
    rows = [frames, edited]
    if args.per_frame:
        rows.append(editor.edit_sequence(frames, frames, args.prompt, sequence_length=1, **edit))

    # 3. write
    out = args.output_dir
    for k, (image, result) in enumerate(zip(frames, edited)):
        save_image(out / "input" / f"{k}.png", image)
        save_image(out / "output" / f"{k}.png", result)
    if args.per_frame:
        for k, result in enumerate(rows[2]):
            save_image(out / "per_frame" / f"{k}.png", result)
    save_image(out / "grid.png", torch.cat([image_row(list(row)) for row in rows], dim=-2))
    print(f"edited {len(files)} frames of {args.image_dir} ({frames.shape[-1]}x{frames.shape[-2]}), "
          f"sequence_length {args.sequence_length}, in {seconds:.1f} s, {evals} UNet evaluations")
    print(f"wrote {out / 'input'}/, {out / 'output'}/" + (f", {out / 'per_frame'}/" if args.per_frame else "")
          + f" and {out / 'grid.png'} (rows: input, anchor-aware edit" + (", per-frame edit)" if args.per_frame
                                                                           else ")"))
    return out


if __name__ == "__main__":
    main()
