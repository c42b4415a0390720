"""Demo: edit one image with InstructPix2Pix (plain IP2P, the building block of the 4D editor).

Writes OUTPUT_DIR/input.png, OUTPUT_DIR/output.png and OUTPUT_DIR/grid.png (input | edit).

Usage:
    python test_ip2p.py --image_path examples/ip2p/image.jpg --prompt 'What if it was painted by Van Gogh?' \
        --resize 512 --steps 20 --guidance_scale 10.5 --image_guidance_scale 1.5
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from ip2p_models.cli import add_ip2p_arguments, load_editor

DEFAULT_IMAGE = Path(__file__).resolve().parent / "examples" / "ip2p" / "image.jpg"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image_path", type=Path, default=DEFAULT_IMAGE, help="image to edit")
    add_ip2p_arguments(parser)
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/test_ip2p"), help="where to write images")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from ip2p_models.image_io import fit_size, image_row, read_image, resize, save_image

    # 1. the input at the size IP2P expects
    try:
        image = read_image(args.image_path)
    except FileNotFoundError as err:
        raise SystemExit(f"error: {err}") from err
    if args.resize > 0:
        image = resize(image, fit_size(*image.shape[-2:], args.resize, multiple=64))

    # 2. edit
    editor = load_editor(args)
    start = time.perf_counter()
    edited = editor.edit_image(image, image, args.prompt, guidance_scale=args.guidance_scale,
                               image_guidance_scale=args.image_guidance_scale, diffusion_steps=args.steps,
                               seed=args.seed)
    seconds = time.perf_counter() - start

    # 3. write
    out = args.output_dir
    save_image(out / "input.png", image)
    save_image(out / "output.png", edited)
    save_image(out / "grid.png", image_row([image, edited]))
    print(f"edited {args.image_path} ({image.shape[-1]}x{image.shape[-2]}) in {seconds:.1f} s, "
          f"{editor.unet_evals} UNet evaluations")
    print(f"wrote {out / 'input.png'}, {out / 'output.png'} and {out / 'grid.png'} (input | edit)")
    return out


if __name__ == "__main__":
    main()
