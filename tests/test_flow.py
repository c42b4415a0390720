"""Flow backends: DIS against ground truth, RAFT weight conversion from the original layout, padding."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ip2p_models.flow import DISFlow, InputPadder, RAFTFlow, load_raft, make_flow, to_chw
from ip2p_models.raft_convert import (
    RaftWeightsError,
    build_torchvision_raft,
    original_to_torchvision,
    torchvision_to_original,
)

SPEC = Path(__file__).parent / "assets" / "raft-small-original-keys.txt"  # keys of the original raft-small.pth


def test_dis_end_point_error_on_visible_pixels(synthetic_truth):
    # measured: EPE 0.13-0.26 px per pair (mean 0.19) on non-occluded pixels, GT flow up to 8 px
    flow = DISFlow()
    epes = []
    for c in (0, 3, 5):
        for f in (0, 5, 10):
            est = flow(synthetic_truth["frames"][f, c], synthetic_truth["frames"][f + 1, c])
            error = (est - synthetic_truth["flow_fw"][f, c]).norm(dim=-1)
            epes.append(error[~synthetic_truth["occ_fw"][f, c]].mean())
    epes = torch.stack(epes)
    assert epes.mean() < 0.3 and epes.max() < 0.45, epes


def test_flow_accepts_chw_hwc_uint8_and_numpy(synthetic_truth):
    a, b = synthetic_truth["frames"][0, 0], synthetic_truth["frames"][1, 0]
    flow = DISFlow()
    reference = flow(a, b)
    assert reference.shape == (a.shape[1], a.shape[2], 2) and reference.dtype == torch.float32
    hwc_uint8 = [(x.permute(1, 2, 0) * 255).round().byte().numpy() for x in (a, b)]
    assert torch.equal(flow(a.permute(1, 2, 0), b.permute(1, 2, 0)), reference)
    assert torch.equal(flow(*hwc_uint8), reference)
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        to_chw(torch.zeros(4, 5))


def test_make_flow_defaults_to_dis_and_rejects_unknown_backends():
    assert make_flow().name == "dis"
    with pytest.raises(ValueError, match="choose one of"):
        make_flow("farneback")
    with pytest.raises(FileNotFoundError, match="--flow dis"):
        make_flow("raft", raft_ckpt="/nonexistent/raft-things.pth")


@pytest.mark.parametrize("size", [(48, 64), (37, 50), (1, 9)])
@pytest.mark.parametrize("min_size", [0, 128])
def test_input_padder_round_trips(size, min_size):
    images = torch.rand(2, 3, *size)
    padder = InputPadder(*size, min_size=min_size)
    (padded,) = padder.pad(images)
    assert padded.shape[-2] % 8 == 0 and padded.shape[-1] % 8 == 0
    assert min(padded.shape[-2:]) >= min_size
    assert torch.equal(padder.unpad(padded), images)


def test_original_small_layout_matches_the_spec():
    spec = [line.split(" ", 1) for line in SPEC.read_text().splitlines() if line.startswith("module.")]
    original = torchvision_to_original(build_torchvision_raft("small").state_dict())
    assert list(original) == [name for name, _ in spec]
    for name, shape in spec:
        assert tuple(original[name].shape) == tuple(int(n) for n in re.findall(r"\d+", shape)), name


@pytest.mark.parametrize("variant", ["small", "large"])
def test_original_checkpoint_converts_and_gives_identical_flow(tmp_path, variant):
    torch.manual_seed(0)
    model = build_torchvision_raft(variant).eval()
    path = tmp_path / f"raft-{variant}.pth"
    torch.save(torchvision_to_original(model.state_dict()), path)  # as users' raft-things.pth / raft-small.pth

    loaded, detected = load_raft(path)
    assert detected == variant
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    a, b = torch.rand(3, 75, 130), torch.rand(3, 75, 130)  # padded (to 8k, >= 128) and cropped back
    expected = RAFTFlow(model, variant, iters=2)(a, b)
    got = make_flow("raft", raft_ckpt=path, iters=2)(a, b)
    assert got.shape == (75, 130, 2)
    assert torch.equal(got, expected)


def test_convert_tool_writes_a_torchvision_state_dict(tmp_path):
    from tools.convert_raft_weights import main

    model = build_torchvision_raft("small")
    torch.save(torchvision_to_original(model.state_dict()), tmp_path / "raft-small.pth")
    main([str(tmp_path / "raft-small.pth"), str(tmp_path / "out" / "raft_small_tv.pth")])
    converted = torch.load(tmp_path / "out" / "raft_small_tv.pth", weights_only=True)
    fresh = build_torchvision_raft("small")
    fresh.load_state_dict(converted)  # strict
    assert all(torch.equal(converted[k], v) for k, v in model.state_dict().items())
    with pytest.raises(SystemExit, match="not in the original RAFT layout"):
        main([str(tmp_path / "out" / "raft_small_tv.pth"), str(tmp_path / "again.pth")])
    (tmp_path / "cut.pth").write_bytes((tmp_path / "raft-small.pth").read_bytes()[:5000])  # a cut-off download
    with pytest.raises(SystemExit, match="cut.pth is not a readable PyTorch checkpoint"):
        main([str(tmp_path / "cut.pth"), str(tmp_path / "again.pth")])
    assert not (tmp_path / "again.pth").exists()


def test_conversion_errors_name_the_key():
    original = torchvision_to_original(build_torchvision_raft("small").state_dict())
    bad = dict(original)
    bad["module.fnet.conv1.weight"] = torch.zeros(16, 3, 7, 7)
    with pytest.raises(RaftWeightsError, match=r"fnet\.conv1\.weight.*\(16, 3, 7, 7\)"):
        original_to_torchvision(bad, source="raft-small.pth")
    incomplete = {k: v for k, v in original.items() if "flow_head" not in k}
    with pytest.raises(RaftWeightsError, match="missing"):
        original_to_torchvision(incomplete)
    with pytest.raises(RaftWeightsError, match="large from small"):
        original_to_torchvision({"module.fnet.conv1.weight": torch.zeros(1)})


def test_torchvision_layout_file_loads_directly(tmp_path):
    model = build_torchvision_raft("small")
    torch.save({"state_dict": model.state_dict()}, tmp_path / "tv.pth")
    loaded, variant = load_raft(tmp_path / "tv.pth")
    assert variant == "small"
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    flow = RAFTFlow(loaded, variant, iters=1)(torch.rand(3, 128, 128), torch.rand(3, 128, 128))
    assert np.isfinite(flow.numpy()).all()
