"""The two editing schedules, built from the 2D primitives of ``ip2p_models`` (anchor-aware editing, flow and
depth warping). They run in an editor process and know nothing of IP2P: ``editor`` is any object with
``edit_sequence`` (see :class:`ip2p_models.sliding_window.SequenceEditor`).

Work is cut into *units* (a key-frame round, a batch of other views, one temporal window, one frame of the other
views), each named by a key such as ``pass0/keyframe/round03`` or ``pass0/time/cam02/frames001-005``. A unit reads
the image store, edits, writes its result under the lock, then reports its key as done; a unit already done (a
resumed edit) is skipped, its result being in the store already.

- ``keyframe`` (the release): :func:`edit_key_frame` then :func:`edit_through_time` for every camera, anchored on
  the camera's edited frame 0.
- ``keyview`` (the paper): :func:`edit_through_time` for the key cameras with the overlapping sliding window, then
  :func:`edit_other_views` frame by frame.
- baselines for ablations: ``perframe`` (:func:`edit_per_frame`, every image alone: Instruct-NeRF2NeRF in 4D) and
  ``anchor`` (:func:`edit_anchored`, anchor-aware batches per camera without flow or depth).

In pass 2 and later (``--edit_rounds``) the store holds the NeRF's renders, and every edit is a refinement of
them (no edit from pure noise), so the passes converge.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from common.settings import setting, settings_from_args
from ip2p_models.depth_warp import View, depth_warp, depth_warp_views
from ip2p_models.settings import RefineSettings
from ip2p_models.sliding_window import edit_window, plan_windows
from ip2p_models.warp import FlowFn, fill_from_warp, propagate_by_flow

from .store import ImageStore

log = logging.getLogger(__name__)

KEY_FRAME = 0
FINAL_STRENGTH = 0.8


@dataclass
class EditSettings(RefineSettings):
    """What the schedules need of the options (the release's names); ``editing/options.py`` builds the
    command-line options from these fields, guidance and refinement included (:class:`RefineSettings`)."""

    prompt: str = setting("", "the instruction, e.g. 'What if it was painted by Van Gogh?'")
    sequence_length: int = setting(6, "frames/views per anchor-aware IP2P batch (anchor included); lower it when "
                                      "the GPU runs out of memory")
    overlap_length: int = setting(1, "keyview: frames shared by consecutive windows of a key camera")
    keyframe_rounds: int = setting(12, "keyframe: editing rounds at the key frame")
    warp_ratio: float = setting(0.5, "keyframe: weight of the depth warp when blending edited views into the other "
                                     "cameras")
    restview_refine_num_steps: int = setting(700, "noise level (of 1000) of the other views' refinement")
    restview_refine_diffusion_steps: int = setting(6, "denoising steps of the other views' refinement")
    seed: int = setting(0, "seed of the editor's noise and camera subsets", option="edit_seed")
    ndc: bool = True  # from the fit's ndc_ray

    def refine_settings(self) -> RefineSettings:
        """What :func:`ip2p_models.sliding_window.edit_window` needs of these settings (they are one)."""
        return self

    @classmethod
    def from_args(cls, args) -> EditSettings:
        settings = settings_from_args(cls, args)
        settings.ndc = bool(args.ndc_ray)
        return settings


@dataclass
class Cameras:
    """Intrinsics ``K [C, 3, 3]`` and camera-to-world ``c2w [C, 4, 4]`` in the scene space depth is rendered in."""

    K: Tensor
    c2w: Tensor

    def view(self, cam: int, depth: Tensor, image: Tensor | None = None) -> View:
        return View(image, depth, self.K[cam], self.c2w[cam])


class Units:
    """Bookkeeping of finished units: ``is_done(key)``, ``done(key)`` (reports it), an optional preview hook."""

    def __init__(self, done: set[str] | None = None, report: Callable[[str], None] | None = None,
                 preview: Callable[[str, list[tuple[str, Tensor]]], None] | None = None,
                 stop: Callable[[], bool] | None = None):
        self.finished = set(done or ())
        self._report = report
        self._preview = preview
        self._stop = stop

    def is_done(self, key: str) -> bool:
        return key in self.finished

    def done(self, key: str, rows: list[tuple[str, Tensor]] | None = None) -> None:
        self.finished.add(key)
        if self._preview is not None and rows:
            self._preview(key, rows)
        if self._report is not None:
            self._report(key)

    def stopping(self) -> bool:
        return self._stop is not None and self._stop()


def cosine_strengths(rounds: int, final: float = FINAL_STRENGTH) -> list[float]:
    """Edit strength of each key-frame round: 1 (a full edit) annealed by cosine down to ``final``."""
    if rounds == 1:
        return [1.0]
    return [final + (1.0 - final) * 0.5 * (1 + math.cos(math.pi * r / (rounds - 1))) for r in range(rounds)]


def round_subset(num_cams: int, size: int, seed: int, pass_index: int, round_index: int) -> list[int]:
    """The cameras edited together in one key-frame round (deterministic per seed, pass and round)."""
    rng = random.Random(f"{seed}/{pass_index}/{round_index}")
    return sorted(rng.sample(range(num_cams), min(size, num_cams)))


def batches(items: Sequence[int], size: int) -> list[list[int]]:
    return [list(items[i:i + size]) for i in range(0, len(items), max(size, 1))]


def cams_label(cams: Sequence[int]) -> str:
    return "cams" + "-".join(f"{c:02d}" for c in cams)


def average_by_depth(images: Tensor, views: Sequence[View], ndc: bool) -> tuple[Tensor, Tensor]:
    """Make views of one moment agree: each pixel becomes the mean of its own value and of every other view's
    depth warp that reaches it.

    Args:
        images: ``[n, 3, H, W]`` edited views; views: their cameras and depths (images unused).

    Returns:
        ``[n, 3, H, W]`` averaged views and ``[n, H, W]`` how many views each pixel averaged.
    """
    out, counts = [], []
    for i, target in enumerate(views):
        total, count = images[i].clone(), torch.ones(images.shape[-2:])
        for j, source in enumerate(views):
            if j == i:
                continue
            warped, mask = depth_warp(target, View(images[j], source.depth, source.K, source.c2w), ndc=ndc)
            total += warped * mask[None]
            count += mask.float()
        out.append(total / count[None])
        counts.append(count)
    return torch.stack(out), torch.stack(counts)


def _edit(editor, images: Tensor, cond: Tensor, s: EditSettings, *, T: int, steps: int, seed: int) -> Tensor:
    init = "noise" if T >= 1000 else "noisy_latent"
    return editor.edit_sequence(images, cond, s.prompt, guidance_scale=s.guidance_scale,
                                image_guidance_scale=s.image_guidance_scale, diffusion_steps=steps,
                                T=min(T, 1000), init=init, seed=seed).float().cpu()


def _unit_seed(s: EditSettings, key: str) -> int:
    return random.Random(f"{s.seed}/{key}").randrange(2**31)


def keyframe_keys(num_cams: int, s: EditSettings, pass_index: int) -> list[str]:
    """Every unit key of :func:`edit_key_frame`, in order."""
    keys = [f"pass{pass_index}/keyframe/round{r:02d}" for r in range(s.keyframe_rounds)]
    last = round_subset(num_cams, s.sequence_length, s.seed, pass_index, s.keyframe_rounds - 1)
    rest = [c for c in range(num_cams) if c not in last]
    keys += [f"pass{pass_index}/keyframe/rest/{cams_label(b)}" for b in batches(rest, s.sequence_length - 1)]
    return keys


def edit_key_frame(editor, store: ImageStore, depth: Tensor, cameras: Cameras, s: EditSettings, pass_index: int,
                   units: Units) -> None:
    """Edit frame 0 of every camera (the ``keyframe`` schedule's first stage).

    Each round edits a random subset of ``sequence_length`` cameras together (anchor-aware), at a strength
    annealed by cosine from a full edit to 0.8 (pass 2 and later: refinements at ``restview_refine_num_steps``),
    makes the subset agree by averaging depth warps among its views, and blends the agreed views into every other
    camera by depth warping (``warp_ratio``). Then the other cameras are refined in batches, anchored on an
    edited view of the last round.

    Args:
        depth: ``[C, H, W]`` rendered depth of every camera at frame 0.
    """
    num_cams = store.num_cams
    strengths = cosine_strengths(s.keyframe_rounds)
    views = [cameras.view(c, depth[c]) for c in range(num_cams)]
    subset: list[int] = []
    for r in range(s.keyframe_rounds):
        key = f"pass{pass_index}/keyframe/round{r:02d}"
        subset = round_subset(num_cams, s.sequence_length, s.seed, pass_index, r)
        if units.is_done(key) or units.stopping():
            continue
        current, cond = store.get(KEY_FRAME, subset), store.original(KEY_FRAME, subset)
        if pass_index == 0:
            T = round(1000 * strengths[r])
            steps = max(1, round(s.diffusion_steps * strengths[r]))
        else:
            T, steps = s.restview_refine_num_steps, s.restview_refine_diffusion_steps
        edited = _edit(editor, current, cond, s, T=T, steps=steps, seed=_unit_seed(s, key))
        agreed, _ = average_by_depth(edited, [views[c] for c in subset], s.ndc)
        store.put(KEY_FRAME, subset, agreed)
        # carry the agreed views into the other cameras, blended with what they hold
        sources = [cameras.view(c, depth[c], agreed[i]) for i, c in enumerate(subset)]
        rest = [c for c in range(num_cams) if c not in subset]
        blended = []
        for c in rest:
            warped, mask = depth_warp_views(views[c], sources, ndc=s.ndc)
            now = store.get(KEY_FRAME, [c])[0]
            blended.append(torch.where(mask[None], (1 - s.warp_ratio) * now + s.warp_ratio * warped, now))
        if rest:
            store.put(KEY_FRAME, rest, torch.stack(blended))
        rows = [("input", current), ("edited", edited), ("agreed", agreed)]
        if rest:
            rows.append(("others", torch.stack(blended)))
        units.done(key, rows)
    # refine the cameras the last round did not edit, anchored on one it did
    anchor = subset[0]
    rest = [c for c in range(num_cams) if c not in subset]
    for batch in batches(rest, s.sequence_length - 1):
        key = f"pass{pass_index}/keyframe/rest/{cams_label(batch)}"
        if units.is_done(key) or units.stopping():
            continue
        cams = [anchor, *batch]
        current, cond = store.get(KEY_FRAME, cams), store.original(KEY_FRAME, cams)
        out = _edit(editor, current, cond, s, T=s.restview_refine_num_steps, steps=s.restview_refine_diffusion_steps,
                    seed=_unit_seed(s, key))
        store.put(KEY_FRAME, batch, out[1:])
        units.done(key, [("input", current), ("refined", out)])


def time_windows(num_frames: int, s: EditSettings, anchored_on_first: bool,
                 full_first: bool) -> list[tuple[list[int], list[int]]]:
    """The windows of :func:`edit_through_time`: ``(frames edited together, frames written)`` for each."""
    return plan_windows(num_frames, s.sequence_length, s.overlap_length, anchored_on_first=anchored_on_first,
                        full_first=full_first)


def time_key(pass_index: int, cam_id: int, new: Sequence[int]) -> str:
    return f"pass{pass_index}/time/cam{cam_id:02d}/frames{new[0]:03d}-{new[-1]:03d}"


def time_keys(num_frames: int, cam_id: int, s: EditSettings, pass_index: int, anchored_on_first: bool,
              full_first: bool) -> list[str]:
    return [time_key(pass_index, cam_id, new) for _, new in time_windows(num_frames, s, anchored_on_first, full_first)]


class CameraFrames:
    """One camera of the image store as :class:`ip2p_models.sliding_window.Frames`."""

    def __init__(self, store: ImageStore, cam: int):
        self.store, self.cam = store, cam

    def current(self, frames: Sequence[int]) -> Tensor:
        return self.store.get(list(frames), self.cam)

    def original(self, frames: Sequence[int]) -> Tensor:
        return self.store.original(list(frames), self.cam)

    def write(self, frames: Sequence[int], images: Tensor) -> None:
        self.store.put(list(frames), self.cam, images)


def edit_through_time(editor, store: ImageStore, flow: FlowFn, cam: int, cam_id: int, s: EditSettings,
                      pass_index: int, units: Units, *, anchored_on_first: bool = True,
                      full_first: bool = False) -> None:
    """Edit one camera's frames with the flow-guided sliding window (:mod:`ip2p_models.sliding_window`).

    Args:
        anchored_on_first: the ``keyframe`` schedule: windows of ``sequence_length - 1`` new frames, the camera's
            edited frame 0 prepended as the anchor. Otherwise overlapping windows of ``sequence_length`` frames
            (``overlap_length`` shared), the first (edited) frame the anchor.
        full_first: the first window is the camera's first edit of this pass: from noise in the first pass, refined
            as a whole from the NeRF's renders in later ones (a key camera); else frame 0 is edited already.
    """
    frames = CameraFrames(store, cam)
    for index, (window, new) in enumerate(time_windows(store.num_frames, s, anchored_on_first, full_first)):
        key = time_key(pass_index, cam_id, new)
        if units.is_done(key) or units.stopping():
            continue
        inputs = frames.current(window)
        done = edit_window(editor, frames, window, new, s.prompt, flow, s.refine_settings(),
                           seed=_unit_seed(s, key), index=index, from_noise=pass_index == 0)
        if done.filled is None:
            units.done(key, [("input", inputs), ("edited", done.edited)])
        else:
            mask_images = done.masks.float()[:, None].expand(-1, 3, -1, -1)
            units.done(key, [("input", frames.original(new)), ("warped", done.filled[len(window) - len(new):]),
                             ("reliable", mask_images), ("refined", done.edited)])


def per_frame_keys(num_frames: int, cam_id: int, s: EditSettings, pass_index: int) -> list[str]:
    """Unit keys of :func:`edit_per_frame` for one camera (frames in groups of ``sequence_length``)."""
    return [f"pass{pass_index}/perframe/cam{cam_id:02d}/frames{b[0]:03d}-{b[-1]:03d}"
            for b in batches(list(range(num_frames)), s.sequence_length)]


def edit_per_frame(editor, store: ImageStore, cam: int, cam_id: int, s: EditSettings, pass_index: int,
                   units: Units) -> None:
    """The ``perframe`` baseline (Instruct-NeRF2NeRF applied to 4D): every image edited on its own, no anchor, no flow,
    no depth; the NeRF alone merges the edits (iterative dataset update). Pass 0 edits from noise; later passes
    refine the NeRF's renders from ``restview_refine_num_steps``."""
    frames = list(range(store.num_frames))
    for group, key in zip(batches(frames, s.sequence_length), per_frame_keys(store.num_frames, cam_id, s, pass_index)):
        if units.is_done(key) or units.stopping():
            continue
        current, cond = store.get(group, cam), store.original(group, cam)
        T, steps = ((1000, s.diffusion_steps) if pass_index == 0 else
                    (s.restview_refine_num_steps, s.restview_refine_diffusion_steps))
        seed = _unit_seed(s, key)
        out = torch.cat([_edit(editor, current[i:i + 1], cond[i:i + 1], s, T=T, steps=steps, seed=seed + i)
                         for i in range(len(group))])
        store.put(group, cam, out)
        units.done(key, [("input", cond), ("edited", out)])


def anchored_keys(cam_id: int, pass_index: int) -> list[str]:
    """The unit key of :func:`edit_anchored` for one camera."""
    return [f"pass{pass_index}/anchor/cam{cam_id:02d}"]


def edit_anchored(editor, store: ImageStore, cam: int, cam_id: int, s: EditSettings, pass_index: int,
                  units: Units) -> None:
    """The ``anchor`` ablation: each camera's frames edited in anchor-aware batches (the camera's frame 0 the anchor
    of every batch of ``sequence_length``), without flow or depth; cameras are independent. Pass 0 edits from
    noise; later passes refine the NeRF's renders from ``refine_num_steps``."""
    key = anchored_keys(cam_id, pass_index)[0]
    if units.is_done(key) or units.stopping():
        return
    frames = list(range(store.num_frames))
    current, cond = store.get(frames, cam), store.original(frames, cam)
    T, steps = (1000, s.diffusion_steps) if pass_index == 0 else (s.refine_num_steps, s.refine_diffusion_steps)
    out = _edit(editor, current, cond, s, T=T, steps=steps, seed=_unit_seed(s, key))
    store.put(frames, cam, out)
    units.done(key, [("input", cond), ("edited", out)])


def key_camera(c2w: Tensor) -> int:
    """The camera whose centre is nearest the mean of all camera centres (the rig's centre)."""
    centres = c2w[:, :3, 3]
    return int((centres - centres.mean(0)).norm(dim=-1).argmin())


def key_views_key(pass_index: int) -> str:
    """Unit key of :func:`edit_key_views`."""
    return f"pass{pass_index}/keyviews/frame000"


def joint_key_views(key_cams: Sequence[int], pass_index: int) -> bool:
    """Whether the pass starts by editing the key cameras' frame 0 together (several key cameras, first pass)."""
    return pass_index == 0 and len(key_cams) > 1


def edit_key_views(editor, store: ImageStore, key_cams: Sequence[int], s: EditSettings, pass_index: int,
                   units: Units) -> None:
    """The ``keyview`` schedule with several key cameras: their frame 0 edited from noise as one anchor-aware batch
    (the first key camera the anchor), so the key views agree before each is carried through time and before the
    other cameras are built from them."""
    key = key_views_key(pass_index)
    if units.is_done(key) or units.stopping():
        return
    cams = list(key_cams)
    current, cond = store.get(KEY_FRAME, cams), store.original(KEY_FRAME, cams)
    out = _edit(editor, current, cond, s, T=1000, steps=s.diffusion_steps, seed=_unit_seed(s, key))
    store.put(KEY_FRAME, cams, out)
    units.done(key, [("input", cond), ("edited", out)])


def views_keys(num_frames: int, cams: Sequence[int], cam_ids: Sequence[int], s: EditSettings,
               pass_index: int) -> list[str]:
    labels = [cams_label([cam_ids[c] for c in b]) for b in batches(list(cams), s.sequence_length - 1)]
    return [f"pass{pass_index}/views/frame{f:03d}/{label}" for f in range(num_frames) for label in labels]


def edit_other_views(editor, store: ImageStore, flow: FlowFn, depth_at: Callable[[int], Tensor], cameras: Cameras,
                     key_cams: Sequence[int], cams: Sequence[int], cam_ids: Sequence[int], s: EditSettings,
                     pass_index: int, units: Units) -> None:
    """The ``keyview`` schedule's second stage: build every other camera, frame by frame, from the key views.

    At frame ``f`` each camera starts from what it holds, takes its own previous frame's edit carried by flow where
    that is reliable, then the key views' depth warps where they reach (the key views decide); the cameras are
    then refined in batches of ``sequence_length - 1`` with the first key view at ``f`` as the anchor.

    Args:
        depth_at: ``frame -> [C, H, W]`` rendered depth of every camera at that frame.
        key_cams: positions of the key cameras (edited through time already).
        cams: positions of the cameras this call builds.
    """
    groups = batches(list(cams), s.sequence_length - 1)
    for f in range(store.num_frames):
        keys = [f"pass{pass_index}/views/frame{f:03d}/{cams_label([cam_ids[c] for c in b])}" for b in groups]
        if all(units.is_done(k) for k in keys):
            continue
        if units.stopping():
            return
        depth = depth_at(f)
        key_images = store.get(f, list(key_cams))
        sources = [cameras.view(k, depth[k], key_images[i]) for i, k in enumerate(key_cams)]
        for batch, key in zip(groups, keys):
            if units.is_done(key):
                continue
            built, coverage = [], []
            for c in batch:
                image = store.get(f, c)[0]
                if f > 0:
                    warped, mask = propagate_by_flow(store.get(f - 1, c)[0], store.original(f - 1, c)[0],
                                                     store.original(f, c)[0], flow,
                                                     photometric_threshold=s.photometric_threshold)
                    image = fill_from_warp(image, warped, mask)
                warped, mask = depth_warp_views(cameras.view(c, depth[c]), sources, ndc=s.ndc)
                built.append(fill_from_warp(image, warped, mask))
                coverage.append(mask.float()[None].expand(3, -1, -1))
            anchor = key_cams[0]
            batch_images = torch.cat([key_images[:1], torch.stack(built)])
            cond = store.original(f, [anchor, *batch])
            out = _edit(editor, batch_images, cond, s, T=s.restview_refine_num_steps,
                        steps=s.restview_refine_diffusion_steps, seed=_unit_seed(s, key))
            store.put(f, batch, out[1:])
            units.done(key, [("input", cond[1:]), ("built", torch.stack(built)), ("key warp", torch.stack(coverage)),
                             ("refined", out[1:])])
