"""Anchor-aware InstructPix2Pix: edit a sequence of frames consistently, with the anchor frame shared by all.

Conventions: images are float ``[F, 3, H, W]`` in [0, 1]; ``images[0]`` is the anchor. Latents of the images being
edited are the VAE posterior mode scaled by ``vae.config.scaling_factor``; the conditioning image latents are the
unscaled posterior mode, as InstructPix2Pix was trained. Noise levels ``T`` are out of the scheduler's 1000 training
steps.

The denoising loop is our own over the pipeline's public components (UNet, VAE, text encoder, tokenizer) and diffusers
DDIM schedulers; the UNet stays diffusers' own with :class:`AnchorAttnProcessor` on its self-attention layers.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from diffusers import DDIMInverseScheduler, DDIMScheduler
from torch import Tensor
from tqdm import tqdm

from .anchor_attention import find_anchor_processor, install_anchor_attention
from .settings import RefineSettings

log = logging.getLogger(__name__)

# the defaults of every edit (ip2p_models/settings.py)
GUIDANCE, IMAGE_GUIDANCE, STEPS = (RefineSettings.guidance_scale, RefineSettings.image_guidance_scale,
                                   RefineSettings.diffusion_steps)
INIT_MODES = ("noise", "noisy_latent", "ddim_inv")
BRANCHES = 3  # classifier-free guidance: text+image, image-only, unconditional


def chunk_frames(num_frames: int, sequence_length: int | None) -> list[list[int]]:
    """Frame indices of each UNet batch: every chunk starts with the anchor 0, and together they cover all frames.

    ``sequence_length`` None (or >= ``num_frames``) gives one chunk; 1 gives one chunk per frame with no anchor
    (per-frame editing); otherwise ``[0..L-1], [0, L..2L-2], ...``.
    """
    if sequence_length is not None and sequence_length < 1:
        raise ValueError(f"sequence_length must be >= 1 (or None for all frames at once), got {sequence_length}")
    if sequence_length is None or sequence_length >= num_frames:
        return [list(range(num_frames))]
    if sequence_length == 1:
        return [[i] for i in range(num_frames)]
    chunks = [list(range(sequence_length))]
    for start in range(sequence_length, num_frames, sequence_length - 1):
        chunks.append([0, *range(start, min(start + sequence_length - 1, num_frames))])
    return chunks


def size_for_vae(height: int, width: int, multiple: int) -> tuple[int, int]:
    """``(h, w)`` rounded down to ``multiple`` (at least ``multiple``): what the VAE and UNet accept."""
    return max(multiple, height // multiple * multiple), max(multiple, width // multiple * multiple)


class IP2PEditor:
    """InstructPix2Pix that edits frame sequences with anchor-aware self-attention.

    Build it with :func:`ip2p_models.load_ip2p`. ``unet_evals`` counts UNet evaluations (one per frame, branch and
    step; a 20-step full edit of F frames costs ``F * 3 * 20``), cumulatively, for benchmarks.

    Args:
        pipe: a ``StableDiffusionInstructPix2PixPipeline`` (its components are used; its scheduler config gives the
            noise schedule).
        device: where inputs go (the execution device; with model CPU offload the weights move there on demand).
        sequence_length: default number of frames per UNet batch (anchor included); None: all frames at once.
        attention_slice: compute self-attention for at most this many batch items at a time (None: all).
        progress: show a progress bar over denoising steps.
    """

    def __init__(self, pipe, device: str | torch.device = "cpu", *, sequence_length: int | None = None,
                 attention_slice: int | None = None, progress: bool = False):
        self.pipe = pipe
        self.unet = pipe.unet
        self.vae = pipe.vae
        self.text_encoder = pipe.text_encoder
        self.tokenizer = pipe.tokenizer
        self.device = torch.device(device)
        self.dtype = self.unet.dtype
        self.sequence_length = sequence_length
        self.progress = progress
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        # SD's noise schedule with DDIM sampling; IP2P checkpoints ship Euler ancestral, whose config lacks these two
        self.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False, set_alpha_to_one=False)
        self.processor = find_anchor_processor(self.unet) or install_anchor_attention(self.unet)
        self.processor.slice_size = attention_slice
        self.unet_evals = 0
        self.model_path: str | None = None  # the local folder it was loaded from (its instruction list is checked)
        self._prompt_cache: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ public API

    def edit_sequence(self, images: Tensor, images_cond: Tensor, prompt: str, *, guidance_scale: float = GUIDANCE,
                      image_guidance_scale: float = IMAGE_GUIDANCE, diffusion_steps: int = STEPS, T: int = 1000,
                      init: str = "noise", sequence_length: int | None = None, seed: int | None = None) -> Tensor:
        """Edit one frame sequence; ``images[0]`` is the anchor of every UNet batch.

        Args:
            images: ``[F, 3, H, W]`` in [0, 1], the current frames (the start point for ``noisy_latent``/``ddim_inv``).
            images_cond: ``[F, 3, H, W]`` in [0, 1], the original frames IP2P is conditioned on.
            prompt: the instruction.
            guidance_scale: text guidance weight.
            image_guidance_scale: image guidance weight.
            diffusion_steps: denoising steps.
            T: noise level out of 1000 to start from for ``noisy_latent`` and ``ddim_inv``; ignored for ``noise``.
            init: ``noise`` (full edit from pure noise), ``noisy_latent`` (``images`` noised to level T, SDEdit-style
                refinement) or ``ddim_inv`` (``images`` DDIM-inverted to level T).
            sequence_length: frames per UNet batch, anchor included (None: the editor's default). Frames beyond it
                are edited in further batches that repeat the anchor, so memory stays bounded; 1 edits every frame
                on its own (plain IP2P).
            seed: seed of the noise; the same seed gives the same edit. None draws from torch's global generator.

        Returns:
            ``[F, 3, H, W]`` float32 in [0, 1] on the device of ``images``.
        """
        self._check_images(images, images_cond, expected_dim=4)
        return self.edit_sequences(images[None], images_cond[None], prompt, guidance_scale=guidance_scale,
                                   image_guidance_scale=image_guidance_scale, diffusion_steps=diffusion_steps, T=T,
                                   init=init, sequence_length=sequence_length, seed=seed)[0]

    def edit_image(self, image: Tensor, image_cond: Tensor, prompt: str, *, guidance_scale: float = GUIDANCE,
                   image_guidance_scale: float = IMAGE_GUIDANCE, diffusion_steps: int = STEPS, T: int = 1000,
                   init: str = "noise", seed: int | None = None) -> Tensor:
        """Plain InstructPix2Pix on one image ``[3, H, W]`` in [0, 1] -> ``[3, H, W]`` (arguments of edit_sequence)."""
        self._check_images(image, image_cond, expected_dim=3)
        return self.edit_sequence(image[None], image_cond[None], prompt, guidance_scale=guidance_scale,
                                  image_guidance_scale=image_guidance_scale, diffusion_steps=diffusion_steps, T=T,
                                  init=init, sequence_length=1, seed=seed)[0]

    @torch.no_grad()
    def edit_sequences(self, images: Tensor, images_cond: Tensor, prompt: str, *, guidance_scale: float = GUIDANCE,
                       image_guidance_scale: float = IMAGE_GUIDANCE, diffusion_steps: int = STEPS, T: int = 1000,
                       init: str = "noise", sequence_length: int | None = None, seed: int | None = None) -> Tensor:
        """Edit S sequences of F frames at once, each with its own anchor (its frame 0) (batched :meth:`edit_sequence`).

        Args:
            images: ``[S, F, 3, H, W]`` in [0, 1].
            images_cond: ``[S, F, 3, H, W]`` in [0, 1].
            sequence_length: frames per sequence per UNet batch (a UNet batch holds ``S * sequence_length * 3``
                items); other arguments as in :meth:`edit_sequence`.

        Returns:
            ``[S, F, 3, H, W]`` float32 in [0, 1] on the device of ``images``.
        """
        self._check_images(images, images_cond, expected_dim=5)
        self._check_schedule(init, T, diffusion_steps)
        if find_anchor_processor(self.unet) is not self.processor:
            raise RuntimeError("the editor's anchor attention is no longer installed on its UNet; reinstall it with "
                               "ip2p_models.install_anchor_attention(editor.unet, editor.processor)")
        S, num_frames, _, H, W = images.shape
        h, w = size_for_vae(H, W, self.vae_scale_factor)
        latent_shape = (S, num_frames, self.unet.config.out_channels, h // self.vae_scale_factor,
                        w // self.vae_scale_factor)
        # 1. noise for every frame up front, on the CPU in float32, so chunking and the device do not change it
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        noise = torch.randn(latent_shape, generator=generator) if init != "ddim_inv" else None
        # 2. the instruction's and the empty prompt's embeddings, one per guidance branch
        embeds = torch.cat([self.encode_prompt(prompt), self.encode_prompt(""), self.encode_prompt("")])

        out = torch.empty(S, num_frames, 3, H, W, dtype=torch.float32, device=images.device)
        chunks = chunk_frames(num_frames, sequence_length if sequence_length is not None else self.sequence_length)
        for number, chunk in enumerate(chunks):
            index = torch.tensor(chunk, device=images.device)
            # 3. the frames of this chunk at a size the VAE accepts, and their latents
            current = self._prepare(images.index_select(1, index), (h, w))
            cond = self._prepare(images_cond.index_select(1, index), (h, w))
            cond_latents = self.encode_images(cond, scaled=False)
            chunk_noise = noise[:, chunk].flatten(0, 1) if noise is not None else None
            # 4. denoise the chunk as S sequences of len(chunk) frames
            latents = self._edit_latents(current, cond_latents, chunk_noise, embeds, num_frames=len(chunk),
                                         guidance_scale=guidance_scale, image_guidance_scale=image_guidance_scale,
                                         diffusion_steps=diffusion_steps, T=T, init=init,
                                         desc=f"IP2P batch {number + 1}/{len(chunks)}")
            # 5. decode (later chunks skip the repeated anchor: its edit comes from the first) at the input size
            keep = slice(1, None) if chunk[0] == 0 and chunk is not chunks[0] else slice(None)
            latents = latents.unflatten(0, (S, len(chunk)))[:, keep].flatten(0, 1)
            edited = self.decode_latents(latents).float()
            if (h, w) != (H, W):
                edited = F.interpolate(edited, size=(H, W), mode="bilinear", align_corners=False, antialias=True)
            out[:, chunk[keep]] = edited.clamp(0, 1).unflatten(0, (S, -1)).to(images.device)
        return out

    def encode_prompt(self, prompt: str) -> Tensor:
        """Text embeddings ``[1, tokens, width]`` of ``prompt`` (cached per prompt)."""
        if prompt not in self._prompt_cache:
            if prompt and self.model_path is not None:
                from .loading import warn_if_unknown_prompt

                warn_if_unknown_prompt(self.model_path, prompt)
            ids = self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids
            with torch.no_grad():
                self._prompt_cache[prompt] = self.text_encoder(ids.to(self.device))[0].to(self.dtype)
        return self._prompt_cache[prompt]

    def encode_images(self, images: Tensor, scaled: bool = True) -> Tensor:
        """VAE posterior mode of ``images [N, 3, h, w]`` in [0, 1] -> ``[N, 4, h/8, w/8]``.

        ``scaled`` multiplies by the VAE's scaling factor (latents to denoise); InstructPix2Pix's image condition is
        unscaled.
        """
        latents = self.vae.encode(images * 2 - 1).latent_dist.mode()
        if not scaled:
            return latents
        shift = self.vae.config.shift_factor or 0.0
        return (latents - shift) * self.vae.config.scaling_factor

    def decode_latents(self, latents: Tensor) -> Tensor:
        """Scaled latents ``[N, 4, h/8, w/8]`` -> images ``[N, 3, h, w]`` in [0, 1]."""
        shift = self.vae.config.shift_factor or 0.0
        images = self.vae.decode(latents / self.vae.config.scaling_factor + shift).sample
        return (images / 2 + 0.5).clamp(0, 1)

    # ------------------------------------------------------------------ denoising

    def _edit_latents(self, current: Tensor, cond_latents: Tensor, noise: Tensor | None, embeds: Tensor, *,
                      num_frames: int, guidance_scale: float, image_guidance_scale: float, diffusion_steps: int,
                      T: int, init: str, desc: str = "IP2P") -> Tensor:
        """Denoised latents ``[S·f, 4, h', w']`` of ``current [S·f, 3, h, w]`` (layout ``[sequence, frame]``)."""
        # 1. start latents and the schedule
        if init == "noise":
            scheduler = self.scheduler
            scheduler.set_timesteps(diffusion_steps, device=self.device)
            latents = noise.to(self.device, self.dtype) * scheduler.init_noise_sigma
        else:
            scheduler = self.level_scheduler(T)
            scheduler.set_timesteps(diffusion_steps, device=self.device)
            clean = self.encode_images(current)
            if init == "noisy_latent":
                latents = scheduler.add_noise(clean, noise.to(self.device, self.dtype), scheduler.timesteps[:1])
            else:
                latents = self.invert(clean, cond_latents, embeds[:1], num_frames=num_frames, T=T,
                                      diffusion_steps=diffusion_steps)
        # 2. image condition per branch: the original frames for text+image and image-only, none for unconditional
        image_cond = torch.cat([cond_latents, cond_latents, torch.zeros_like(cond_latents)])
        text = embeds.repeat_interleave(latents.shape[0], dim=0)
        # 3. DDIM steps with three-branch classifier-free guidance
        for t in tqdm(scheduler.timesteps, desc=desc, disable=not self.progress):
            model_in = scheduler.scale_model_input(torch.cat([latents] * BRANCHES), t)
            eps_text, eps_image, eps_uncond = self._unet(torch.cat([model_in, image_cond], dim=1), t, text,
                                                         num_frames).chunk(BRANCHES)
            eps = (eps_uncond + guidance_scale * (eps_text - eps_image)
                   + image_guidance_scale * (eps_image - eps_uncond))
            latents = scheduler.step(eps, t, latents).prev_sample
        return latents

    def invert(self, clean: Tensor, cond_latents: Tensor, embeds: Tensor, *, num_frames: int, T: int,
               diffusion_steps: int) -> Tensor:
        """DDIM inversion of scaled latents ``[S·f, 4, h', w']`` to noise level T, conditioned on text and image."""
        inverse = DDIMInverseScheduler.from_config(self.level_scheduler(T).config)
        inverse.set_timesteps(diffusion_steps, device=self.device)
        latents = clean
        text = embeds.expand(latents.shape[0], -1, -1)
        for t in inverse.timesteps:
            eps = self._unet(torch.cat([latents, cond_latents], dim=1), t, text, num_frames)
            latents = inverse.step(eps, t, latents).prev_sample
        return latents

    def level_scheduler(self, T: int) -> DDIMScheduler:
        """DDIM over the first ``T`` training steps of the noise schedule, steps evenly spaced from ``T - 1`` down.

        Same betas (the first T), so timestep t means the same noise level as in the full schedule; "trailing"
        spacing starts exactly at ``T - 1`` and ends at a clean image.
        """
        return DDIMScheduler.from_config(self.scheduler.config, num_train_timesteps=T,
                                         trained_betas=self.scheduler.betas[:T].tolist(), timestep_spacing="trailing")

    def _unet(self, model_in: Tensor, t: Tensor, text: Tensor, num_frames: int) -> Tensor:
        """Noise prediction for ``model_in [n, 8, h', w']``, n a multiple of ``num_frames``; counts evaluations."""
        self.unet_evals += model_in.shape[0]
        with self.processor.frames(num_frames):
            return self.unet(model_in, t, encoder_hidden_states=text, return_dict=False)[0]

    # ------------------------------------------------------------------ helpers

    def _prepare(self, images: Tensor, size: tuple[int, int]) -> Tensor:
        """``[S, f, 3, H, W]`` -> ``[S·f, 3, h, w]`` on the editor's device and dtype, resized when needed."""
        images = images.flatten(0, 1).to(self.device, torch.float32)
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        return images.clamp(0, 1).to(self.dtype)

    def _check_schedule(self, init: str, T: int, diffusion_steps: int) -> None:
        """Raise ValueError for an unknown ``init`` or inconsistent ``T`` / ``diffusion_steps``."""
        if init not in INIT_MODES:
            raise ValueError(f"init must be one of {', '.join(INIT_MODES)}, got {init!r}")
        total = self.scheduler.config.num_train_timesteps
        if init != "noise" and not 1 <= T <= total:
            raise ValueError(f"T (noise level) must be in 1..{total} for init={init!r}, got {T}")
        limit = total if init == "noise" else T
        if not 1 <= diffusion_steps <= limit:
            raise ValueError(f"diffusion_steps must be in 1..{limit} for init={init!r} and T={T}, "
                             f"got {diffusion_steps}")

    @staticmethod
    def _check_images(images: Tensor, images_cond: Tensor, expected_dim: int) -> None:
        """Raise ValueError unless both are ``[..., 3, H, W]`` of ``expected_dim`` dims and the same shape."""
        names = {3: "[3, H, W]", 4: "[F, 3, H, W]", 5: "[S, F, 3, H, W]"}[expected_dim]
        if images.dim() != expected_dim or images.shape[-3] != 3:
            raise ValueError(f"images must be {names} RGB in [0, 1], got shape {tuple(images.shape)}")
        if images_cond.shape != images.shape:
            raise ValueError(f"images_cond must have the shape of images {tuple(images.shape)}, "
                             f"got {tuple(images_cond.shape)}")
