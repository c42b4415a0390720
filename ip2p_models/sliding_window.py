"""Flow-guided sliding window: edit a long frame sequence window by window, consistently over time.

One routine, used by ``stream_edit.py`` (through the image store) and by the ``test_flow_sequence.py`` demo
(through tensors). A *window* is a list of frames edited together and the *new* frames among them (at its end):

- a full window (the first, when nothing is edited yet) is edited from noise;
- otherwise each new frame is first filled by warping its predecessor's edit, frame to frame, with flow computed
  on the *original* frames (where the forward-backward and photometric checks fail the frame keeps its current
  content), then the whole window is refined by the sequence editor from noise level ``refine_num_steps`` with
  ``refine_diffusion_steps`` steps, its first (already edited) frame as the anchor. Frames before the new ones
  keep their edit.

Chaining the warp frame to frame was measured against warping every new frame straight from the last edited frame
(``benchmarks/bench_sliding_window.py``, synthetic scene, the mini IP2P's "make it snowy"): temporal warp error
0.0530 against 0.0531, the same within the seeds' spread. The chained fill is kept: it is what ``stream_edit.py``
always ran (its resumable units and previews stay as they were), and its short-range flow needs no long jumps.

:func:`plan_windows` lays out the windows of both editing schedules: overlapping windows (the paper's sliding
window) or windows that all start with one anchor frame (the release's key-frame schedule).

An editor is any object with the anchor-aware IP2P call (see :class:`SequenceEditor`); frames are float
``[F, 3, H, W]`` in [0, 1]. The release's demo names the refinement options ``painting_num_train_timesteps`` and
``painting_diffusion_steps``; they are the same as ``refine_num_steps`` and ``refine_diffusion_steps``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor
from tqdm import tqdm

from .settings import RefineSettings
from .warp import FlowFn, fill_from_warp, propagate_by_flow

log = logging.getLogger(__name__)


class SequenceEditor(Protocol):
    """What the sliding window needs from an editor (``ip2p_models.IP2PEditor`` has it)."""

    def edit_sequence(self, images: Tensor, images_cond: Tensor, prompt: str, *,
                      guidance_scale: float = RefineSettings.guidance_scale,
                      image_guidance_scale: float = RefineSettings.image_guidance_scale,
                      diffusion_steps: int = RefineSettings.diffusion_steps, T: int = 1000,
                      init: str = "noise", seed: int | None = None, **kwargs) -> Tensor:
        """Edit ``images [F, 3, H, W]`` (``images[0]`` is the anchor) conditioned on ``images_cond``."""
        ...


class Frames(Protocol):
    """One camera's frames as the sliding window reads and writes them (float ``[n, 3, H, W]`` in [0, 1])."""

    def current(self, frames: Sequence[int]) -> Tensor:
        """What the frames hold now (edited frames, or what a new frame keeps where the warp is unreliable)."""
        ...

    def original(self, frames: Sequence[int]) -> Tensor:
        """The unedited frames: the editor's condition and the flow's input."""
        ...

    def write(self, frames: Sequence[int], images: Tensor) -> None:
        """Store the edit of ``frames``."""
        ...


class TensorFrames:
    """:class:`Frames` over tensors: ``originals [F, 3, H, W]`` and the frames being edited (``edited``)."""

    def __init__(self, originals: Tensor, current: Tensor | None = None):
        if current is not None and current.shape != originals.shape:
            raise ValueError(f"sliding window: current {tuple(current.shape)} must match originals "
                             f"{tuple(originals.shape)}")
        self.originals = originals
        self.edited = (originals if current is None else current).clone()

    def current(self, frames: Sequence[int]) -> Tensor:
        return self.edited[list(frames)]

    def original(self, frames: Sequence[int]) -> Tensor:
        return self.originals[list(frames)]

    def write(self, frames: Sequence[int], images: Tensor) -> None:
        self.edited[list(frames)] = images.to(self.edited)


@dataclass
class Window:
    """One edited window, handed to ``on_window`` callbacks (e.g. to write previews).

    Attributes:
        index: window number, 0 for the first.
        frames: frame indices of the window.
        new: the frames (at its end) that were not edited before this window.
        filled: ``[n, 3, H, W]`` the editor's input (warped fills for the new frames), or None for a full edit.
        masks: bool ``[len(new), H, W]`` where the warp was reliable, or None for a full edit.
        edited: ``[len(new), 3, H, W]`` the new frames after editing.
    """

    index: int
    frames: list[int]
    new: list[int]
    filled: Tensor | None
    masks: Tensor | None
    edited: Tensor


def window_ranges(num_frames: int, sequence_length: int, overlap_length: int, done: int = 0) -> list[range]:
    """Frame ranges of overlapping windows; ``done`` frames at the start are edited already.

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


def plan_windows(num_frames: int, sequence_length: int, overlap_length: int = 1, *, anchored_on_first: bool = False,
                 full_first: bool = True) -> list[tuple[list[int], list[int]]]:
    """``(frames edited together, new frames)`` of every window, in order.

    Args:
        anchored_on_first: windows of ``sequence_length - 1`` new frames with frame 0 prepended as the anchor (the
            release's key-frame schedule); otherwise overlapping windows of ``sequence_length`` frames.
        full_first: the first window is edited from noise; otherwise frame 0 is edited already.
    """
    if anchored_on_first:
        if sequence_length < 2:
            raise ValueError(f"sliding window: an anchored window needs sequence_length >= 2, got {sequence_length}")
        out, start = [], 1
        if full_first:
            first = list(range(min(sequence_length, num_frames)))
            out.append((first, first))
            start = len(first)
        rest = list(range(start, num_frames))
        step = sequence_length - 1
        return out + [([0, *rest[i:i + step]], rest[i:i + step]) for i in range(0, len(rest), step)]
    if overlap_length < 1 < sequence_length:  # a window sharing no frame would be edited from noise on its own
        raise ValueError(f"sliding window: overlap_length must be at least 1 (consecutive windows share the frame "
                         f"that carries the edit on), got {overlap_length}")
    done = 0 if full_first else 1
    out = []
    for r in window_ranges(num_frames, sequence_length, overlap_length, done):
        frames = list(r)
        out.append((frames, [f for f in frames if f >= done]))
        done = frames[-1] + 1
    return out


def edit_window(editor: SequenceEditor, frames: Frames, window: Sequence[int], new: Sequence[int], prompt: str,
                flow: FlowFn, settings: RefineSettings, *, seed: int | None = None, index: int = 0,
                from_noise: bool = True) -> Window:
    """Edit one window (see the module docstring) and write its new frames; returns what was done.

    A window whose frames are all new is edited from noise, or with ``from_noise`` False refined as a whole from its
    current images at the refinement level (a later pass of the iterative dataset update, whose current images are
    the NeRF's renders of the last pass's edit: there is no edited frame to carry on, nothing is filled by flow).
    """
    window, new = list(window), list(new)
    cond = frames.original(window)
    if new == window:  # nothing edited in this pass yet: the whole window from noise, or refined as it is
        T = 1000 if from_noise else min(settings.refine_num_steps, 1000)
        out = editor.edit_sequence(frames.current(window), cond, prompt, guidance_scale=settings.guidance_scale,
                                   image_guidance_scale=settings.image_guidance_scale,
                                   diffusion_steps=settings.diffusion_steps if from_noise else
                                   settings.refine_diffusion_steps,
                                   T=T, init="noise" if T >= 1000 else "noisy_latent", seed=seed)
        out = out.float().cpu()
        frames.write(window, out)
        return Window(index, window, new, None, None, out)
    # 1. fill each new frame from its predecessor's fill or edit (flow on the originals), frame to frame
    previous = frames.current([new[0] - 1])[0]
    originals = frames.original([new[0] - 1, *new])
    kept = frames.current(new)
    filled, masks = [], []
    for i in range(len(new)):
        warped, mask = propagate_by_flow(previous, originals[i], originals[i + 1], flow,
                                         photometric_threshold=settings.photometric_threshold)
        previous = fill_from_warp(kept[i], warped, mask)
        filled.append(previous)
        masks.append(mask)
    # 2. refine the window from noise level T, its first (edited) frame as the anchor
    batch = torch.cat([frames.current(window[:len(window) - len(new)]), torch.stack(filled)])
    out = editor.edit_sequence(batch, cond, prompt, guidance_scale=settings.guidance_scale,
                               image_guidance_scale=settings.image_guidance_scale,
                               diffusion_steps=settings.refine_diffusion_steps,
                               T=min(settings.refine_num_steps, 1000),
                               init="noise" if settings.refine_num_steps >= 1000 else "noisy_latent", seed=seed)
    refined = out.float().cpu()[len(window) - len(new):]
    frames.write(new, refined)
    masks = torch.stack(masks)
    log.debug("window %d: frames %d-%d, warp reliable on %.1f%% of new pixels", index, window[0], window[-1],
              100 * masks.float().mean())
    return Window(index, window, new, batch, masks, refined)


def sliding_window_edit(editor: SequenceEditor, originals: Tensor, prompt: str, flow: FlowFn, *,
                        sequence_length: int = 6, overlap_length: int = 1, current: Tensor | None = None,
                        anchor: Tensor | None = None, settings: RefineSettings | None = None,
                        seed: int | None = None, on_window: Callable[[Window], None] | None = None) -> Tensor:
    """Edit a frame sequence (tensors) with the flow-guided sliding window.

    Args:
        editor: object with ``edit_sequence`` (see :class:`SequenceEditor`).
        originals: ``[F, 3, H, W]`` unedited frames in [0, 1]; the editor's condition and the flow's input.
        prompt: the instruction.
        flow: flow estimator ``flow(src, dst) -> [H, W, 2]`` (:func:`ip2p_models.flow.make_flow`).
        sequence_length: frames per window.
        overlap_length: frames shared by consecutive windows.
        current: ``[F, 3, H, W]`` what a frame keeps where the warp is unreliable (default: ``originals``).
        anchor: ``[3, H, W]`` an already edited frame 0; then no window is edited from noise.
        settings: guidance and refinement (default :class:`RefineSettings`).
        seed: base seed; window ``k`` uses ``seed + k``.
        on_window: called with a :class:`Window` after each window.

    Returns:
        ``[F, 3, H, W]`` edited frames in [0, 1].
    """
    settings = settings or RefineSettings()
    frames = TensorFrames(originals, current)
    if anchor is not None:
        frames.write([0], anchor[None])
    windows = plan_windows(originals.shape[0], sequence_length, overlap_length, full_first=anchor is None)
    for index, (window, new) in enumerate(tqdm(windows, desc="sliding window", disable=len(windows) < 2)):
        done = edit_window(editor, frames, window, new, prompt, flow, settings,
                           seed=None if seed is None else seed + index, index=index)
        if on_window is not None:
            on_window(done)
    return frames.edited.to(originals)
