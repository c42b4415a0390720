"""The editing schedules in one process, with the deterministic colour-shift editor and the synthetic scene's
ground-truth depth and flow: views agree after depth averaging, frames agree after flow propagation, every frame is
written once, finished units are skipped."""

from __future__ import annotations

import pytest
import torch

from editing.schedules import (
    Cameras,
    EditSettings,
    Units,
    average_by_depth,
    cosine_strengths,
    edit_key_frame,
    edit_key_views,
    edit_other_views,
    edit_through_time,
    key_camera,
    keyframe_keys,
    round_subset,
    time_keys,
    time_windows,
    views_keys,
)
from editing.store import ImageStore
from editing.toy_editors import ColourShiftEditor
from ip2p_models.depth_warp import View, depth_warp
from ip2p_models.flow import make_flow
from ip2p_models.warp import warp_by_flow

pytestmark = pytest.mark.usefixtures("one_thread")


def make_store(truth) -> ImageStore:
    originals = (truth["frames"] * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).contiguous()
    return ImageStore(originals.clone(), originals)


def views_at(truth, frame: int) -> list[View]:
    return [View(None, truth["depth"][frame, c], truth["K"][c], truth["c2w"][c]) for c in range(truth["K"].shape[0])]


def cross_view_error(truth, images, cams, frame: int = 0) -> float:
    """Mean colour difference of pixels two views share (ground-truth depth warp), over ordered pairs."""
    views = views_at(truth, frame)
    errors = []
    for i, a in enumerate(cams):
        for j, b in enumerate(cams):
            if a != b:
                source = View(images[j], views[b].depth, views[b].K, views[b].c2w)
                warped, mask = depth_warp(views[a], source)
                errors.append((warped - images[i]).abs().mean(0)[mask].mean())
    return float(torch.stack(errors).mean())


def temporal_error(truth, frames, cam: int) -> float:
    """Mean colour difference between consecutive frames along the ground-truth flow (visible pixels)."""
    errors = []
    for f in range(frames.shape[0] - 1):
        warped = warp_by_flow(frames[f + 1], truth["flow_fw"][f, cam])
        visible = ~truth["occ_fw"][f, cam].bool()
        errors.append((warped - frames[f]).abs().mean(0)[visible].mean())
    return float(torch.stack(errors).mean())


def test_image_store_round_trip():
    originals = torch.randint(0, 256, (3, 2, 4, 5, 3), dtype=torch.uint8)
    store = ImageStore(originals.clone(), originals)
    frames = store.get([0, 2], 1)
    assert frames.shape == (2, 3, 4, 5) and frames.dtype == torch.float32
    store.put([0, 2], 1, 1 - frames)
    assert torch.equal(store.images[2, 1], 255 - originals[2, 1])
    assert torch.equal(store.images[1], originals[1]) and torch.equal(store.original([0, 2], 1), frames)
    with pytest.raises(ValueError, match="one frame of several cameras"):
        store.get([0, 1], [0, 1])


def test_strengths_anneal_from_a_full_edit_to_0_8():
    s = cosine_strengths(12)
    assert s[0] == 1.0 and s[-1] == pytest.approx(0.8) and all(a > b for a, b in zip(s, s[1:]))


@pytest.mark.parametrize("anchored", [True, False])
@pytest.mark.parametrize("full_first", [True, False])
def test_time_windows_write_every_frame_once(anchored, full_first):
    s = EditSettings(prompt="p", sequence_length=4, overlap_length=1)
    windows = time_windows(11, s, anchored, full_first)
    written = [f for _, new in windows for f in new]
    assert written == list(range(0 if full_first else 1, 11))
    for frames, new in windows:
        assert len(frames) <= 4 and frames[-len(new):] == new
        if anchored and not (full_first and new[0] == 0):
            assert frames[0] == 0  # the camera's frame 0 is every window's anchor


def test_depth_averaging_makes_views_agree(synthetic_truth):
    # independent edits disagree by their random offsets and noise (measured 0.094); averaging every view with the
    # others' depth warps leaves the warp's own error (measured 0.0055, the unperturbed edit's floor is 0.0015)
    store, editor, cams = make_store(synthetic_truth), ColourShiftEditor(), list(range(6))
    originals = store.original(0, cams)
    independent = torch.stack([editor.edit_sequence(originals[i:i + 1], originals[i:i + 1], "p", seed=10 + i)[0]
                               for i in cams])
    together = editor.edit_sequence(originals, originals, "p", seed=1)
    averaged, counts = average_by_depth(together, views_at(synthetic_truth, 0), ndc=False)
    before, after = cross_view_error(synthetic_truth, independent, cams), cross_view_error(synthetic_truth, averaged,
                                                                                           cams)
    assert before > 0.06 and after < 0.2 * before
    assert counts.min() >= 1 and counts.max() == 6


def test_key_frame_rounds_edit_every_camera_and_agree(synthetic_truth):
    store, editor = make_store(synthetic_truth), ColourShiftEditor()
    s = EditSettings(prompt="p", sequence_length=3, keyframe_rounds=2, ndc=False, seed=3)
    rows = {}
    units = Units(preview=lambda key, r: rows.__setitem__(key, dict(r)))
    cameras = Cameras(synthetic_truth["K"], synthetic_truth["c2w"])
    edit_key_frame(editor, store, synthetic_truth["depth"][0], cameras, s, 0, units)
    assert units.finished == set(keyframe_keys(6, s, 0))
    assert editor.calls == len(units.finished)  # one editor call per unit
    # every camera's frame 0 changed towards the edit; other frames untouched
    target = ColourShiftEditor.target(store.original(0, list(range(6))))
    final = store.get(0, list(range(6)))
    assert (final - target).abs().mean() < 0.5 * (store.original(0, list(range(6))) - target).abs().mean()
    assert torch.equal(store.images[1:], store.originals[1:])
    # the round's agreed views match far better than the editor's raw output for them
    last = rows["pass0/keyframe/round01"]
    cams = round_subset(6, 3, s.seed, 0, 1)
    raw, agreed = last["edited"], last["agreed"]
    assert cross_view_error(synthetic_truth, agreed, cams) < 0.3 * cross_view_error(synthetic_truth, raw, cams)


def test_flow_propagation_makes_frames_agree(synthetic_truth):
    # per-frame edits: 0.102; frames filled by flow from their edited predecessor: 0.020; after the T=600 refinement
    # (which adds 60% of a fresh edit with this editor): 0.055
    store, editor, cam = make_store(synthetic_truth), ColourShiftEditor(), 2
    frames = list(range(store.num_frames))
    originals = store.original(frames, cam)
    independent = torch.stack([editor.edit_sequence(originals[f:f + 1], originals[f:f + 1], "p", seed=f)[0]
                               for f in frames])
    store.put(0, [cam], editor.edit_sequence(originals[:1], originals[:1], "p", seed=99))
    filled = {0: store.get(0, cam)[0]}

    def keep_fills(key, rows):
        first = int(key.split("frames")[1][:3])
        for i, image in enumerate(dict(rows)["warped"]):
            filled[first + i] = image

    s = EditSettings(prompt="p", sequence_length=4, refine_num_steps=600, refine_diffusion_steps=2, ndc=False)
    units = Units(preview=keep_fills)
    edit_through_time(editor, store, make_flow("dis"), cam, cam, s, 0, units)
    assert units.finished == set(time_keys(store.num_frames, cam, s, 0, True, False))
    per_frame = temporal_error(synthetic_truth, independent, cam)
    propagated = temporal_error(synthetic_truth, torch.stack([filled[f] for f in frames]), cam)
    refined = temporal_error(synthetic_truth, store.get(frames, cam), cam)
    assert per_frame > 0.07 and propagated < 0.35 * per_frame and refined < 0.8 * per_frame
    untouched = [c for c in range(6) if c != cam]
    assert torch.equal(store.images[:, untouched], store.originals[:, untouched])


def test_keyview_builds_other_views_from_the_key_view(synthetic_truth):
    store, editor = make_store(synthetic_truth), ColourShiftEditor()
    s = EditSettings(prompt="p", sequence_length=3, ndc=False)
    key = key_camera(synthetic_truth["c2w"])
    units = Units()
    flow = make_flow("dis")
    # two frames keep the test short
    store = ImageStore(store.images[:2].clone(), store.originals[:2].clone())
    edit_through_time(editor, store, flow, key, key, s, 0, units, anchored_on_first=False, full_first=True)
    others = [c for c in range(6) if c != key]
    cameras = Cameras(synthetic_truth["K"], synthetic_truth["c2w"])
    edit_other_views(editor, store, flow, lambda f: synthetic_truth["depth"][f], cameras, [key], others,
                     list(range(6)), s, 0, units)
    assert set(views_keys(2, others, list(range(6)), s, 0)) <= units.finished
    for f in range(2):
        for c in range(6):
            assert not torch.equal(store.images[f, c], store.originals[f, c]), (f, c)
    # a second call finds everything done and does not call the editor again
    calls = editor.calls
    edit_other_views(editor, store, flow, lambda f: synthetic_truth["depth"][f], cameras, [key], others,
                     list(range(6)), s, 0, units)
    assert editor.calls == calls


def test_store_reads_exactly_the_images_asked_for():
    store = torch.randint(0, 255, (5, 4, 3, 2, 3), dtype=torch.uint8)
    view = ImageStore(store, store)

    def image(f, c):
        return store[f, c].permute(2, 0, 1).float() / 255

    assert torch.equal(view.get([0, 2, 4], 1), torch.stack([image(f, 1) for f in (0, 2, 4)]))
    assert torch.equal(view.original(3, [0, 3]), torch.stack([image(3, c) for c in (0, 3)]))
    assert torch.equal(view.get(2, 1), image(2, 1)[None])
    with pytest.raises(ValueError, match="one frame of several cameras"):
        view.get([0, 1], [0, 1])


def test_several_key_views_are_edited_together_first(synthetic_truth):
    """Two key cameras: their frame 0 in one editor call (one anchor-aware batch), then each camera's sliding window
    starts from it (frame 0 is not edited again on its own)."""
    store, editor = make_store(synthetic_truth), ColourShiftEditor()
    store = ImageStore(store.images[:3].clone(), store.originals[:3].clone())
    s = EditSettings(prompt="p", sequence_length=3, ndc=False)
    units, flow = Units(), make_flow("dis")
    edit_key_views(editor, store, [1, 4], s, 0, units)
    assert (editor.calls, editor.images_edited) == (1, 2) and "pass0/keyviews/frame000" in units.finished
    frame0 = store.images[0, [1, 4]].clone()
    for cam in (1, 4):
        edit_through_time(editor, store, flow, cam, cam, s, 0, units, anchored_on_first=False, full_first=False)
    assert torch.equal(store.images[0, [1, 4]], frame0)
    assert all(not torch.equal(store.images[f, c], store.originals[f, c]) for f in range(3) for c in (1, 4))
    calls = editor.calls
    edit_key_views(editor, store, [1, 4], s, 0, units)  # done: not again
    assert editor.calls == calls
