"""The per-frame channel-streaming table (models/streaming.py)."""

from __future__ import annotations

import pytest
import torch

from models.streaming import ChannelStream, StreamingError, channel_table, stored_channels


def numbered(channels: int) -> torch.Tensor:
    """A stored factor ``[1, C, 1, 1]`` whose channel c holds the value c."""
    return torch.arange(channels, dtype=torch.float32).view(1, channels, 1, 1)


def picked(stream: ChannelStream, t: float) -> list[float]:
    return stream.select(numbered(stream.stored), t).flatten().tolist()


def test_table_rows_by_hand():
    # 3 channels, 5 frames, a new channel every 2 frames: rows change at frame 2 only
    rows = channel_table(3, 5, 0.5)
    assert rows == [([0, 3, 1, 2], [0, 1, 2]), ([1, 4, 3, 2], [1, 0, 2])]
    assert stored_channels(3, 5, 0.5) == 5


def test_frame0_and_frame1_pick_expected_channels():
    stream = ChannelStream(3, 5, 0.5)
    assert picked(stream, 0.0) == [0, 1, 2]  # frame 0: the first n_comp channels
    assert picked(stream, 0.25) == [1.5, 1, 2]  # frame 1 of 5: channel 0 half-way to channel 3
    assert picked(stream, 0.5) == [3, 1, 2]  # frame 2: channel 3 has replaced channel 0
    assert picked(stream, 1.0) == [3, 4, 2]  # last frame: channel 4 has replaced channel 1


def test_between_rows_blends_linearly():
    stream = ChannelStream(3, 5, 0.5)
    for t in (0.05, 0.1, 0.2, 0.3, 0.45):
        first = picked(stream, t)[0]
        assert first == pytest.approx((1 - 2 * t) * 0 + 2 * t * 3, abs=1e-6)
    # second row: channel 1 (position 1) blends into channel 4
    assert picked(stream, 0.75) == pytest.approx([3, 2.5, 2])


@pytest.mark.parametrize("n_comp,num_frames,ld", [(16, 50, 0.5), (4, 50, 0.2), (48, 300, 0.1), (12, 300, 1.0)])
def test_every_stored_channel_is_reachable(n_comp, num_frames, ld):
    stream = ChannelStream(n_comp, num_frames, ld)
    assert stream.reachable() == set(range(stream.stored))
    for t in (0.0, 0.37, 1.0):
        assert stream.select(numbered(stream.stored), t).shape == (1, n_comp, 1, 1)


def test_release_channel_counts():
    assert stored_channels(16, 50, 0.5) == 16 + 25
    assert stored_channels(48, 300, 0.1) == 48 + 30


def test_no_streaming_uses_all_channels():
    stream = ChannelStream(3, 10, 0)
    assert stream.stored == 3 and picked(stream, 0.6) == [0, 1, 2]


def test_bad_settings_are_named():
    with pytest.raises(StreamingError, match="ld_per_frame = 1.5: must be in \\[0, 1\\].*or a whole number"):
        stored_channels(6, 10, 1.5)
    with pytest.raises(StreamingError, match="ld_per_frame = -0.5"):
        stored_channels(8, 10, -0.5)
    with pytest.raises(StreamingError, match="groups of 4, but a factor has 6 channels.*divisible by 4"):
        ChannelStream(6, 10, 2)


def test_grouped_mode_counts_match_the_spec_example():
    # 16 frames, n_lamb_sigma = [16, 4, 4], ld_per_frame = 2: groups of 4; plane 0 stores 16 + 8 * 4 channels
    stream = ChannelStream(16, 16, 2)
    assert stream.group == 4 and stream.stored == 48 == stored_channels(16, 16, 2)
    assert stored_channels(4, 16, 2) == 4 + 8 * 4
    assert len(stream.rows) == len(ChannelStream(4, 16, 0.5).rows)
    assert stream.reachable() == set(range(48))


@pytest.mark.parametrize("n_comp,num_frames,ld", [(16, 16, 2), (8, 50, 2), (12, 9, 3)])
def test_grouped_mode_streams_whole_groups_like_half_a_channel_per_frame(n_comp, num_frames, ld):
    """Channels constant within each group: the grouped pick is the ld 0.5 pick of the groups, each repeated m times."""
    grouped = ChannelStream(n_comp, num_frames, ld)
    m = grouped.group
    single = ChannelStream(n_comp // m, num_frames, 0.5)
    torch.manual_seed(0)
    groups = torch.randn(1, grouped.stored // m, 5, 3)
    stored = groups.repeat_interleave(m, dim=1)
    for t in [0.0, 0.13, 0.5, 0.77, 0.999, 1.0]:
        expected = single.select(groups, t).repeat_interleave(m, dim=1)
        assert torch.allclose(grouped.select(stored, t), expected), t
    # and within a group the channel order is kept
    ramp = torch.arange(grouped.stored, dtype=torch.float32).reshape(1, -1, 1, 1)
    picked = grouped.select(ramp, 0.0).flatten().tolist()
    assert all(picked[g * m + r] == picked[g * m] + r for g in range(n_comp // m) for r in range(m))


@pytest.mark.parametrize("n_comp,num_frames,ld", [(3, 5, 0.5), (16, 50, 0.5), (4, 50, 0.2), (48, 300, 0.1),
                                                  (12, 30, 1.0)])
def test_rows_join_continuously(n_comp, num_frames, ld):
    """Where a row ends, the next starts with the channels it blended into (the occupancy grid's bound over time
    relies on it)."""
    rows = channel_table(n_comp, num_frames, ld)
    for (idx, perm), (next_idx, next_perm) in zip(rows, rows[1:]):
        entering = [idx[1:][p] for p in perm]
        leaving_next = [([next_idx[0]] + next_idx[2:])[p] for p in next_perm]
        assert entering == leaving_next


def test_fractions_whose_table_outruns_the_stored_channels_are_named():
    # 0.7 adds a channel every int(1 / 0.7) = 1 frame: the table reaches channel 4 + 8 + 1 = 13, but 4 + ceil(9 * 0.7)
    # = 11 are stored
    with pytest.raises(StreamingError, match="= 0.7 with 10 frames: .* needs 13 channels .* 11 are stored"):
        ChannelStream(4, 10, 0.7)
    for ld in (1, 0.5, 0.25, 0.2, 0.1, 1 / 3):  # 1 / k: every stored channel is reachable and none beyond
        for frames in (2, 3, 10, 50, 300):
            stream = ChannelStream(4, frames, ld)
            assert max(stream.reachable()) < stream.stored
            for t in (0.0, 0.37, 1.0):
                assert stream.select(torch.zeros(1, stream.stored, 2, 1), t).shape == (1, 4, 2, 1)
