"""Train the mini InstructPix2Pix (the editor shipped in ``weights/mini-ip2p``) on this machine's CPU.

Three procedural instructions ("make it night", "turn it into a pencil sketch", "make it snowy", with paraphrases;
see ``ip2p_models/instructions.py``) on images made on the fly (``ip2p_models/procedural_images.py``). The result is
a diffusers InstructPix2Pix folder that every program loads with ``--ip2p_model OUT_DIR``. The same seed and step
counts reproduce it (up to the nondeterminism of CPU thread scheduling); ``--minutes`` is only a safety cap.

Usage:
    python tools/train_mini_ip2p.py weights/mini-ip2p --seed 0
    python benchmarks/bench_ip2p.py --mini weights/mini-ip2p     # figures for the model card
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ip2p_models.mini_ip2p import MiniTrainSettings, check_training, parse_instruction_mix, train_mini_ip2p


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to write the pipeline into (replaced when training ends)")
    defaults = MiniTrainSettings()
    helps = {
        "seed": "seed of the weights, the images and the noise",
        "vae_steps": "autoencoder training steps",
        "unet_steps": "UNet + text encoder training steps",
        "minutes": "wall-clock budget over both stages: the learning rate anneals by steps or time, whichever is "
                   "further along, and training stops at the end of either (the steps done are recorded)",
        "vae_share": "share of the time budget the autoencoder stage may take",
        "crop": "training crop size in pixels",
        "vae_batch": "autoencoder batch (half sources, half edits)",
        "unet_batch": "UNet batch",
        "vae_lr": "autoencoder peak learning rate",
        "unet_lr": "UNet and text encoder peak learning rate",
        "pool_size": "procedural images kept in memory",
        "refresh_per_step": "pool images replaced by new ones each step",
        "drop_prob": "probability of each conditioning dropout (text, image, both)",
        "ema_decay": "decay of the saved exponential moving average of the weights",
        "min_snr_gamma": "min-SNR loss weighting clamp",
        "prediction_type": "what the UNet predicts: v_prediction (default) or epsilon",
        "threads": "torch threads (0: torch's default)",
        "vae_from": "reuse the autoencoder of an earlier mini model folder (skips stage 1; its record is kept)",
        "unet_from": "continue an earlier mini model folder: its autoencoder (stage 1 skipped), UNet and text encoder "
                     "are trained further (a fresh warm-up and cosine schedule over --minutes)",
        "instruction_mix": "relative draw weights of the instructions, e.g. sketch:2 (the others weigh 1)",
    }
    for field in dataclasses.fields(MiniTrainSettings):
        parser.add_argument(f"--{field.name}", type=type(getattr(defaults, field.name)),
                            default=getattr(defaults, field.name), help=helps[field.name])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    settings = MiniTrainSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(MiniTrainSettings)})
    try:
        parse_instruction_mix(settings.instruction_mix)
        check_training(settings, args.out)
    except ValueError as error:
        parser.error(str(error))
    record = train_mini_ip2p(args.out, settings)
    print(f"mini InstructPix2Pix written to {args.out} in {record['total_minutes']} min "
          f"(vae {record['vae_steps_done']} steps, unet {record['unet_steps_done']} steps); "
          f"use it with --ip2p_model {args.out}")


if __name__ == "__main__":
    main()
