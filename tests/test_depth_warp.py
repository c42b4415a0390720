"""Depth warping between cameras with the synthetic scene's ground-truth depth and cameras."""

from __future__ import annotations

import pytest
import torch

from dataloader.cameras import points_to_ndc_depth, project_points
from ip2p_models.depth_warp import View, combine_warps, depth_to_points, depth_warp, depth_warp_views

# (frame, target camera, source camera)
TRIPLES = [(0, 1, 0), (0, 5, 0), (5, 4, 0), (3, 3, 1)]


def view(truth: dict, frame: int, cam: int, ndc: bool = False) -> View:
    depth = truth["depth"][frame, cam]
    if ndc:  # the NDC ray parameter of the same points (the source world has its near plane at z = -1)
        points = depth_to_points(depth, truth["K"][cam], truth["c2w"][cam])
        depth = points_to_ndc_depth(points.reshape(-1, 3)).reshape(depth.shape)
    return View(truth["frames"][frame, cam], depth, truth["K"][cam], truth["c2w"][cam])


def visible_in_source(truth: dict, frame: int, target: int, source: int) -> torch.Tensor:
    """Ground-truth visibility of the target's pixels in the source: z-buffer test at the nearest source pixel."""
    points = depth_to_points(truth["depth"][frame, target], truth["K"][target], truth["c2w"][target])
    xy, z = project_points(points, truth["K"][source], truth["c2w"][source])
    H, W = points.shape[:2]
    xi, yi = xy[..., 0].round().long(), xy[..., 1].round().long()
    inside = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
    z_source = truth["depth"][frame, source][yi.clamp(0, H - 1), xi.clamp(0, W - 1)]
    return inside & ((z_source - z).abs() < 0.01 * z)


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    return float(-10 * ((a - b) ** 2).mean(0)[mask].mean().clamp_min(1e-12).log10())


@pytest.mark.parametrize("ndc", [False, True])
def test_depth_warp_reconstructs_visible_pixels_and_masks_occlusions(synthetic_truth, ndc):
    # measured (world and NDC alike): PSNR 40.2-44.0 dB on the kept pixels; 90-96% of the pixels the source
    # does not see are masked; 2.7-3.0% of the visible ones are dropped (depth edges)
    for frame, t, s in TRIPLES:
        image, mask = depth_warp(view(synthetic_truth, frame, t, ndc), view(synthetic_truth, frame, s, ndc), ndc=ndc)
        visible = visible_in_source(synthetic_truth, frame, t, s)
        assert psnr(image, synthetic_truth["frames"][frame, t], mask) > 38.0, (frame, t, s)
        assert (~mask)[~visible].float().mean() > 0.85, (frame, t, s)
        assert (~mask)[visible].float().mean() < 0.05, (frame, t, s)
        assert torch.all(image[:, ~mask] == 0)


def test_ndc_and_world_depth_give_the_same_warp(synthetic_truth):
    world = depth_warp(view(synthetic_truth, 2, 1), view(synthetic_truth, 2, 0))
    ndc = depth_warp(view(synthetic_truth, 2, 1, ndc=True), view(synthetic_truth, 2, 0, ndc=True), ndc=True)
    assert (world[1] != ndc[1]).float().mean() < 0.001
    both = world[1] & ndc[1]
    assert torch.allclose(world[0][:, both], ndc[0][:, both], atol=1e-3)


def test_occluder_in_front_of_the_source_is_masked(synthetic_truth):
    # the source sees a wall 1 unit in front of what the target sees: nothing of the target is visible
    target, source = view(synthetic_truth, 0, 1), view(synthetic_truth, 0, 0)
    blocked = View(source.image, source.depth.clamp(max=2.0), source.K, source.c2w)
    _, mask = depth_warp(target, blocked)
    assert mask.float().mean() < 0.01


def test_several_sources_are_weighted_by_coverage():
    white, black = torch.ones(3, 2, 2), torch.zeros(3, 2, 2)
    half = torch.tensor([[True, True], [False, False]])
    image, mask = combine_warps([white, black], [half, torch.ones(2, 2, dtype=torch.bool)])
    assert mask.all()
    # top row: weights 0.5 (white) and 1 (black) -> 1/3; bottom row: black only
    assert torch.allclose(image[:, 0], torch.full((3, 2), 1 / 3)) and torch.all(image[:, 1] == 0)
    image, mask = combine_warps([white], [half])
    assert torch.equal(mask, half) and torch.all(image[:, ~half] == 0)


def test_more_sources_cover_more_of_the_target(synthetic_truth):
    target = view(synthetic_truth, 0, 2)
    sources = [view(synthetic_truth, 0, c) for c in (0, 1, 4)]
    _, single = depth_warp(target, sources[0])
    image, mask = depth_warp_views(target, sources)
    assert mask.float().mean() > single.float().mean() + 0.05
    assert psnr(image, synthetic_truth["frames"][0, 2], mask) > 38.0
