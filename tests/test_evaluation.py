"""Edit scores (editing.evaluation, tools/evaluate_edit.py) on constructed cases with known answers."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from editing.evaluation import (
    ClipScorer,
    Depths,
    EvaluationError,
    TemporalFlow,
    clip_scores,
    cross_view_errors,
    nearest_camera_pairs,
    psnr,
    ssim,
    temporal_warp_errors,
)
from ip2p_models.instructions import INSTRUCTIONS, find_instruction

H, W = 40, 48


def zero_flow_everywhere(t: int, c: int):
    return torch.zeros(H, W, 2), torch.ones(H, W, dtype=torch.bool)


def texture(rng: np.random.Generator, height: int = H, width: int = W) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    base = 0.5 + 0.25 * np.stack([np.sin(xs / 3.0), np.cos(ys / 4.0), np.sin((xs + ys) / 5.0)], -1)
    return np.clip(base + rng.uniform(-0.02, 0.02, base.shape), 0, 1)


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def test_identical_frames_have_no_temporal_error():
    frame = to_uint8(texture(np.random.default_rng(0)))
    video = np.broadcast_to(frame, (5, 2, H, W, 3)).copy()
    errors = temporal_warp_errors(video, TemporalFlow(zero_flow_everywhere, "zero"))
    assert errors.shape == (4, 2) and np.all(errors < 1e-6)


def test_a_shifted_copy_with_its_flow_has_no_temporal_error():
    rng = np.random.default_rng(1)
    wide = texture(rng, H, W + 10)
    shift = 3  # each frame is the previous one moved 3 pixels to the right
    frames = np.stack([to_uint8(wide[:, 10 - shift * t: 10 - shift * t + W]) for t in range(4)])[:, None]

    def flow(t, c):
        f = torch.zeros(H, W, 2)
        f[..., 0] = shift
        inside = torch.zeros(H, W, dtype=torch.bool)
        inside[:, : W - shift] = True  # the last columns move out of view
        return f, inside

    errors = temporal_warp_errors(frames, TemporalFlow(flow, "shift"))
    assert errors.max() < 1e-6
    still = temporal_warp_errors(frames, TemporalFlow(zero_flow_everywhere, "zero"))
    assert still.min() > 20 * errors.max()  # the wrong flow sees the motion as change


def test_per_frame_noise_raises_the_temporal_error_by_its_expected_amount():
    rng = np.random.default_rng(2)
    base = np.full((6, 1, H, W, 3), 0.5)
    amplitude = 0.1
    noisy = to_uint8(base + rng.uniform(-amplitude, amplitude, base.shape))
    errors = temporal_warp_errors(noisy, TemporalFlow(zero_flow_everywhere, "zero"))
    # |u1 - u2| for u1, u2 uniform in [-a, a] has mean 2a/3
    assert np.mean(errors) == pytest.approx(2 * amplitude / 3, rel=0.05)


def test_masked_pixels_do_not_count():
    video = np.zeros((2, 1, H, W, 3), np.uint8)
    video[1, 0, :, : W // 2] = 255  # a change only in the left half

    def right_half(t, c):
        mask = torch.zeros(H, W, dtype=torch.bool)
        mask[:, W // 2 + 1:] = True
        return torch.zeros(H, W, 2), mask

    assert temporal_warp_errors(video, TemporalFlow(right_half, "half"))[0, 0] == 0


def gt_depths(truth) -> Depths:
    return Depths(lambda f: truth["depth"][f], truth["K"], truth["c2w"], False, "ground truth")


def test_ground_truth_views_agree_through_ground_truth_depth(synthetic_truth):
    frames = to_uint8(synthetic_truth["frames"][:3].permute(0, 1, 3, 4, 2).numpy())
    pairs = nearest_camera_pairs(synthetic_truth["c2w"], 2)
    assert len(pairs) == 2 * frames.shape[1] and all(i != j for i, j in pairs)
    clean = cross_view_errors(frames, gt_depths(synthetic_truth), pairs)
    assert np.nanmean(clean) < 0.03
    rng = np.random.default_rng(3)
    amplitude = 0.1
    noisy = to_uint8(frames / 255.0 + rng.uniform(-amplitude, amplitude, frames.shape))
    perturbed = cross_view_errors(noisy, gt_depths(synthetic_truth), pairs)
    assert np.nanmean(perturbed) > np.nanmean(clean) + 0.5 * (2 * amplitude / 3)


def test_ground_truth_flow_gives_a_small_temporal_error(synthetic_truth):
    from editing.evaluation import ground_truth_flow

    frames = to_uint8(synthetic_truth["frames"].permute(0, 1, 3, 4, 2).numpy())
    gt = {"flow_fw": synthetic_truth["flow_fw"], "occ_fw": synthetic_truth["occ_fw"]}
    errors = temporal_warp_errors(frames, ground_truth_flow(gt))
    still = temporal_warp_errors(frames, TemporalFlow(lambda t, c: (torch.zeros(*frames.shape[2:4], 2),
                                                                   torch.ones(*frames.shape[2:4], dtype=torch.bool)),
                                                      "zero"))
    assert np.nanmean(errors) < 0.02 and np.nanmean(errors) < 0.5 * np.nanmean(still)


def test_psnr_and_ssim_known_values():
    a = torch.full((3, 32, 32), 0.5)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-4)
    image = torch.from_numpy(texture(np.random.default_rng(4), 32, 32)).permute(2, 0, 1).float()
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-5)
    assert ssim(image, torch.rand_like(image)) < 0.2


def test_procedural_targets_and_prompts():
    assert find_instruction("Make it night.") is INSTRUCTIONS["night"]
    assert find_instruction("turn it into a snowy scene") is INSTRUCTIONS["snowy"]
    assert find_instruction("What if it was painted by Van Gogh?") is None
    x = np.full((20, 30, 3), 0.64)
    assert np.allclose(INSTRUCTIONS["night"].apply(x, None), 0.64**1.5 * np.array([0.3, 0.4, 0.7]))
    a = INSTRUCTIONS["snowy"].apply(x, np.random.default_rng(0))
    b = INSTRUCTIONS["snowy"].apply(x, np.random.default_rng(1))
    assert not np.array_equal(a, b)  # fresh flakes
    base = INSTRUCTIONS["snowy"].reference(x)
    flakes = np.all(a == 1.0, axis=-1)
    assert 0 < flakes.mean() < 0.2 and np.allclose(a[~flakes], base[~flakes])


# --- CLIP ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    """A tiny random CLIP (text and vision towers of width 32) with the offline tokenizer, saved as a folder."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from ip2p_models.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer.get_vocab()), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 77,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_clip_scores_with_a_tiny_clip(tiny_clip_dir):
    scorer = ClipScorer(str(tiny_clip_dir))
    rng = np.random.default_rng(5)
    original = to_uint8(rng.uniform(0, 1, (2, 1, 40, 48, 3)))
    edited = to_uint8(rng.uniform(0, 1, (2, 1, 40, 48, 3)))
    scores = clip_scores(scorer, edited, original, "a photo", "a photo at night")
    e = scorer.image_embeds([edited[0, 0], edited[1, 0]])
    t = scorer.text_embeds(["a photo at night"])[0]
    assert scores["clip_text_image"] == pytest.approx(float((e @ t).mean()), abs=1e-5)
    assert -1 <= scores["clip_direction"] <= 1
    assert clip_scores(None, edited, original, "a", "b") == {"clip_text_image": "no CLIP weights",
                                                           "clip_direction": "no CLIP weights"}


def test_a_missing_clip_folder_is_a_clear_error(tmp_path):
    with pytest.raises(EvaluationError, match="no such CLIP folder"):
        ClipScorer(str(tmp_path / "nothing"))


# --- the tool on bad input -----------------------------------------------------------------------------------------
def test_evaluate_edit_bad_input(tmp_path, small_scene_dir, caplog):
    from tools.evaluate_edit import main

    train_run = tmp_path / "train"
    train_run.mkdir()
    (train_run / "config.txt").write_text("expname = train\n")
    with caplog.at_level(logging.ERROR):
        assert main([str(train_run)]) == 2
    assert "holds no edit (edited_images.npy is missing)" in caplog.text

    run = tmp_path / "edit"
    run.mkdir()
    (run / "config.txt").write_text(f"dataset_name = synthetic\ndatadir = {small_scene_dir}\nprompt = make it night\n"
                                    f"ckpt = {tmp_path / 'nerf'}\n")
    np.save(run / "edited_images.npy", np.zeros((5, 3, 36, 48, 3), np.uint8))  # the scene has 4 frames
    (run / "edit_state.json").write_text(json.dumps({"done": [], "info": {}}))
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert main([str(run), "--renders", "none"]) == 2
    assert "has shape [5, 3, 36, 48, 3]" in caplog.text and "[4, 3, 36, 48, 3]" in caplog.text

    np.save(run / "edited_images.npy", np.zeros((4, 3, 36, 48, 3), np.uint8))
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert main([str(run), "--renders", "none", "--clip_model", str(tmp_path / "no-clip")]) == 2
    assert "no such CLIP folder" in caplog.text


def test_evaluate_edit_scores_a_dataset_against_the_ground_truth(tmp_path, small_scene_dir, tiny_clip_dir):
    """No NeRF renders: the original frames score ~0 change; a night edit of them scores a high fidelity."""
    from dataloader import load_scene
    from tools.evaluate_edit import main

    scene = load_scene("synthetic", small_scene_dir)
    original = scene.original.numpy()
    night = to_uint8(INSTRUCTIONS["night"].apply(original / 255.0, None))
    run = tmp_path / "edit"
    run.mkdir()
    # made on two GPUs this machine lacks: scored here on --device (cpu) all the same
    (run / "config.txt").write_text(f"dataset_name = synthetic\ndatadir = {small_scene_dir}\nprompt = make it night\n"
                                    f"ckpt = {tmp_path / 'nerf'}\ndevice = cuda:0\nip2p_device = cuda:1\n")
    np.save(run / "edited_images.npy", night)
    assert main([str(run), "--renders", "none", "--clip_model", str(tiny_clip_dir)]) == 0
    report = json.loads((run / "eval" / "metrics.json").read_text())
    rows = report["rows"]
    assert report["flow"] == "ground truth" and report["depth"] == "ground truth"
    assert rows["original frames"]["psnr_vs_original"] > 100 and rows["original frames"]["ssim_vs_original"] == 1
    assert rows["edited dataset"]["fidelity_psnr"] > 45  # the exact target, up to uint8 rounding
    # the night edit is a pointwise map of consistent frames: as consistent, scaled by its darker colours
    assert rows["edited dataset"]["temporal_error"] < rows["original frames"]["temporal_error"]
    assert isinstance(rows["edited dataset"]["clip_direction"], float)
    assert (run / "eval" / "metrics.md").read_text().count("|") > 20 and (run / "eval" / "per_frame.png").is_file()
    shutil.rmtree(run / "eval")
