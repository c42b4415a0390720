"""The flow-guided sliding window with a fake editor (any object with ``edit_sequence``)."""

from __future__ import annotations

import pytest
import torch

from ip2p_models.flow import DISFlow
from ip2p_models.sliding_window import RefineSettings, plan_windows, sliding_window_edit, window_ranges


class InvertingEditor:
    """Full edits invert colours; refinements return their input. Records every call."""

    def __init__(self):
        self.calls = []

    def edit_sequence(self, images, images_cond, prompt, *, guidance_scale=10.5, image_guidance_scale=1.5,
                      diffusion_steps=20, T=1000, init="noise", sequence_length=None, seed=None):
        self.calls.append(dict(images=images.clone(), cond=images_cond.clone(), prompt=prompt, steps=diffusion_steps,
                               T=T, init=init, seed=seed))
        return 1.0 - images_cond if init == "noise" else images.clone()


def test_window_ranges():
    assert window_ranges(9, 5, 1) == [range(0, 5), range(4, 9)]
    assert window_ranges(10, 5, 1) == [range(0, 5), range(4, 9), range(8, 10)]
    assert window_ranges(6, 3, 0) == [range(0, 3), range(3, 6)]
    assert window_ranges(6, 4, 2) == [range(0, 4), range(2, 6)]
    assert window_ranges(5, 3, 1, done=1) == [range(0, 3), range(2, 5)]
    assert window_ranges(3, 5, 1) == [range(0, 3)]
    with pytest.raises(ValueError, match="overlap_length"):
        window_ranges(5, 3, 3)


def test_plan_windows_of_both_schedules():
    # overlapping windows (the paper's): the new frames are those not edited by an earlier window
    assert plan_windows(9, 4, 1) == [([0, 1, 2, 3], [0, 1, 2, 3]), ([3, 4, 5, 6], [4, 5, 6]), ([6, 7, 8], [7, 8])]
    assert plan_windows(5, 3, 1, full_first=False) == [([0, 1, 2], [1, 2]), ([2, 3, 4], [3, 4])]
    # anchored windows (the release's key-frame schedule): frame 0 leads every window
    assert plan_windows(8, 3, anchored_on_first=True, full_first=False) == [
        ([0, 1, 2], [1, 2]), ([0, 3, 4], [3, 4]), ([0, 5, 6], [5, 6]), ([0, 7], [7])]
    assert plan_windows(6, 3, anchored_on_first=True)[:2] == [([0, 1, 2], [0, 1, 2]), ([0, 3, 4], [3, 4])]
    with pytest.raises(ValueError, match="sequence_length"):
        plan_windows(6, 1, anchored_on_first=True)
    # windows sharing no frame would each be edited from noise alone (a seam at every join)
    with pytest.raises(ValueError, match="overlap_length must be at least 1"):
        plan_windows(6, 3, 0)


def test_sliding_window_warps_edits_forward_and_refines(synthetic_truth):
    originals = synthetic_truth["frames"][:7, 0]  # [7, 3, H, W]
    editor, windows = InvertingEditor(), []
    edited = sliding_window_edit(editor, originals, "invert", DISFlow(), sequence_length=3, overlap_length=1,
                                 settings=RefineSettings(refine_diffusion_steps=4, refine_num_steps=500), seed=3,
                                 on_window=windows.append)
    assert edited.shape == originals.shape

    # 1. one full edit from noise, then refinements from T with few steps, seeds per window
    assert [(c["init"], c["T"], c["steps"], c["seed"]) for c in editor.calls] == [
        ("noise", 1000, 20, 3), ("noisy_latent", 500, 4, 4), ("noisy_latent", 500, 4, 5)]
    assert [w.frames for w in windows] == [[0, 1, 2], [2, 3, 4], [4, 5, 6]]
    assert all(torch.equal(c["cond"], originals[w.frames[0]:w.frames[-1] + 1]) for c, w in zip(editor.calls, windows))

    # 2. each refinement's anchor is the previous window's last edited frame, unchanged afterwards
    for call, window in zip(editor.calls[1:], windows[1:]):
        assert torch.equal(call["images"][0], edited[window.frames[0]])
    assert torch.allclose(edited[:3], 1.0 - originals[:3])

    # 3. new frames: the warped edit where the warp is reliable, the original elsewhere (the identity refinement
    #    keeps the fill); window 1 warps a fully inverted frame, so its reliable pixels are inverted, up to the
    #    resampling blur each chained warp adds
    for window in windows[1:]:
        for k, mask in zip(window.frames[1:], window.masks):
            assert mask.float().mean() > 0.7
            assert torch.equal(edited[k][:, ~mask], originals[k][:, ~mask])
            assert torch.equal(edited[k], window.filled[window.frames.index(k)])
            if window.index == 1:
                error = (edited[k] - (1.0 - originals[k])).abs().mean(0)[mask]
                assert error.mean() < 0.007 * (k - window.frames[0]), (k, float(error.mean()))


def test_sliding_window_with_an_edited_anchor_never_edits_from_noise(synthetic_truth):
    originals = synthetic_truth["frames"][:4, 1]
    editor = InvertingEditor()
    anchor = 1.0 - originals[0]
    edited = sliding_window_edit(editor, originals, "p", DISFlow(), sequence_length=4, anchor=anchor,
                                 current=torch.zeros_like(originals))
    assert [c["init"] for c in editor.calls] == ["noisy_latent"]
    assert torch.equal(edited[0], anchor)
    assert torch.equal(editor.calls[0]["images"][0], anchor)
    # where the warp is unreliable the frame keeps `current` (zeros here), never the original
    assert (edited[1:] == 0).all(0).any()


def test_sliding_window_rejects_a_mismatched_current(synthetic_truth):
    originals = synthetic_truth["frames"][:3, 0]
    with pytest.raises(ValueError, match="current"):
        sliding_window_edit(InvertingEditor(), originals, "p", DISFlow(), current=originals[:2])


def test_a_later_pass_refines_its_first_window_whole(synthetic_truth):
    """No frame is edited yet in a later pass: the first window is refined from its current images (the NeRF's
    renders), frame 0 included, at the refinement level, not edited from noise and not left as it was."""
    from ip2p_models.sliding_window import edit_window

    class Frames:
        def __init__(self, images):
            self.images, self.originals = images.clone(), images.clone()

        def current(self, frames):
            return self.images[list(frames)]

        def original(self, frames):
            return self.originals[list(frames)]

        def write(self, frames, images):
            self.images[list(frames)] = images

    frames = Frames(synthetic_truth["frames"][:4, 0])
    editor = InvertingEditor()
    settings = RefineSettings(refine_diffusion_steps=4, refine_num_steps=500)
    done = edit_window(editor, frames, [0, 1, 2], [0, 1, 2], "invert", DISFlow(), settings, seed=1, from_noise=False)
    assert [(c["init"], c["T"], c["steps"]) for c in editor.calls] == [("noisy_latent", 500, 4)]
    assert torch.equal(editor.calls[0]["images"], synthetic_truth["frames"][:3, 0])  # from the current images
    assert done.filled is None and torch.equal(frames.images[:3], done.edited)
