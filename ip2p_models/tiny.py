"""A tiny random-weight InstructPix2Pix pipeline, built fully offline (for tests and smoke runs).

The folder has the layout of ``timbrooks/instruct-pix2pix`` (``model_index.json``, ``unet/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``) so ``ip2p_models.load_ip2p(OUT)`` loads it like the real one:

- UNet: 8 input channels (noisy latent + image latent), 4 output channels, self- and cross-attention
  (``attn1``/``attn2``) in its first down block, mid block and last up block; 32/64 channels.
- VAE: 4 levels (latents are 1/8 of the image size, as in Stable Diffusion), 8-16 channels.
- Text encoder: a 2-layer CLIP text model of width 32; tokenizer: CLIP byte-level BPE over a generated
  vocabulary (the 256 byte symbols, alone and word-final, plus a few merges), no download.
- Scheduler: Euler ancestral with Stable Diffusion's betas, as the real repository ships (the loader swaps in DDIM).

The outputs are meaningless; the shapes, dtypes and code paths are those of the real model.

Written by ``tools/make_tiny_ip2p.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# Stable Diffusion 1.x noise schedule (what timbrooks/instruct-pix2pix's scheduler config holds).
SD_SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}
TEXT_WIDTH = 32
MAX_TOKENS = 77
# A few merges so the tokenizer exercises BPE; every merged symbol is added to the vocabulary.
MERGES = ["t h", "th e</w>", "a n", "i n", "o n</w>", "e r", "a t</w>", "i s</w>"]


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for the bytes 0..255 (GPT-2 / CLIP convention)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = {}, 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def tiny_vocab() -> dict[str, int]:
    """CLIP-style vocabulary: byte symbols, word-final byte symbols, merged symbols, then the two specials."""
    tokens = byte_symbols()
    tokens += [s + "</w>" for s in byte_symbols()]
    tokens += [merge.replace(" ", "") for merge in MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}


def tiny_tokenizer(max_tokens: int = MAX_TOKENS):
    """A CLIP byte-level BPE tokenizer over :func:`tiny_vocab` (no download)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=tiny_vocab(), merges=[tuple(m.split(" ")) for m in MERGES],
                         model_max_length=max_tokens)


def tiny_ip2p_pipeline(seed: int = 0, full_size: bool = False):
    """A random-weight ``StableDiffusionInstructPix2PixPipeline`` in memory (tiny, or with SD 1.5's architecture).

    Args:
        seed: torch seed of the random weights (same seed, same weights).
        full_size: the real model's architecture (UNet 320-1280 channels, VAE 128-512, CLIP width 768: ~1.1 B
            parameters) with random weights, for speed and memory benchmarks without the real weights.
    """
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        StableDiffusionInstructPix2PixPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab = tiny_vocab()
    text_width = 768 if full_size else TEXT_WIDTH

    # 1. tokenizer from the generated vocabulary
    tokenizer = tiny_tokenizer()

    # 2. random models, seeded
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=text_width, intermediate_size=4 * text_width if full_size else 64,
        num_hidden_layers=12 if full_size else 2, num_attention_heads=12 if full_size else 4,
        max_position_embeddings=MAX_TOKENS, projection_dim=text_width, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    if full_size:
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=8, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=text_width, attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
            layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            sample_size=512,
        )
    else:
        unet = UNet2DConditionModel(
            sample_size=32, in_channels=8, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=text_width, attention_head_dim=8,
            norm_num_groups=16,
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8,
            sample_size=64,
        )
    scheduler = EulerAncestralDiscreteScheduler(**SD_SCHEDULE, steps_offset=1)
    return StableDiffusionInstructPix2PixPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build_tiny_ip2p(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random InstructPix2Pix pipeline in diffusers layout into ``out_dir``; returns the folder.

    Args:
        out_dir: folder to create (or overwrite files in).
        seed: torch seed of the random weights (same seed, same weights).

    Returns:
        ``out_dir`` as a Path.
    """
    out_dir = Path(out_dir)
    tiny_ip2p_pipeline(seed).save_pretrained(out_dir)
    log.info("wrote a tiny InstructPix2Pix pipeline to %s", out_dir)
    return out_dir
