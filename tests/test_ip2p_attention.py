"""Anchor-aware attention processor: math on random tensors against reference implementations, and installation."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from ip2p_models.anchor_attention import (
    AnchorAttnProcessor,
    anchor_context,
    batch_to_frames,
    find_anchor_processor,
    install_anchor_attention,
    remove_anchor_attention,
)

TOKENS, WIDTH, HEADS = 12, 32, 4
ATOL = 1e-5  # float32; measured differences are <= 1e-6


@pytest.fixture(scope="module")
def attn() -> Attention:
    torch.manual_seed(0)
    return Attention(query_dim=WIDTH, heads=HEADS, dim_head=WIDTH // HEADS, out_bias=True).eval()


def anchor_out(attn: Attention, x: torch.Tensor, num_frames: int, slice_size: int | None = None) -> torch.Tensor:
    with torch.no_grad():
        return AnchorAttnProcessor(num_frames, slice_size)(attn, x)


def reference(attn: Attention, x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Frame by frame, with explicitly concatenated [anchor, frame] keys/values and softmax attention."""
    outs = []
    with torch.no_grad():
        for b in range(x.shape[0]):
            anchor = x[b - b % num_frames]
            context = torch.cat([anchor, x[b]])  # [2·tokens, width]
            q = attn.to_q(x[b]).view(TOKENS, HEADS, -1).transpose(0, 1)
            k = attn.to_k(context).view(2 * TOKENS, HEADS, -1).transpose(0, 1)
            v = attn.to_v(context).view(2 * TOKENS, HEADS, -1).transpose(0, 1)
            weights = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1)
            outs.append(attn.to_out[0]((weights @ v).transpose(0, 1).reshape(TOKENS, WIDTH)))
    return torch.stack(outs)


def test_reshape_helpers_group_contiguous_frames():
    x = torch.arange(6.0)[:, None, None].expand(6, 2, 1)  # item b holds value b
    assert batch_to_frames(x, 3)[1, 0, 0, 0] == 3
    ctx = anchor_context(x, 3)  # [6, 4, 1]
    assert ctx[:, :2, 0].tolist() == [[0, 0], [0, 0], [0, 0], [3, 3], [3, 3], [3, 3]]
    assert ctx[:, 2:, 0].tolist() == [[b, b] for b in range(6)]
    with pytest.raises(ValueError, match="num_frames=4"):
        batch_to_frames(x, 4)


def test_one_frame_equals_stock_attention(attn):
    x = torch.randn(5, TOKENS, WIDTH)
    with torch.no_grad():
        stock = AttnProcessor2_0()(attn, x)
    torch.testing.assert_close(anchor_out(attn, x, 1), stock, atol=ATOL, rtol=0)


def test_matches_explicit_anchor_concatenation(attn):
    x = torch.randn(6, TOKENS, WIDTH)
    torch.testing.assert_close(anchor_out(attn, x, 6), reference(attn, x, 6), atol=ATOL, rtol=0)
    torch.testing.assert_close(anchor_out(attn, x, 3), reference(attn, x, 3), atol=ATOL, rtol=0)


def test_anchor_output_does_not_depend_on_other_frames(attn):
    x = torch.randn(5, TOKENS, WIDTH)
    y = x.clone()
    y[1:] = torch.randn(4, TOKENS, WIDTH)
    torch.testing.assert_close(anchor_out(attn, x, 5)[0], anchor_out(attn, y, 5)[0], atol=ATOL, rtol=0)
    # and it is plain self-attention of frame 0 alone
    with torch.no_grad():
        alone = AttnProcessor2_0()(attn, x[:1])
    torch.testing.assert_close(anchor_out(attn, x, 5)[:1], alone, atol=ATOL, rtol=0)


@pytest.mark.parametrize("frame", [1, 2, 4])
def test_frame_depends_only_on_anchor_and_itself(attn, frame):
    x = torch.randn(5, TOKENS, WIDTH)
    base = anchor_out(attn, x, 5)[frame]
    for j in range(5):
        y = x.clone()
        y[j] += torch.randn(TOKENS, WIDTH)
        changed = (anchor_out(attn, y, 5)[frame] - base).abs().max().item()
        if j in (0, frame):
            assert changed > 1e-3, f"frame {frame} ignores frame {j}"
        else:
            assert changed <= ATOL, f"frame {frame} depends on frame {j} ({changed:.2e})"


def test_cfg_branches_are_separate_sequences(attn):
    # batch laid out [branch, frame]: 3 guidance branches of 4 frames, each branch anchored on its own frame 0
    frames = 4
    x = torch.randn(3 * frames, TOKENS, WIDTH)
    out = anchor_out(attn, x, frames)
    torch.testing.assert_close(out, reference(attn, x, frames), atol=ATOL, rtol=0)
    y = x.clone()
    y[frames:2 * frames] = torch.randn(frames, TOKENS, WIDTH)  # change the whole image-only branch
    changed = anchor_out(attn, y, frames)
    torch.testing.assert_close(changed[:frames], out[:frames], atol=ATOL, rtol=0)
    torch.testing.assert_close(changed[2 * frames:], out[2 * frames:], atol=ATOL, rtol=0)


def test_slicing_gives_the_same_result(attn):
    x = torch.randn(6, TOKENS, WIDTH)
    torch.testing.assert_close(anchor_out(attn, x, 3, slice_size=2), anchor_out(attn, x, 3), atol=ATOL, rtol=0)


def test_four_dim_hidden_states(attn):
    x = torch.randn(4, TOKENS, WIDTH)
    spatial = x.transpose(1, 2).reshape(4, WIDTH, 3, 4)
    out = anchor_out(attn, spatial, 2)
    torch.testing.assert_close(out.reshape(4, WIDTH, TOKENS).transpose(1, 2), anchor_out(attn, x, 2), atol=ATOL,
                               rtol=0)


def test_refuses_cross_attention(attn):
    with pytest.raises(ValueError, match="attn1"):
        AnchorAttnProcessor(2)(attn, torch.randn(2, TOKENS, WIDTH), encoder_hidden_states=torch.randn(2, 7, WIDTH))


@pytest.fixture(scope="module")
def unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, in_channels=8, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=8, norm_num_groups=16,
    ).eval()


def test_install_touches_self_attention_only_and_remove_restores(unet):
    before = unet.attn_processors
    processor = install_anchor_attention(unet)
    after = unet.attn_processors
    assert find_anchor_processor(unet) is processor
    for name, p in after.items():
        if name.endswith("attn1.processor"):
            assert p is processor
        else:
            assert p is before[name]  # cross-attention untouched
    with pytest.raises(RuntimeError, match="already installed"):
        install_anchor_attention(unet)
    remove_anchor_attention(unet)
    assert all(p is before[name] for name, p in unet.attn_processors.items())
    assert find_anchor_processor(unet) is None


def test_unet_with_one_frame_equals_stock_unet(unet):
    torch.manual_seed(1)
    sample, text = torch.randn(3, 8, 8, 8), torch.randn(3, 5, 16)
    with torch.no_grad():
        stock = unet(sample, 10, encoder_hidden_states=text).sample
        processor = install_anchor_attention(unet)
        try:
            anchored_1 = unet(sample, 10, encoder_hidden_states=text).sample
            with processor.frames(3):
                anchored_3 = unet(sample, 10, encoder_hidden_states=text).sample
        finally:
            remove_anchor_attention(unet)
    torch.testing.assert_close(anchored_1, stock, atol=ATOL, rtol=0)
    torch.testing.assert_close(anchored_3[0], stock[0], atol=ATOL, rtol=0)  # the anchor sees only itself
    assert (anchored_3[1:] - stock[1:]).abs().max() > 1e-4  # the others see the anchor
