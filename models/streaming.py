"""Per-frame channel streaming of the stream TensoRF factors (``../shared/spec/stream-tensorf.md``, "The field").

Every plane/line factor stores ``C = n_comp + ceil((num_frames - 1) * ld)`` channels; at time ``t`` only
``n_comp`` of them are used. A new channel enters every ``1 / ld`` frames and an old one leaves; between two rows of
the table the entering channel is blended linearly with the one it replaces. ``0 < ld_per_frame <= 1``;
``ld_per_frame == 0`` turns streaming off (every stored channel is used at every time).

Grouped mode, ``ld_per_frame = k``, a whole number above 1 (most of the release's 50-frame configs use 2): the
stored channels are read in groups of ``m = 2k`` consecutive channels and streamed exactly as with
``ld_per_frame = 0.5``, on groups instead of channels: ``n_comp`` must be a multiple of ``m``, a factor stores
``n_comp + ceil((num_frames - 1) / 2) * m`` channels, and the live channels come out group-major.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from common.errors import UserError


class StreamingError(UserError, ValueError):
    """A streaming setting (``n_comp``, ``num_frames``, ``ld_per_frame``) cannot be used; the message says why."""


GROUPED_LD = 0.5  # grouped mode streams its groups like ld_per_frame = 0.5 streams channels


def check_ld_per_frame(ld_per_frame: float) -> float:
    """``ld_per_frame`` as a float: in ``[0, 1]``, or a whole number above 1 (grouped mode)."""
    ld = float(ld_per_frame)
    if ld < 0 or (ld > 1 and not ld.is_integer()):
        raise StreamingError(f"ld_per_frame = {ld_per_frame}: must be in [0, 1] (new channels per frame; 0 turns "
                             "streaming off) or a whole number k > 1 (grouped mode, groups of 2k channels, as the "
                             "release's ld_per_frame = 2 configs): fix ld_per_frame in the config")
    return ld


def group_size(ld_per_frame: float) -> int:
    """Channels per streamed group: ``2 * ld_per_frame`` in grouped mode (``ld_per_frame > 1``), else 1."""
    ld = check_ld_per_frame(ld_per_frame)
    return int(2 * ld) if ld > 1 else 1


def stored_channels(n_comp: int, num_frames: int, ld_per_frame: float) -> int:
    """Channels stored per factor: ``n_comp + ceil((num_frames - 1) * ld_per_frame)``, or in grouped mode
    ``n_comp + ceil((num_frames - 1) / 2) * m``."""
    m = group_size(ld_per_frame)
    if m > 1:
        return n_comp + math.ceil((num_frames - 1) * GROUPED_LD) * m
    return n_comp + math.ceil((num_frames - 1) * check_ld_per_frame(ld_per_frame))


def table_rows(num_frames: int, ld_per_frame: float) -> int:
    """Number of rows of the streaming table (0 without streaming); the same for every ``n_comp``."""
    ld = check_ld_per_frame(ld_per_frame)
    if ld == 0:
        return 0
    return len(channel_table(1, num_frames, GROUPED_LD if ld > 1 else ld))


def channel_table(n_comp: int, num_frames: int, ld_per_frame: float) -> list[tuple[list[int], list[int]]]:
    """Rows ``(idx, perm)`` of the streaming table (for ``0 < ld_per_frame <= 1``; grouped mode calls it with the
    group count and 0.5).

    ``idx = [blend_from, blend_to, rest...]`` indexes stored channels; ``perm`` orders the ``n_comp`` selected
    channels. Row ``r`` serves times in ``[r / R, (r + 1) / R)`` for ``R`` rows.
    """
    ld = check_ld_per_frame(ld_per_frame)
    if ld > 1:
        raise StreamingError(f"channel_table takes ld_per_frame <= 1, got {ld_per_frame}; grouped mode streams "
                             f"groups with ld_per_frame = {GROUPED_LD}")
    if n_comp < 1:
        raise StreamingError(f"streaming needs at least one channel per factor, got n_comp = {n_comp}")
    interval = int(1 / ld) if ld > 0 else 0
    base = list(range(1, n_comp))
    rows = [([0, n_comp] + list(range(1, n_comp)), list(range(n_comp)))]
    last = 0
    for frame in range(1, num_frames - 1):
        if interval == 0 or frame % interval:
            continue
        last = (last + 1) % n_comp
        prev_idx, prev_perm = rows[-1]
        ordered = [prev_idx[1:][p] for p in prev_perm]  # the channels in output order
        ordered.pop(last)
        rows.append(([min(prev_idx) + 1, max(prev_idx) + 1] + ordered, base[:last] + [0] + base[last:]))
    return rows


def row_and_blend(t: float, num_rows: int) -> tuple[int, float, float]:
    """Row used at time ``t`` and the blend weights ``(left, right)`` of its entering / leaving channel."""
    if t == 1:
        return num_rows - 1, 1.0, 0.0
    value = t * num_rows
    row = int(value)
    return row, value - row, row + 1 - value


@dataclass
class ChannelStream:
    """Picks the ``n_comp`` channels of a stored factor that are live at time ``t``.

    Args:
        n_comp: channels used per time.
        num_frames: frames the model was trained on.
        ld_per_frame: new channels per frame (see the module docstring).
    """

    n_comp: int
    num_frames: int
    ld_per_frame: float

    def __post_init__(self) -> None:
        self.enabled = check_ld_per_frame(self.ld_per_frame) > 0
        self.group = group_size(self.ld_per_frame)
        if self.n_comp % self.group:
            raise StreamingError(f"ld_per_frame = {self.ld_per_frame:g} reads channels in groups of {self.group}, "
                                 f"but a factor has {self.n_comp} channels (n_lamb_sigma / n_lamb_sh): every entry "
                                 f"must be divisible by {self.group}")
        ld = GROUPED_LD if self.group > 1 else self.ld_per_frame
        self.rows = channel_table(self.n_comp // self.group, self.num_frames, ld) if self.enabled else []
        self.stored = stored_channels(self.n_comp, self.num_frames, self.ld_per_frame) if self.enabled else self.n_comp
        needed = max((max(self._channels(idx)) for idx, _ in self.rows), default=-1) + 1
        if self.num_frames > 1 and needed > self.stored:  # (one frame: time 0 only, the entering channel unused)
            # the release's channel count and table disagree when 1 / ld_per_frame is not a whole number
            raise StreamingError(
                f"ld_per_frame = {self.ld_per_frame:g} with {self.num_frames} frames: the streaming table needs "
                f"{needed} channels per factor but {self.stored} are stored (a new channel every "
                f"int(1 / ld_per_frame) frames outruns ceil((num_frames - 1) * ld_per_frame)); use 1 / k "
                "(1, 0.5, 0.25, 0.2, 0.1, ...), 0, or a whole number above 1 in the config")
        self._index_cache: dict[tuple[int, torch.device], tuple[Tensor, Tensor, Tensor, Tensor]] = {}
        self._mix_cache: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    def _channels(self, groups: list[int]) -> list[int]:
        """Stored channel indices of ``groups`` (each group ``g`` is channels ``g·m .. g·m + m - 1``)."""
        m = self.group
        return [g * m + r for g in groups for r in range(m)]

    def _indices(self, row: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Channel index tensors of ``row`` on ``device``, made once: (leaving + rest, entering + rest, all, perm)."""
        key = (row, device)
        if key not in self._index_cache:
            idx, perm = self.rows[row]
            lists = ([idx[0]] + idx[2:], idx[1:], idx, perm)
            self._index_cache[key] = tuple(torch.tensor(self._channels(v), dtype=torch.long, device=device)
                                           for v in lists)
        return self._index_cache[key]

    def select(self, stored: Tensor, t: float) -> Tensor:
        """Live channels at time ``t``.

        Args:
            stored: ``[1, C, a, b]`` a stored plane or line.
            t: time in [0, 1] (a Python float: the row choice must not depend on the device's rounding).

        Returns:
            ``[1, n_comp, a, b]``.
        """
        if not self.enabled:
            return stored
        row, left, right = row_and_blend(float(t), len(self.rows))
        leaving, entering, both, perm = self._indices(row, stored.device)
        if left == 0:
            feat = stored.index_select(1, leaving)
        elif right == 0:
            feat = stored.index_select(1, entering)
        else:
            m = self.group
            feat = stored.index_select(1, both)
            feat = torch.cat([feat[:, :m] * right + feat[:, m:2 * m] * left, feat[:, 2 * m:]], dim=1)
        return feat.index_select(1, perm)

    def mix(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`select` at time ``t`` as stored channel indices and weights: live channel ``k`` is ``weights[k, 0]``
        x stored channel ``source[k, 0]`` + ``weights[k, 1]`` x ``source[k, 1]`` (the second weight 0 unless ``k`` is
        a blend of an entering and a leaving channel).

        Returns:
            ``source [n_comp, 2]`` int64, ``weights [n_comp, 2]`` float32 (made once per time).
        """
        key = float(t)
        if key not in self._mix_cache:
            # select applied to the identity: row k holds the weights of live channel k over the stored channels
            table = self.select(torch.eye(self.stored).view(1, self.stored, self.stored, 1), key)[0, :, :, 0].numpy()
            source = np.zeros((table.shape[0], 2), dtype=np.int64)
            weights = np.zeros((table.shape[0], 2), dtype=np.float32)
            for k, row in enumerate(table):
                used = np.flatnonzero(row)
                source[k] = used[0], used[-1]
                weights[k, :len(used)] = row[used]
            self._mix_cache[key] = source, weights
        return self._mix_cache[key]

    def reachable(self) -> set[int]:
        """Stored channel indices used at some time (for checks: every stored channel should be)."""
        if not self.enabled:
            return set(range(self.stored))
        return {c for idx, _ in self.rows for c in self._channels(idx)}
