"""Flow-guided sliding window: edit a long frame sequence window by window, consistently over time.

Windows hold ``sequence_length`` frames and share ``overlap_length`` frames with the previous one. The first window
is edited fully (from noise). In every later window the frames not edited yet are first filled by warping the last
edited frame with flow computed on the *original* frames (where the forward-backward check fails they keep their
current content), then the whole window is refined by the sequence editor from noise level ``T`` with a few steps,
with the window's first (already edited) frame as the anchor. Already edited frames keep their edit.

An editor is any object with the anchor-aware IP2P call (see :class:`SequenceEditor`); frames are float
``[F, 3, H, W]`` in [0, 1].
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor
from tqdm import tqdm

from .warp import FlowFn, fill_from_warp, propagate_by_flow

log = logging.getLogger(__name__)


class SequenceEditor(Protocol):
    """What the sliding window needs from an editor (``ip2p_models.IP2PEditor`` has it)."""

    def edit_sequence(self, images: Tensor, images_cond: Tensor, prompt: str, *, guidance_scale: float = 10.5,
                      image_guidance_scale: float = 1.5, diffusion_steps: int = 20, T: int = 1000,
                      init: str = "noise", seed: int | None = None, **kwargs) -> Tensor:
        """Edit ``images [F, 3, H, W]`` (``images[0]`` is the anchor) conditioned on ``images_cond``."""
        ...


@dataclass
class Window:
    """One step of the sliding window, handed to ``on_window`` callbacks (e.g. to write previews or a store).

    Attributes:
        index: window number, 0 for the first.
        frames: frame indices ``[n]`` of the window.
        new: how many of them (at the end) were not edited before this window.
        filled: ``[n, 3, H, W]`` the editor's input (warped fills for the new frames), or None for a full edit.
        masks: bool ``[new, H, W]`` where the warp was reliable, or None for a full edit.
        edited: ``[n, 3, H, W]`` the window after editing (overlap frames keep their earlier edit).
    """

    index: int
    frames: list[int]
    new: int
    filled: Tensor | None
    masks: Tensor | None
    edited: Tensor


def window_ranges(num_frames: int, sequence_length: int, overlap_length: int, done: int = 0) -> list[range]:
    """Frame ranges of the windows; ``done`` frames at the start are edited already.

    Windows start at ``done - overlap_length`` (or 0) and advance by ``sequence_length - overlap_length``; the last
    one may be shorter.
    """
    if sequence_length < 1 or not 0 <= overlap_length < sequence_length:
        raise ValueError(f"sliding window: need sequence_length >= 1 and 0 <= overlap_length < sequence_length, got "
                         f"sequence_length={sequence_length}, overlap_length={overlap_length}")
    ranges = []
    start = 0 if done == 0 else max(done - overlap_length, 0)
    while done < num_frames:
        stop = min(start + sequence_length, num_frames)
        ranges.append(range(start, stop))
        done = stop
        start = stop - overlap_length
    return ranges


def sliding_window_edit(editor: SequenceEditor, originals: Tensor, prompt: str, flow: FlowFn, *,
                        sequence_length: int = 5, overlap_length: int = 1, current: Tensor | None = None,
                        anchor: Tensor | None = None, guidance_scale: float = 10.5, image_guidance_scale: float = 1.5,
                        diffusion_steps: int = 20, painting_diffusion_steps: int = 5,
                        painting_num_train_timesteps: int = 600, photometric_threshold: float | None = 0.05,
                        seed: int | None = None, on_window: Callable[[Window], None] | None = None) -> Tensor:
    """Edit a frame sequence with the flow-guided sliding window.

    Args:
        editor: object with ``edit_sequence`` (see :class:`SequenceEditor`).
        originals: ``[F, 3, H, W]`` unedited frames in [0, 1]; the editor's condition and the flow's input.
        prompt: the instruction.
        flow: flow estimator ``flow(src, dst) -> [H, W, 2]`` (:func:`ip2p_models.flow.make_flow`).
        sequence_length: frames per window.
        overlap_length: frames shared by consecutive windows.
        current: ``[F, 3, H, W]`` what a frame keeps where the warp is unreliable (default: ``originals``).
        anchor: ``[3, H, W]`` an already edited frame 0; then no window is edited from noise.
        guidance_scale, image_guidance_scale: classifier-free guidance weights.
        diffusion_steps: steps of the first, full edit.
        painting_diffusion_steps: steps of each refinement.
        painting_num_train_timesteps: noise level ``T`` (of 1000) the refinements start from.
        photometric_threshold: see :func:`ip2p_models.warp.propagate_by_flow` (None: forward-backward check only).
        seed: base seed; window ``k`` uses ``seed + k``.
        on_window: called with a :class:`Window` after each window.

    Returns:
        ``[F, 3, H, W]`` edited frames in [0, 1], on the device and dtype of ``originals``.
    """
    num_frames = originals.shape[0]
    current = originals if current is None else current
    if current.shape != originals.shape:
        raise ValueError(f"sliding window: current {tuple(current.shape)} must match originals "
                         f"{tuple(originals.shape)}")
    edited = originals.clone()
    done = 0
    if anchor is not None:
        edited[0] = anchor.to(edited)
        done = 1
    ranges = window_ranges(num_frames, sequence_length, overlap_length, done)
    for index, frames in enumerate(tqdm(ranges, desc="sliding window", disable=len(ranges) < 2)):
        window_seed = None if seed is None else seed + index
        cond = originals[frames.start:frames.stop]
        new = frames.stop - max(done, frames.start)
        if done == 0:
            # 1. first window: full edit from noise
            out = editor.edit_sequence(cond.clone(), cond, prompt, guidance_scale=guidance_scale,
                                       image_guidance_scale=image_guidance_scale, diffusion_steps=diffusion_steps,
                                       T=1000, init="noise", seed=window_seed)
            edited[frames.start:frames.stop] = out.to(edited)
            filled = masks = None
        else:
            # 2. fill the new frames by warping the last edited frame (flow on the original frames)
            last = done - 1
            filled = edited[frames.start:frames.stop].clone()
            masks = []
            for k in range(frames.stop - new, frames.stop):
                warped, mask = propagate_by_flow(edited[last], originals[last], originals[k], flow,
                                                 photometric_threshold=photometric_threshold)
                filled[k - frames.start] = fill_from_warp(current[k], warped, mask)
                masks.append(mask)
            masks = torch.stack(masks)
            # 3. refine the window from noise level T, its first (edited) frame as the anchor
            out = editor.edit_sequence(filled, cond, prompt, guidance_scale=guidance_scale,
                                       image_guidance_scale=image_guidance_scale,
                                       diffusion_steps=painting_diffusion_steps, T=painting_num_train_timesteps,
                                       init="noisy_latent", seed=window_seed)
            edited[frames.stop - new:frames.stop] = out[len(frames) - new:].to(edited)
            log.debug("window %d: frames %d-%d, warp reliable on %.1f%% of new pixels", index, frames.start,
                      frames.stop - 1, 100 * masks.float().mean())
        done = frames.stop
        if on_window is not None:
            on_window(Window(index, list(frames), new, filled, masks, edited[frames.start:frames.stop].clone()))
    return edited
