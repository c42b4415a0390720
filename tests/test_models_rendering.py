"""Compositing and ray sampling (models/rendering.py, models/sampling.py) with answers known by hand."""

from __future__ import annotations

import math

import pytest
import torch

from models.compositing import (
    alpha_weights,
    anchor_weights,
    composite_depth,
    composite_rgb,
    distortion,
    shading_anchors,
)
from models.sampling import next_distances, steps_box, steps_ndc

BOX = torch.tensor([[-1.5, -1.67, -1.0], [1.5, 1.67, 1.0]])


def test_uniform_weights_over_white_colour_give_one():
    weights = torch.full((2, 4), 0.25)
    rgb = torch.ones(2, 4, 3)
    assert torch.allclose(composite_rgb(weights, rgb, white_bg=False), torch.ones(2, 3))
    assert torch.allclose(composite_rgb(weights, rgb, white_bg=True), torch.ones(2, 3))


def test_opaque_first_sample_takes_all_weight():
    sigma = torch.tensor([[1e4, 5.0, 5.0]])
    _, weights = alpha_weights(sigma, torch.ones(1, 3))
    assert weights[0, 0] == pytest.approx(1.0)
    assert weights[0, 1:].abs().max() < 1e-8
    z = torch.tensor([[0.2, 0.5, 0.9]])
    assert composite_depth(weights, z, torch.tensor([7.0])).item() == pytest.approx(0.2)


def test_two_half_opaque_samples():
    sigma = torch.full((1, 2), math.log(2.0))  # alpha = 1/2 each
    alpha, weights = alpha_weights(sigma, torch.ones(1, 2))
    assert torch.allclose(alpha, torch.tensor([[0.5, 0.5]]))
    assert torch.allclose(weights, torch.tensor([[0.5, 0.25]]))
    rgb = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    assert torch.allclose(composite_rgb(weights, rgb, white_bg=False), torch.tensor([[0.5, 0.25, 0.0]]))
    assert torch.allclose(composite_rgb(weights, rgb, white_bg=True), torch.tensor([[0.75, 0.5, 0.25]]))


def test_empty_ray():
    _, weights = alpha_weights(torch.zeros(1, 5), torch.ones(1, 5))
    assert weights.abs().max() == 0
    assert composite_rgb(weights, torch.rand(1, 5, 3), white_bg=False).abs().max() == 0
    assert torch.allclose(composite_rgb(weights, torch.rand(1, 5, 3), white_bg=True), torch.ones(1, 3))
    # the release's depth falls back to the ray direction's z where nothing is hit
    assert composite_depth(weights, torch.linspace(0, 1, 5)[None], torch.tensor([0.8])).item() == pytest.approx(0.8)


def test_next_distances_last_is_zero():
    assert torch.equal(next_distances(torch.tensor([[0.0, 0.25, 0.75]])), torch.tensor([[0.25, 0.5, 0.0]]))


def test_ndc_sampling_eval_and_jitter():
    rays_o = torch.tensor([[0.0, 0.0, -1.0], [5.0, 0.0, -1.0]])
    rays_d = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 2.0]])
    s = steps_ndc(rays_o, rays_d, 0.0, 1.0, 5, train=False).samples(BOX)
    assert torch.allclose(s.z_vals, torch.linspace(0, 1, 5)[None])
    assert torch.allclose(s.dists[0], torch.tensor([0.5, 0.5, 0.5, 0.5, 0.0]))  # 0.25 * |d| = 0.5
    assert torch.allclose(s.viewdirs, torch.tensor([[0.0, 0.0, 1.0]] * 2))
    assert s.valid[0].all() and not s.valid[1].any()  # the second ray runs outside the box
    g = torch.Generator().manual_seed(0)
    j = steps_ndc(rays_o, rays_d, 0.0, 1.0, 5, train=True, generator=g).samples(BOX)
    shift = j.z_vals - s.z_vals
    assert j.z_vals.shape == (1, 5)  # one jitter row shared by the batch
    assert (shift >= 0).all() and (shift < 0.2).all() and shift.std() > 0


def test_box_sampling_starts_at_the_box():
    rays_o = torch.tensor([[0.0, 0.0, -5.0]])
    rays_d = torch.tensor([[0.0, 0.0, 3.0]])  # normalized inside
    s = steps_box(rays_o, rays_d, 0.0, 100.0, 4, 0.5, BOX, train=False).samples(BOX)
    assert torch.allclose(s.z_vals, torch.tensor([[4.0, 4.5, 5.0, 5.5]]))
    assert torch.allclose(s.xyz[0, :, 2], torch.tensor([-1.0, -0.5, 0.0, 0.5]))


def test_distortion_by_hand_and_against_the_pair_sum():
    # all weight on one interval of length 0.5: only the 1/3 w^2 length term, 1/3 * 0.25
    z = torch.tensor([[0.0, 0.5, 1.0]])
    assert torch.allclose(distortion(torch.tensor([[0.0, 0.5, 0.0]]), z), torch.tensor([0.25 * 0.5 / 3]))
    # half on [0, 0.5), half on [0.5, 1): midpoints 0.5 apart (pairs 2 * 0.5 * 0.5 * 0.5), lengths 2 * 0.25 * 0.5 / 3
    both = distortion(torch.tensor([[0.5, 0.5, 0.0]]), z)
    assert torch.allclose(both, torch.tensor([2 * 0.25 * 0.5 + 2 * 0.25 * 0.5 / 3]))
    g = torch.Generator().manual_seed(0)
    w, z = torch.rand(4, 9, generator=g), torch.rand(4, 9, generator=g).sort(-1).values
    length = torch.cat([z[:, 1:] - z[:, :-1], torch.zeros(4, 1)], -1)
    mid = z + length / 2
    pairs = (w[:, :, None] * w[:, None, :] * (mid[:, :, None] - mid[:, None, :]).abs()).sum((1, 2))
    assert torch.allclose(distortion(w, z), pairs + (w**2 * length).sum(-1) / 3)
    assert torch.allclose(distortion(w[:1], z[:1]).expand(4), distortion(w[:1].expand(4, -1), z[:1]))


def test_shading_anchors_by_hand():
    # ray 0 weighted at samples 3..7, ray 1 at samples 2 and 9; colour every 4th sample index, and at run ends
    ray = torch.tensor([0, 0, 0, 0, 0, 1, 1])
    index = torch.tensor([3, 4, 5, 6, 7, 2, 9])
    anchors, lo, hi, share = shading_anchors(ray, index, 4)
    assert anchors.tolist() == [0, 1, 4, 5, 6]  # samples 3 (first), 4 (4 % 4), 7 (last); ray 1: both ends
    assert lo.tolist() == [0, 1, 1, 1, 2, 3, 4] and hi.tolist() == [0, 1, 2, 2, 2, 3, 4]
    assert torch.allclose(share, torch.tensor([0.0, 0.0, 1 / 3, 2 / 3, 0.0, 0.0, 0.0]))
    everything = shading_anchors(ray, index, 1)
    assert everything[0].tolist() == list(range(7)) and everything[3].abs().max() == 0
    # a heavy sample (much of its pixel's weight) is shaded whatever its index: sample 5 now splits 6's weight
    anchors, lo, hi, share = shading_anchors(ray, index, 4, heavy=index == 5)
    assert anchors.tolist() == [0, 1, 2, 4, 5, 6]
    assert lo.tolist() == [0, 1, 2, 2, 3, 4, 5] and torch.allclose(share, torch.tensor([0, 0, 0, 0.5, 0, 0, 0]))


def test_colour_stride_is_exact_for_colour_linear_along_the_ray():
    """Splitting each weight between the shaded samples around it is linear interpolation of their colours: exact
    when colour is linear in the sample index, whatever the weights."""
    torch.manual_seed(0)
    weights = (torch.rand(5, 40) * (torch.rand(5, 40) > 0.3) * 0.025).requires_grad_()  # none heavy (> 3%)
    slope, offset = torch.rand(5, 1, 3), torch.rand(5, 1, 3)
    colour = offset + slope * torch.arange(40.0)[None, :, None] / 40  # [rays, samples, 3]
    reference = composite_rgb(torch.where(weights > 0.00125, weights, 0.0), colour, white_bg=False)
    n_weighted = int((weights > 0.00125).sum())
    for stride in (1, 3, 8):
        ray, index, carried = anchor_weights(weights, 0.00125, stride)
        rgb = torch.zeros(5, 3).index_add(0, ray, carried[:, None] * colour[ray, index])
        assert len(ray) < n_weighted or stride == 1
        assert torch.allclose(rgb.clamp(0, 1), reference, atol=1e-5), stride
        # the carried weights keep the weights' gradients: the same as the reference's
        grad, = torch.autograd.grad(rgb.sum(), weights)
        weighted = torch.where(weights > 0.00125, weights, 0.0)
        expected, = torch.autograd.grad((weighted[..., None] * colour).sum(), weights)
        assert torch.allclose(grad, expected, atol=1e-5), stride


def test_cube_range_of_normalized_steps():
    from models.sampling import RaySteps

    origins = torch.tensor([[0.0, 0.0, -3.0], [0.5, 2.0, 0.0], [0.2, -0.3, 0.0]])
    directions = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [-2.0, 1.0, 0.5]])
    steps = RaySteps(origins=origins, directions=directions, z_vals=torch.zeros(1, 1), dists=torch.zeros(3, 1),
                     viewdirs=directions)
    enter, leave = steps.cube_range()
    assert enter[0].item() == pytest.approx(2.0) and leave[0].item() == pytest.approx(4.0)
    assert enter[1] > leave[1]  # parallel to the y faces, outside them: never inside
    # the third leaves through x = -1 at t = 0.6 and entered through x = +1 at t = -0.4
    assert enter[2].item() == pytest.approx(-0.4) and leave[2].item() == pytest.approx(0.6)


def test_march_decides_the_box_face_like_the_dense_sampler():
    """A box-mode ray's first sample lies on the face it enters by; whether rounding puts it inside is decided as
    the dense sampler decides it (this ray, from a fitted monocular capture, was decided otherwise by the interval
    alone, and its first sample is where that fit keeps a dense wall)."""
    from models.sampling import DenseSampler, inside_box, inside_range

    aabb = torch.tensor([[-1.1802865266799927, -0.6312384009361267, -0.5897583961486816],
                         [1.1802865266799927, 0.6312384009361267, 0.5897583961486816]])
    field = type("Field", (), {"near_far": [0.6060308814048767, 2.085911750793457], "aabb": aabb,
                               "step_size": 0.012156523764133453})()
    rays_o = torch.tensor([[0.0, -0.1426030844449997, 1.2138559818267822]])
    rays_d = torch.tensor([[-0.3806646466255188, 0.040531009435653687, -1.001511573791504]])
    steps = DenseSampler(ndc=False).steps(field, rays_o, rays_d, 241)
    enter, leave = steps.normalized(aabb).cube_range()
    assert steps.z_vals[0, 0] < enter[0]  # the interval alone would leave the first sample out...
    reference = inside_box(steps.samples(aabb).xyz, aabb)
    assert reference[0, 0]  # ...which the dense sampler keeps
    decided = torch.cat([inside_range(steps, torch.tensor([0]), start, steps.z_vals[:, start:start + 64], enter,
                                      leave, aabb) for start in range(0, 241, 64)], dim=1)
    assert torch.equal(decided, reference)
