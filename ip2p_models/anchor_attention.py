"""Anchor-aware self-attention: a diffusers attention processor for the UNet's ``attn1`` layers.

A UNet batch holds whole *sequences* of ``num_frames`` consecutive items each. In every self-attention layer the
queries of frame *i* attend to the keys/values of ``[anchor frame, frame i]``, the anchor being the sequence's first
frame; the anchor itself therefore sees only itself (plain self-attention). Cross-attention (``attn2``, to the text)
keeps the stock processor.

Frame grouping under classifier-free guidance: InstructPix2Pix runs three branches (text+image, image-only,
unconditional) in one batch laid out ``[branch, sequence, frame]``, i.e. the batch index is
``(branch * n_sequences + sequence) * num_frames + frame``. Reshaping the batch to ``[-1, num_frames]`` therefore
makes every (branch, sequence) pair its own group with its own anchor, and branches never see each other's frames.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch import Tensor


def batch_to_frames(x: Tensor, num_frames: int) -> Tensor:
    """``[batch·frames, tokens, ch] -> [batch, frames, tokens, ch]`` (frames of one sequence are contiguous)."""
    if x.shape[0] % num_frames != 0:
        raise ValueError(f"anchor attention: batch of {x.shape[0]} is not a whole number of sequences of "
                         f"num_frames={num_frames}; set the processor's num_frames to the frames per sequence")
    return x.reshape(x.shape[0] // num_frames, num_frames, *x.shape[1:])


def anchor_context(x: Tensor, num_frames: int) -> Tensor:
    """Keys or values ``[batch·frames, tokens, ch]`` -> ``[batch·frames, 2·tokens, ch]``: [anchor frame, own frame]."""
    frames = batch_to_frames(x, num_frames)
    anchor = frames[:, :1].expand_as(frames)
    return torch.cat([anchor, frames], dim=2).flatten(0, 1)


class AnchorAttnProcessor:
    """Self-attention where frame *i* of each sequence attends to ``[frame 0, frame i]`` (diffusers processor).

    Install it on self-attention layers only (:func:`install_anchor_attention` does); one instance is shared by all
    of them, and the caller sets :attr:`num_frames` (frames per sequence) before each UNet call, e.g. with
    ``with processor.frames(F): unet(...)``. With ``num_frames == 1`` it is exactly the stock ``AttnProcessor2_0``.

    Args:
        num_frames: frames per sequence in the batch; 1 makes every batch item its own sequence.
        slice_size: attention is computed for at most this many batch items at a time (bounds memory on small
            GPUs and on CPU); None computes the whole batch at once.
    """

    def __init__(self, num_frames: int = 1, slice_size: int | None = None):
        self.num_frames = num_frames
        self.slice_size = slice_size
        self.replaced: dict[str, object] = {}  # processors this one replaced, restored by remove_anchor_attention

    @contextlib.contextmanager
    def frames(self, num_frames: int) -> Iterator[AnchorAttnProcessor]:
        """Temporarily set the number of frames per sequence."""
        previous, self.num_frames = self.num_frames, num_frames
        try:
            yield self
        finally:
            self.num_frames = previous

    def __call__(self, attn: Attention, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None, *args, **kwargs) -> Tensor:
        """``hidden_states [batch·frames, tokens, ch]`` (or ``[batch·frames, ch, h, w]``) -> same shape."""
        if encoder_hidden_states is not None:
            raise ValueError("AnchorAttnProcessor is for self-attention (attn1) layers only; it got "
                             "encoder_hidden_states, so it was installed on a cross-attention layer")
        if attention_mask is not None:
            raise ValueError("AnchorAttnProcessor does not support an attention_mask")

        # 1. project, as the stock processor does
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        batch = hidden_states.shape[0]
        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)

        # 2. keys/values of [anchor, own frame] for every frame
        if self.num_frames > 1:
            key = anchor_context(key, self.num_frames)
            value = anchor_context(value, self.num_frames)

        # 3. attention, per head, optionally a few batch items at a time
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (t.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        step = self.slice_size or batch
        hidden_states = torch.cat([
            F.scaled_dot_product_attention(query[i:i + step], key[i:i + step], value[i:i + step], scale=attn.scale)
            for i in range(0, batch, step)
        ])
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)

        # 4. output projection, residual and rescale, as the stock processor does
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def is_self_attention(name: str) -> bool:
    """Whether an entry of ``unet.attn_processors`` is a transformer block's self-attention (``...attn1.processor``)."""
    return name.endswith("attn1.processor")


def install_anchor_attention(unet, processor: AnchorAttnProcessor | None = None) -> AnchorAttnProcessor:
    """Put ``processor`` (a new one when None) on every ``attn1`` layer of ``unet``; other layers keep theirs.

    Args:
        unet: a diffusers ``UNet2DConditionModel`` (anything with ``attn_processors``/``set_attn_processor``).
        processor: the processor to share across the self-attention layers.

    Returns:
        The installed processor; set its ``num_frames`` before calling the UNet.
    """
    processor = processor or AnchorAttnProcessor()
    current = unet.attn_processors
    if any(isinstance(p, AnchorAttnProcessor) for p in current.values()):
        raise RuntimeError("anchor attention is already installed on this UNet; call remove_anchor_attention first")
    if not any(is_self_attention(name) for name in current):
        raise ValueError("this UNet has no self-attention (attn1) layers to make anchor-aware")
    processor.replaced = {name: p for name, p in current.items() if is_self_attention(name)}
    unet.set_attn_processor({name: processor if is_self_attention(name) else p for name, p in current.items()})
    return processor


def remove_anchor_attention(unet) -> None:
    """Give every layer that holds an :class:`AnchorAttnProcessor` back the processor it had before installing."""
    current = unet.attn_processors
    restored = {}
    for name, p in current.items():
        restored[name] = p.replaced.get(name, p) if isinstance(p, AnchorAttnProcessor) else p
    unet.set_attn_processor(restored)


def find_anchor_processor(unet) -> AnchorAttnProcessor | None:
    """The anchor processor installed on ``unet``, or None."""
    return next((p for p in unet.attn_processors.values() if isinstance(p, AnchorAttnProcessor)), None)
