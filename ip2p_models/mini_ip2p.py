"""The mini InstructPix2Pix: a small diffusion editor trained on this project's procedural instructions.

Architecture (diffusers / transformers classes, saved in the layout of ``timbrooks/instruct-pix2pix`` so
``ip2p_models.load_ip2p`` loads it like the real model):

- ``AutoencoderKL`` with 3 levels: latents are 1/4 of the image size, 4 channels;
- ``UNet2DConditionModel`` with 8 input channels (noisy latent + image latent) and cross-attention transformer
  blocks at its two coarser levels, so ``attn1`` (self-attention, where the anchor processor acts) and ``attn2``
  (text) exist;
- a 2-layer ``CLIPTextModel`` with the byte-level BPE tokenizer of :mod:`ip2p_models.tiny`;
- Stable Diffusion's noise schedule (scaled-linear betas, 1000 steps): DDPM training, a DDIM scheduler saved.

Training (:func:`train_mini_ip2p`) has two stages: the autoencoder alone (reconstruction of source and edited
images), then the UNet and text encoder together on epsilon prediction with InstructPix2Pix's conditioning dropout
(text alone, image alone, both; 5% each). Training pairs are made on the fly from
:mod:`ip2p_models.procedural_images` and :mod:`ip2p_models.instructions`; nothing is written but the model.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .instructions import INSTRUCTIONS, all_prompts
from .loading import INSTRUCTIONS_FILE
from .procedural_images import TRAIN_FAMILIES, make_image

log = logging.getLogger(__name__)

SD_SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}
TEXT_WIDTH = 64
MAX_TOKENS = 40
MAX_IMAGE_SIDE = 224  # largest side of the procedural training images (crops are cut from them)


@dataclass
class MiniTrainSettings:
    """What :func:`train_mini_ip2p` does; every field is recorded in the model card."""

    seed: int = 0
    vae_steps: int = 4000
    unet_steps: int = 10000
    minutes: float = 58.0  # wall-clock budget over both stages; the card records the steps actually done
    vae_share: float = 0.25  # share of the budget the autoencoder stage may take
    crop: int = 64
    vae_batch: int = 12
    unet_batch: int = 24
    vae_lr: float = 1e-3
    unet_lr: float = 4e-4
    pool_size: int = 400
    refresh_per_step: int = 1
    drop_prob: float = 0.05  # each of: text dropped, image dropped, both dropped
    ema_decay: float = 0.999
    min_snr_gamma: float = 5.0
    prediction_type: str = "v_prediction"  # or "epsilon" (the real IP2P's); see train_unet
    threads: int = 0  # torch threads; 0 keeps torch's default
    vae_from: str = ""  # a trained mini model folder whose autoencoder is reused (stage 1 skipped)
    unet_from: str = ""  # a trained mini model folder to continue from: its autoencoder, UNet and text encoder
    instruction_mix: str = ""  # relative draw weights, e.g. "sketch:2" (unnamed instructions weigh 1)


def parse_instruction_mix(text: str) -> dict[str, float]:
    """``"sketch:2,snowy:1.5"`` -> ``{"sketch": 2.0, "snowy": 1.5}``; names must be instructions, weights >= 0."""
    mix = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, weight = item.partition(":")
        if name not in INSTRUCTIONS:
            raise ValueError(f"instruction_mix: unknown instruction {name!r}; known: {', '.join(INSTRUCTIONS)}")
        try:
            mix[name] = float(weight)
        except ValueError:
            raise ValueError(f"instruction_mix: {item!r} is not NAME:WEIGHT (e.g. sketch:2)") from None
        if mix[name] < 0:
            raise ValueError(f"instruction_mix: {item!r} has a negative weight")
    if mix and sum(mix.get(name, 1.0) for name in INSTRUCTIONS) <= 0:
        raise ValueError("instruction_mix: at least one instruction needs a positive weight")
    return mix


def build_models(seed: int = 0):
    """Fresh ``(vae, unet, text_encoder, tokenizer)`` of the mini architecture, seeded."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer(MAX_TOKENS)
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 64), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, norm_num_groups=8,
        sample_size=64,
    )
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=8, out_channels=4, layers_per_block=1, block_out_channels=(32, 64, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_WIDTH, attention_head_dim=4, norm_num_groups=16,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer.get_vocab()), hidden_size=TEXT_WIDTH, intermediate_size=2 * TEXT_WIDTH,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=TEXT_WIDTH,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    return vae, unet, text_encoder, tokenizer


class PairSource:
    """Training pairs made on the fly: crops of procedural images, an instruction, its target.

    A pool of full images (with their pencil-sketch targets, which depend on the whole image) is kept and refreshed
    a few images per batch, so every image is new after ``pool_size / refresh`` batches.
    """

    def __init__(self, rng: np.random.Generator, pool_size: int, crop: int, refresh: int,
                 families: tuple[str, ...] = TRAIN_FAMILIES, mix: dict[str, float] | None = None):
        self.rng, self.crop, self.refresh, self.families = rng, crop, refresh, families
        self.names = list(INSTRUCTIONS)
        weights = np.array([(mix or {}).get(name, 1.0) for name in self.names])
        self.draw_weights = weights / weights.sum()
        self.pool = [self._new_entry() for _ in range(pool_size)]

    def _new_entry(self) -> tuple[np.ndarray, np.ndarray]:
        """A random-size image of a random family and its sketch target, float32 ``[H, W, 3]``."""
        width = int(self.rng.integers(max(self.crop, 96), MAX_IMAGE_SIDE + 1))
        height = int(np.clip(round(width * self.rng.uniform(0.6, 1.0)), self.crop, MAX_IMAGE_SIDE))
        image = make_image(self.families[self.rng.integers(len(self.families))], self.rng, width, height)
        return image.astype(np.float32), INSTRUCTIONS["sketch"].apply(image, None).astype(np.float32)

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """``(sources, targets, prompts)``: ``[B, crop, crop, 3]`` float32 in [0, 1] twice, and B prompts."""
        for _ in range(self.refresh):
            self.pool[self.rng.integers(len(self.pool))] = self._new_entry()
        sources, targets, prompts = [], [], []
        for _ in range(size):
            image, sketch = self.pool[self.rng.integers(len(self.pool))]
            y = self.rng.integers(image.shape[0] - self.crop + 1)
            x = self.rng.integers(image.shape[1] - self.crop + 1)
            crop = image[y:y + self.crop, x:x + self.crop]
            instruction = INSTRUCTIONS[self.names[self.rng.choice(len(self.names), p=self.draw_weights)]]
            if instruction.name == "sketch":
                target = sketch[y:y + self.crop, x:x + self.crop]
            else:
                target = instruction.apply(crop, self.rng).astype(np.float32)
            if self.rng.random() < 0.5:
                crop, target = crop[:, ::-1], target[:, ::-1]
            sources.append(crop)
            targets.append(target)
            prompts.append(instruction.prompts[self.rng.integers(len(instruction.prompts))])
        return np.stack(sources), np.stack(targets), prompts


class Progress:
    """Learning-rate factor and stop test from progress = max(steps done / steps, time used / time budget).

    Linear warm-up over the first 3%, then cosine decay to zero: a run slowed down by a busy machine still ends with
    an annealed model inside its time budget instead of being cut off at a high learning rate.
    """

    def __init__(self, steps: int, seconds: float):
        self.steps, self.seconds, self.start = steps, seconds, time.monotonic()

    def fraction(self, step: int) -> float:
        return max(step / self.steps, (time.monotonic() - self.start) / self.seconds)

    def lr_factor(self, step: int) -> float:
        p = min(self.fraction(step), 1.0)
        return min(1.0, p / 0.03) * 0.5 * (1 + math.cos(math.pi * p))

    def done(self, step: int) -> bool:
        return self.fraction(step) >= 1.0


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def to_nchw(images: np.ndarray) -> torch.Tensor:
    """``[B, H, W, 3]`` in [0, 1] -> ``[B, 3, H, W]`` in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2) * 2 - 1


def train_vae(vae, pairs: PairSource, settings: MiniTrainSettings, seconds: float) -> dict:
    """Stage 1: the autoencoder reconstructs source and edited crops from the posterior mode (L1 + MSE, a tiny KL
    term)."""
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.vae_lr, weight_decay=0.0)
    progress = Progress(settings.vae_steps, seconds)
    vae.train()
    step, recent = 0, []
    while not progress.done(step):
        set_lr(optimizer, settings.vae_lr * progress.lr_factor(step))
        step += 1
        sources, targets, _ = pairs.batch(settings.vae_batch // 2)
        images = to_nchw(np.concatenate([sources, targets]))
        posterior = vae.encode(images).latent_dist
        # the editor encodes with the posterior mode, so the decoder learns from the mode too (sampling with a tiny
        # KL weight spends most of a short run shrinking the posterior's variance)
        recon = vae.decode(posterior.mode()).sample
        loss = F.l1_loss(recon, images) + F.mse_loss(recon, images) + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        recent.append(F.mse_loss(recon.detach(), images).item())
        if step % 100 == 0:
            mse = float(np.mean(recent[-100:]))
            log.info("vae step %d/%d: reconstruction PSNR %.2f dB", step, settings.vae_steps,
                     10 * math.log10(4 / max(mse, 1e-12)))
    vae.eval()
    mse = float(np.mean(recent[-100:]))
    return {"vae_steps_done": step, "vae_train_psnr": round(10 * math.log10(4 / max(mse, 1e-12)), 2)}


@torch.no_grad()
def latent_scale(vae, pairs: PairSource, batches: int = 8, size: int = 16) -> float:
    """``1 / std`` of the latents' posterior mode over a few batches: the VAE's ``scaling_factor``."""
    latents = [vae.encode(to_nchw(np.concatenate(pairs.batch(size)[:2]))).latent_dist.mode() for _ in range(batches)]
    return float(1.0 / torch.cat(latents).std())


def train_unet(vae, unet, text_encoder, tokenizer, pairs: PairSource, settings: MiniTrainSettings,
               seconds: float, rng: np.random.Generator):
    """Stage 2: UNet and text encoder with IP2P's conditioning dropout; returns the EMA UNet and text encoder.

    The UNet predicts ``settings.prediction_type``: "v_prediction" (as Stable Diffusion 2 does) by default. With
    epsilon prediction the clean image a sampler sees at high noise is ``(x_t - sqrt(1 - a) eps) / sqrt(a)``, so an
    error in eps is magnified ``1 / sqrt(snr)`` times (about 15x at t = 999 on this schedule): global colour, which is
    what these instructions change, is decided there and needs a far longer training than a CPU hour gives. v is
    well conditioned at every level. The schedule, DDIM sampling and inversion are unchanged (the diffusers
    schedulers read ``prediction_type`` from the saved config).
    """
    from diffusers import DDPMScheduler

    noise_schedule = DDPMScheduler(**SD_SCHEDULE, prediction_type=settings.prediction_type)
    alphas = noise_schedule.alphas_cumprod
    snr = alphas / (1 - alphas)
    scale = vae.config.scaling_factor
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=settings.unet_lr, weight_decay=1e-2)
    progress = Progress(settings.unet_steps, seconds)
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    ema_text = copy.deepcopy(text_encoder).eval().requires_grad_(False)
    unet.train()
    text_encoder.train()
    step, recent = 0, []
    while not progress.done(step):
        set_lr(optimizer, settings.unet_lr * progress.lr_factor(step))
        step += 1
        # 1. a batch of pairs and its latents (the VAE is frozen)
        sources, targets, prompts = pairs.batch(settings.unet_batch)
        B = len(prompts)
        with torch.no_grad():
            clean = vae.encode(to_nchw(targets)).latent_dist.mode() * scale
            cond = vae.encode(to_nchw(sources)).latent_dist.mode()  # unscaled, as IP2P conditions
        # 2. conditioning dropout: text alone, image alone, both
        draw = rng.random(B)
        drop_text = (draw < settings.drop_prob) | ((draw >= 2 * settings.drop_prob) & (draw < 3 * settings.drop_prob))
        drop_image = (draw >= settings.drop_prob) & (draw < 3 * settings.drop_prob)
        prompts = ["" if d else p for p, d in zip(prompts, drop_text)]
        cond = cond * torch.from_numpy(~drop_image).float()[:, None, None, None]
        ids = tokenizer(prompts, padding="max_length", max_length=MAX_TOKENS, truncation=True,
                        return_tensors="pt").input_ids
        text = text_encoder(ids)[0]
        # 3. noise at a random level; min-SNR-weighted loss
        t = torch.from_numpy(rng.integers(0, SD_SCHEDULE["num_train_timesteps"], B)).long()
        noise = torch.randn_like(clean)
        noisy = noise_schedule.add_noise(clean, noise, t)
        pred = unet(torch.cat([noisy, cond], 1), t, encoder_hidden_states=text, return_dict=False)[0]
        # min-SNR-gamma weighting, expressed for the prediction target
        if settings.prediction_type == "v_prediction":
            target = noise_schedule.get_velocity(clean, noise, t)
            weight = (snr[t].clamp(max=settings.min_snr_gamma) / (snr[t] + 1)).float()
        else:
            target = noise
            weight = (snr[t].clamp(max=settings.min_snr_gamma) / snr[t]).float()
        loss = (weight * F.mse_loss(pred, target, reduction="none").mean((1, 2, 3))).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        # 4. exponential moving average of the weights (what is saved)
        decay = min(settings.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for model, average in ((unet, ema), (text_encoder, ema_text)):
                for p, q in zip(model.parameters(), average.parameters()):
                    q.lerp_(p, 1 - decay)
        recent.append(loss.item())
        if step % 100 == 0:
            log.info("unet step %d/%d: loss %.4f (lr %.2e, %.0f%% of the budget)", step, settings.unet_steps,
                     np.mean(recent[-100:]), optimizer.param_groups[0]["lr"], 100 * progress.fraction(step))
    return ema, ema_text, {"unet_steps_done": step, "unet_final_loss": round(float(np.mean(recent[-200:])), 5)}


def save_pipeline(out_dir: Path, vae, unet, text_encoder, tokenizer, prediction_type: str = "epsilon") -> None:
    """Write the diffusers pipeline folder (safetensors) and the instruction list into ``out_dir``."""
    from diffusers import DDIMScheduler, StableDiffusionInstructPix2PixPipeline

    scheduler = DDIMScheduler(**SD_SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                              prediction_type=prediction_type)
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / INSTRUCTIONS_FILE).write_text(json.dumps(
        {name: {"prompts": list(i.prompts), "deterministic": i.deterministic} for name, i in INSTRUCTIONS.items()},
        indent=2) + "\n")


def check_earlier_runs(settings: MiniTrainSettings) -> None:
    """Raise ValueError, naming the file, when ``unet_from`` / ``vae_from`` is not a mini model folder this run can
    continue (a missing part, or a UNet trained for another prediction type)."""
    for option, folder in (("unet_from", settings.unet_from), ("vae_from", settings.vae_from)):
        if not folder:
            continue
        parts = ("vae", "unet", "text_encoder", "tokenizer", "scheduler") if option == "unet_from" else ("vae",)
        for part in parts:
            if not (Path(folder) / part).is_dir():
                raise ValueError(f"--{option} {folder}: {Path(folder) / part} is missing; give a folder written by "
                                 "tools/train_mini_ip2p.py")
    if settings.unet_from:
        scheduler_file = Path(settings.unet_from) / "scheduler" / "scheduler_config.json"
        if not scheduler_file.is_file():
            raise ValueError(f"--unet_from {settings.unet_from}: {scheduler_file} is missing; give a folder written by "
                             "tools/train_mini_ip2p.py")
        earlier_type = json.loads(scheduler_file.read_text()).get("prediction_type", "epsilon")
        if earlier_type != settings.prediction_type:
            raise ValueError(f"--unet_from {settings.unet_from} predicts {earlier_type} ({scheduler_file}); continue "
                             f"it with --prediction_type {earlier_type}")


def check_training(settings: MiniTrainSettings, out_dir: str | Path) -> None:
    """Raise ValueError, naming the option, for settings the training cannot run with or an output folder it must
    not replace (checked before the hour of training, not after)."""
    if min(settings.vae_steps, settings.unet_steps, settings.crop, settings.vae_batch, settings.unet_batch) < 1:
        raise ValueError("--vae_steps, --unet_steps, --crop, --vae_batch and --unet_batch must be positive")
    if settings.prediction_type not in ("v_prediction", "epsilon"):
        raise ValueError(f"--prediction_type {settings.prediction_type}: must be v_prediction or epsilon")
    if settings.crop % 4:
        raise ValueError(f"--crop {settings.crop}: must be a multiple of 4 (the autoencoder's downsampling)")
    if settings.vae_batch < 2:
        raise ValueError(f"--vae_batch {settings.vae_batch}: must be at least 2 (half sources, half targets)")
    if not 4 <= settings.crop <= MAX_IMAGE_SIDE:
        raise ValueError(f"--crop {settings.crop}: must be 4 to {MAX_IMAGE_SIDE} (the procedural images' largest side)")
    if not settings.minutes > 0:
        raise ValueError(f"--minutes {settings.minutes}: must be positive (the wall-clock budget)")
    if not 0 < settings.vae_share < 1:
        raise ValueError(f"--vae_share {settings.vae_share}: must be between 0 and 1 (the autoencoder's share of "
                         "--minutes; the UNet gets the rest)")
    out_dir = Path(out_dir).resolve()
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "training.json").is_file():
        raise ValueError(f"{out_dir} holds files and is not a mini model folder (no training.json): it would be "
                         "replaced; pass a new folder (e.g. weights/mini-ip2p-2)")
    check_earlier_runs(settings)


def train_mini_ip2p(out_dir: str | Path, settings: MiniTrainSettings) -> dict:
    """Train the mini InstructPix2Pix and write it to ``out_dir`` (replaced only once training has finished).

    Returns:
        The training record (settings, steps done, times, training figures), also written to ``training.json``.
    """
    out_dir = Path(out_dir).resolve()
    check_training(settings, out_dir)  # before anything is built
    if settings.threads:
        torch.set_num_threads(settings.threads)
    start = time.monotonic()
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    vae, unet, text_encoder, tokenizer = build_models(settings.seed)
    pairs = PairSource(rng, settings.pool_size, settings.crop, settings.refresh_per_step,
                       mix=parse_instruction_mix(settings.instruction_mix))
    log.info("image pool ready (%d images) in %.0f s", settings.pool_size, time.monotonic() - start)

    # 1. the autoencoder, then its latent scale (or an earlier run's, with its record)
    earlier_run = settings.unet_from or settings.vae_from
    if settings.unet_from:
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel

        unet = UNet2DConditionModel.from_pretrained(Path(settings.unet_from) / "unet")
        text_encoder = CLIPTextModel.from_pretrained(Path(settings.unet_from) / "text_encoder")
        log.info("UNet and text encoder continued from %s", settings.unet_from)
    if earlier_run:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(Path(earlier_run) / "vae")
        earlier = Path(earlier_run) / "training.json"
        record = {k: v for k, v in json.loads(earlier.read_text()).items() if k.startswith("vae")} \
            if earlier.is_file() else {}
        record["vae_from"] = str(earlier_run)
        if settings.unet_from and earlier.is_file():  # the chain of runs stays on record
            record["continued_from"] = json.loads(earlier.read_text())
        log.info("autoencoder reused from %s", earlier_run)
    else:
        record = train_vae(vae, pairs, settings, 60.0 * settings.minutes * settings.vae_share)
        vae.register_to_config(scaling_factor=latent_scale(vae, pairs))
        record["vae_seconds"] = round(time.monotonic() - start)
    vae.eval().requires_grad_(False)
    log.info("vae done: scaling factor %.4f", vae.config.scaling_factor)

    # 2. UNet and text encoder
    unet_start = time.monotonic()
    remaining = 60.0 * settings.minutes - (unet_start - start)
    unet, text_encoder, unet_record = train_unet(vae, unet, text_encoder, tokenizer, pairs, settings, remaining, rng)
    record |= unet_record
    record["unet_seconds"] = round(time.monotonic() - unet_start)
    record["total_minutes"] = round((time.monotonic() - start) / 60, 1)
    record["settings"] = asdict(settings)
    record["prompts"] = all_prompts()

    # 3. write next to the destination, then swap it in
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_pipeline(staging, vae, unet, text_encoder, tokenizer, settings.prediction_type)
    (staging / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    if out_dir.exists():
        card = out_dir / "README.md"
        if card.exists():  # keep a hand-written card; the bench refreshes its figures
            shutil.copy2(card, staging / "README.md")
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    log.info("mini InstructPix2Pix written to %s", out_dir)
    return record
