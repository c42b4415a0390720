"""Quality of the mini InstructPix2Pix on held-out images: does it follow its three instructions?

For each instruction, edits held-out images (the built-in scene from seeds training never drew, and the landscape
family it never saw) at 160x120 with 20 DDIM steps, single images, and prints:
- night, sketch: PSNR of the edit against the procedural target of the input (goals: night >= 26 dB, sketch >= 20 dB
  on the held-out look);
- snowy: PSNR against the target's flake-free colours, the edit's mean brightness next to the target's (flakes
  included), and the mean absolute difference between two seeds' edits of the same image (it must not be 0: the
  model is stochastic, like a real IP2P edit);
- for scale: the PSNR of the autoencoder's reconstruction of the targets (a ceiling for any edit).
With ``--card`` the table is written into the model card (between its ``bench:`` markers).

    python benchmarks/bench_mini_ip2p.py --ip2p_model weights/mini-ip2p          # ~3 min on 2 CPU cores
    python benchmarks/bench_mini_ip2p.py --ip2p_model weights/mini-ip2p --guidance 3 5 7.5 --card
    python benchmarks/bench_ip2p.py --ip2p_model weights/mini-ip2p --size 160     # speed per edited frame
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ip2p_models.instructions import INSTRUCTIONS  # noqa: E402
from ip2p_models.procedural_images import make_image  # noqa: E402

HELDOUT_SEED = 424242  # training draws its images from --seed's generator; this one is never used there
CARD_START, CARD_END = "<!-- bench: start -->", "<!-- bench: end -->"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(1 / max(float(np.mean((a - b) ** 2)), 1e-12))


def heldout_images(family: str, count: int, width: int, height: int) -> list[np.ndarray]:
    rng = np.random.default_rng(HELDOUT_SEED + sum(map(ord, family)))
    return [make_image(family, rng, width, height) for _ in range(count)]


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float()


def to_numpy(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).double().numpy()


@torch.no_grad()
def autoencoder_psnr(editor, targets: list[np.ndarray]) -> float:
    values = []
    for target in targets:
        x = to_tensor(target)[None].to(editor.device, editor.dtype)
        recon = editor.decode_latents(editor.encode_images(x)).float().cpu()[0]
        values.append(psnr(to_numpy(recon), target))
    return float(np.mean(values))


def evaluate(editor, images: list[np.ndarray], guidance: float, image_guidance: float, steps: int) -> dict:
    rows = {}
    rng = np.random.default_rng(0)
    for name, instruction in INSTRUCTIONS.items():
        psnrs, brightness, target_brightness, seed_diffs = [], [], [], []
        start, evals = time.perf_counter(), editor.unet_evals
        for k, image in enumerate(images):
            x = to_tensor(image)
            edit = to_numpy(editor.edit_image(x, x, instruction.prompt, guidance_scale=guidance,
                                              image_guidance_scale=image_guidance, diffusion_steps=steps, seed=k))
            psnrs.append(psnr(edit, instruction.reference(image)))
            brightness.append(edit.mean())
            target_brightness.append(instruction.apply(image, rng).mean())
            if not instruction.deterministic and k < 3:
                again = to_numpy(editor.edit_image(x, x, instruction.prompt, guidance_scale=guidance,
                                                   image_guidance_scale=image_guidance, diffusion_steps=steps,
                                                   seed=1000 + k))
                seed_diffs.append(np.abs(edit - again).mean())
        rows[name] = {"psnr": float(np.mean(psnrs)), "brightness": float(np.mean(brightness)),
                      "target_brightness": float(np.mean(target_brightness)),
                      "seed_difference": float(np.mean(seed_diffs)) if seed_diffs else None,
                      "seconds_per_image": (time.perf_counter() - start) / len(images),
                      "unet_evals_per_image": (editor.unet_evals - evals) / len(images),
                      "autoencoder_psnr": autoencoder_psnr(editor, [instruction.reference(i) for i in images])}
    return rows


def table(results: dict, count: int, steps: int, size: tuple[int, int]) -> str:
    lines = [f"Held-out images at {size[0]}x{size[1]}, {count} per family, {steps} DDIM steps, single-image edits "
             "(`python benchmarks/bench_mini_ip2p.py`):", "",
             "| images | guidance (text, image) | night PSNR | sketch PSNR | snowy PSNR (no flakes) | "
             "snowy brightness (target) | snowy seed-to-seed diff | autoencoder ceiling night / sketch | s/image |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    for (family, guidance, image_guidance), rows in results.items():
        night, sketch, snow = rows["night"], rows["sketch"], rows["snowy"]
        lines.append(f"| {family} | {guidance:g}, {image_guidance:g} | {night['psnr']:.2f} | {sketch['psnr']:.2f} | "
                     f"{snow['psnr']:.2f} | {snow['brightness']:.3f} ({snow['target_brightness']:.3f}) | "
                     f"{snow['seed_difference']:.3f} | {night['autoencoder_psnr']:.1f} / "
                     f"{sketch['autoencoder_psnr']:.1f} | {night['seconds_per_image']:.2f} |")
    return "\n".join(lines)


def write_card(folder: Path, text: str) -> None:
    card = folder / "README.md"
    if not card.is_file():
        print(f"no model card at {card}: not written", file=sys.stderr)
        return
    content = card.read_text()
    if CARD_START not in content or CARD_END not in content:
        content += f"\n{CARD_START}\n{CARD_END}\n"
    head, rest = content.split(CARD_START, 1)
    tail = rest.split(CARD_END, 1)[1]
    card.write_text(f"{head}{CARD_START}\n{text}\n{CARD_END}{tail}")
    print(f"figures written into {card}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ip2p_model", default=str(ROOT / "weights" / "mini-ip2p"), help="the model folder")
    parser.add_argument("--families", nargs="+", default=["scene", "landscape"], help="held-out image families")
    parser.add_argument("--count", type=int, default=6, help="images per family")
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps")
    parser.add_argument("--guidance", type=float, nargs="+", default=[7.5], help="text guidance scales to try")
    parser.add_argument("--image_guidance", type=float, default=1.5, help="image guidance scale")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--card", action="store_true", help="write the table into the model card")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from ip2p_models import load_ip2p

    editor = load_ip2p(args.ip2p_model, device="cpu")
    results = {}
    for family in args.families:
        images = heldout_images(family, args.count, args.width, args.height)
        for guidance in args.guidance:
            results[(family, guidance, args.image_guidance)] = evaluate(editor, images, guidance,
                                                                        args.image_guidance, args.steps)
            print(table({(family, guidance, args.image_guidance): results[(family, guidance,
                                                                           args.image_guidance)]},
                        args.count, args.steps, (args.width, args.height)).splitlines()[-1], flush=True)
    text = table(results, args.count, args.steps, (args.width, args.height))
    print("\n" + text)
    if args.card:
        write_card(Path(args.ip2p_model), text)


if __name__ == "__main__":
    main()
