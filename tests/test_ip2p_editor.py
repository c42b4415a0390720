"""The sequence editor on a tiny random IP2P pipeline (offline, CPU), and loading weights."""

from __future__ import annotations

import huggingface_hub.constants
import pytest
import torch

from ip2p_models import IP2PEditor, IP2PWeightsError, install_anchor_attention, load_ip2p, remove_anchor_attention
from ip2p_models.sequence_editor import chunk_frames

FRAMES, H, W = 4, 48, 64
STEPS = 4
# Measured on the tiny model (float32, CPU): re-running or re-chunking changes outputs by <= 5e-6; anchoring
# changes each non-anchor frame by 1e-2 to 2e-2 (max abs) versus per-frame editing.
SAME = 1e-4
DIFFERENT = 1e-3


@pytest.fixture(scope="module")
def editor(tiny_ip2p_dir) -> IP2PEditor:
    return load_ip2p(str(tiny_ip2p_dir), device="cpu")


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    torch.manual_seed(0)
    # smooth, distinct frames (a moving gradient plus noise) in [0, 1]
    ys, xs = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    base = torch.stack([torch.stack([xs + 0.1 * f, ys, 1 - xs]) for f in range(FRAMES)]) * 0.8
    return (base + 0.1 * torch.rand(FRAMES, 3, H, W)).clamp(0, 1)


def edit(editor, frames, **kwargs):
    kwargs = {"diffusion_steps": STEPS, "seed": 0, **kwargs}
    return editor.edit_sequence(frames, frames, "make it snowy", **kwargs)


def test_chunks_keep_the_anchor():
    assert chunk_frames(5, None) == [[0, 1, 2, 3, 4]]
    assert chunk_frames(5, 8) == [[0, 1, 2, 3, 4]]
    assert chunk_frames(7, 3) == [[0, 1, 2], [0, 3, 4], [0, 5, 6]]
    assert chunk_frames(6, 3) == [[0, 1, 2], [0, 3, 4], [0, 5]]
    assert chunk_frames(3, 1) == [[0], [1], [2]]
    with pytest.raises(ValueError, match="sequence_length"):
        chunk_frames(3, 0)


@pytest.mark.parametrize(("init", "T"), [("noise", 1000), ("noisy_latent", 600), ("ddim_inv", 700)])
def test_each_init_gives_shape_range_and_is_deterministic(editor, frames, init, T):
    out = edit(editor, frames, init=init, T=T)
    assert out.shape == frames.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(edit(editor, frames, init=init, T=T), out, atol=SAME, rtol=0)
    if init != "ddim_inv":  # inversion is deterministic; the seed only draws noise
        assert (edit(editor, frames, init=init, T=T, seed=1) - out).abs().max() > DIFFERENT


def test_sizes_not_divisible_by_8_come_back_at_their_size(editor):
    images = torch.rand(2, 3, 37, 50)
    out = editor.edit_sequence(images, images, "x", diffusion_steps=2, seed=0)
    assert out.shape == (2, 3, 37, 50)


def test_anchoring_changes_the_edit_but_not_the_anchor(editor, frames):
    anchored = edit(editor, frames)
    per_frame = edit(editor, frames, sequence_length=1)
    # the anchor attends only to itself, so it is edited exactly as on its own
    torch.testing.assert_close(anchored[0], per_frame[0], atol=SAME, rtol=0)
    assert (anchored[1:] - per_frame[1:]).abs().amax(dim=(1, 2, 3)).min() > DIFFERENT


def test_chunks_with_the_same_anchor_equal_one_batch(editor, frames):
    torch.testing.assert_close(edit(editor, frames, sequence_length=2), edit(editor, frames), atol=SAME, rtol=0)


def test_edit_image_is_stock_instruct_pix2pix(editor, frames):
    image = frames[1]
    ours = editor.edit_image(image, image, "make it snowy", diffusion_steps=STEPS, seed=3)
    noise = torch.randn(1, 4, H // 8, W // 8, generator=torch.Generator().manual_seed(3))
    pipe = editor.pipe
    stock_scheduler, pipe.scheduler = pipe.scheduler, editor.scheduler
    remove_anchor_attention(pipe.unet)
    try:
        stock = pipe("make it snowy", image=image[None], num_inference_steps=STEPS, guidance_scale=10.5,
                     image_guidance_scale=1.5, latents=noise, output_type="pt").images[0]
    finally:
        pipe.scheduler = stock_scheduler
        install_anchor_attention(pipe.unet, editor.processor)
    torch.testing.assert_close(ours, stock, atol=SAME, rtol=0)


def test_batched_sequences_are_independent(editor, frames):
    batch = torch.stack([frames, frames.flip(0)])
    out = editor.edit_sequences(batch, batch, "x", diffusion_steps=STEPS, seed=0)
    assert out.shape == batch.shape
    other = batch.clone()
    other[1] = torch.rand_like(other[1])
    changed = editor.edit_sequences(other, other, "x", diffusion_steps=STEPS, seed=0)
    torch.testing.assert_close(changed[0], out[0], atol=SAME, rtol=0)


def test_unet_evaluations_are_counted(editor, frames):
    start = editor.unet_evals
    edit(editor, frames)
    assert editor.unet_evals - start == FRAMES * 3 * STEPS
    start = editor.unet_evals
    edit(editor, frames, init="ddim_inv", T=500)
    assert editor.unet_evals - start == FRAMES * STEPS + FRAMES * 3 * STEPS  # inversion uses one branch
    start = editor.unet_evals
    edit(editor, frames, sequence_length=2)  # chunks [0, 1], [0, 2], [0, 3]: the anchor is repeated
    assert editor.unet_evals - start == 6 * 3 * STEPS


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"init": "sdedit"}, "init must be one of"),
    ({"init": "noisy_latent", "T": 0}, "T"),
    ({"init": "noisy_latent", "T": 3, "diffusion_steps": 4}, "diffusion_steps"),
])
def test_bad_arguments_are_named(editor, frames, kwargs, message):
    with pytest.raises(ValueError, match=message):
        edit(editor, frames, **kwargs)


def test_mismatched_shapes_are_named(editor, frames):
    with pytest.raises(ValueError, match="images_cond"):
        editor.edit_sequence(frames, frames[:2], "x")
    with pytest.raises(ValueError, match=r"\[F, 3, H, W\]"):
        editor.edit_sequence(frames[0], frames[0], "x")


def test_attention_slicing_gives_the_same_edit(tiny_ip2p_dir, frames):
    sliced = load_ip2p(str(tiny_ip2p_dir), device="cpu", attention_slicing=True)
    assert sliced.processor.slice_size == 1
    plain = load_ip2p(str(tiny_ip2p_dir), device="cpu")
    torch.testing.assert_close(edit(sliced, frames), edit(plain, frames), atol=SAME, rtol=0)


# --- loading -------------------------------------------------------------------------------------------------

@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and an empty hub cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))


def test_local_folder_loads_offline(offline, tiny_ip2p_dir):
    editor = load_ip2p(str(tiny_ip2p_dir), device="cpu", full_precision=True)
    assert editor.dtype == torch.float32 and editor.unet.config.in_channels == 8
    assert type(editor.scheduler).__name__ == "DDIMScheduler"


def test_missing_folder_says_so(offline, tmp_path):
    with pytest.raises(IP2PWeightsError, match="no such folder") as err:
        load_ip2p(str(tmp_path / "no" / "weights"))
    assert "hf download" in str(err.value)


def test_folder_without_model_index_says_so(offline, tmp_path):
    with pytest.raises(IP2PWeightsError, match="model_index.json"):
        load_ip2p(str(tmp_path))


def test_unreachable_hub_id_says_how_to_get_the_weights(offline):
    with pytest.raises(IP2PWeightsError, match="could not be downloaded") as err:
        load_ip2p("instruct4d-tests/no-such-model")
    assert "hf download instruct4d-tests/no-such-model --local-dir" in str(err.value)

