"""Importance sampling of training batches (models/sampling.py sample_pdf, ImportanceSampler; the trainer's use)."""

from __future__ import annotations

import math

import pytest
import torch
from test_models_occupancy import TINY, rays, tiny

from dataloader import load_scene
from models import FitSettings, Trainer, build_sampler, field_from_args, render_rays
from models.compositing import sample_weights
from models.config import ConfigError, parse_args
from models.occupancy import FeatureVolumes
from models.sampling import ImportanceSampler, MarchedSampler, OccupancySampler, sample_pdf

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pdf_samples_land_in_the_weighted_bin():
    edges = torch.linspace(0, 1, 11)[None].expand(3, -1)
    weights = torch.zeros(3, 10)
    weights[:, 6] = 1.0
    z = sample_pdf(edges, weights, 16, uniform_mix=0.0, train=True, generator=torch.Generator().manual_seed(0))
    assert z.shape == (3, 16)
    assert ((z >= 0.6 - 1e-6) & (z <= 0.7 + 1e-6)).all()
    assert (z[:, 1:] >= z[:, :-1]).all()


def test_pdf_with_all_mass_spread_evenly_is_stratified():
    edges = torch.linspace(0.2, 1.0, 9)[None]
    weights = torch.rand(1, 8)
    z = sample_pdf(edges, weights, 8, uniform_mix=1.0, train=False)
    assert torch.allclose(z, 0.2 + 0.8 * (torch.arange(8) + 0.5)[None] / 8, atol=1e-6)


class SlabField:
    """A stand-in field with an opaque slab at NDC z in [0.2, 0.3] (normalized coordinates), empty elsewhere."""

    aabb = torch.tensor([[-1.5, -1.67, -1.0], [1.5, 1.67, 1.0]])
    near_far = (0.0, 1.0)
    distance_scale = 25.0
    alphaMask = None

    def normalize_coord(self, xyz):
        return (xyz - self.aabb[0]) / (self.aabb[1] - self.aabb[0]) * 2 - 1

    def density(self, xyz, t):
        z = (xyz[..., 2] + 1) / 2 * 2.0 - 1.0  # back to box units
        return torch.where((z > 0.2) & (z < 0.3), 50.0, 0.0)


def slab_rays(n=32):
    g = torch.Generator().manual_seed(1)
    rays_o = torch.cat([torch.rand(n, 2, generator=g) * 0.5 - 0.25, -torch.ones(n, 1)], dim=-1)
    rays_d = torch.cat([torch.zeros(n, 2), 2 * torch.ones(n, 1)], dim=-1)  # z = -1 + 2 s: the slab at s in (0.6, 0.65)
    return rays_o, rays_d


def test_fine_samples_concentrate_where_the_weight_is():
    field, (rays_o, rays_d) = SlabField(), slab_rays()
    sampler = ImportanceSampler(build_sampler("dense", True), coarse_ratio=0.5, fine_ratio=0.25, uniform_mix=0.1,
                                min_fine=8)
    samples = sampler(field, rays_o, rays_d, 128, True, torch.Generator().manual_seed(0), t=0.0)
    assert samples.z_vals.shape == (32, 32)
    # the slab's front face lies in the coarse bin ending at s = 0.6 + 1/64; nearly all weight is there
    near_slab = ((samples.z_vals > 0.58) & (samples.z_vals < 0.67)).float().mean()
    assert near_slab > 0.85, near_slab
    assert torch.allclose(samples.dists, torch.cat([samples.z_vals[:, 1:], torch.ones(32, 1)], 1).sub(
        samples.z_vals) * 2.0)
    # the composited opacity through the slab is (almost) one, as with the dense samples
    with torch.no_grad():
        from models.compositing import alpha_weights

        sigma = field.density(field.normalize_coord(samples.xyz), 0.0)
        _, weights = alpha_weights(sigma, samples.dists * field.distance_scale)
    assert (weights.sum(-1) > 0.99).all()


def test_renders_keep_the_dense_positions():
    field, (rays_o, rays_d) = SlabField(), slab_rays(4)
    dense = build_sampler("dense", True)
    sampler = ImportanceSampler(dense)
    a, b = sampler(field, rays_o, rays_d, 64, False), dense(field, rays_o, rays_d, 64, False)
    assert torch.equal(a.z_vals, b.z_vals) and torch.equal(a.valid, b.valid)


def test_bad_ratios_are_refused():
    with pytest.raises(ValueError, match="coarse_ratio"):
        ImportanceSampler(build_sampler("dense", True), fine_ratio=0.0)


def test_trainer_fits_with_importance_after_the_grid_and_renders_densely(small_scene_dir):
    scene = load_scene("synthetic", small_scene_dir, ndc=True)
    args = parse_args(TINY + ["--datadir", str(small_scene_dir), "--n_iters", "4", "--occupancy_warmup", "2",
                              "--importance_polish", "0"])
    trainer = Trainer(field_from_args(args, scene), scene, FitSettings.from_args(args), tensorboard=False)
    first = trainer.ray_sampler()
    assert isinstance(first, ImportanceSampler) and first.coarse is trainer.dense_sampler
    trainer.train(progress=False)
    later = trainer.ray_sampler()
    assert isinstance(later, ImportanceSampler) and later.coarse is trainer.sampler
    assert isinstance(trainer.sampler, OccupancySampler)  # renders and evaluation: dense positions, grid skipping
    off = parse_args(TINY + ["--datadir", str(small_scene_dir), "--importance_fine", "0"])
    plain = Trainer(field_from_args(off, scene), scene, FitSettings.from_args(off), tensorboard=False)
    assert plain.ray_sampler() is plain.dense_sampler
    rays_o, rays_d = slab_rays(4)
    with torch.no_grad():
        out = render_rays(trainer.field, later, rays_o, rays_d, 0.5, n_samples=trainer.n_samples, train=True,
                          generator=torch.Generator().manual_seed(0))
    assert out["rgb"].shape == (4, 3) and torch.isfinite(out["rgb"]).all()


def test_importance_options_are_checked():
    with pytest.raises(ConfigError, match="importance_fine"):
        parse_args(["--importance_fine", "1.5"])
    with pytest.raises(ConfigError, match="importance_coarse"):
        parse_args(["--importance_coarse", "0"])


def test_one_render_of_several_frames_equals_a_render_per_frame():
    field = tiny()
    rays_o, rays_d = rays(24)
    dense = build_sampler("dense", True)
    times = [0.0, 0.4, 1.0]
    together = render_rays(field, dense, rays_o, rays_d, times, n_samples=48)
    apart = [render_rays(field, dense, rays_o[8 * k:8 * (k + 1)], rays_d[8 * k:8 * (k + 1)], t, n_samples=48)
             for k, t in enumerate(times)]
    for key in ("rgb", "depth", "acc"):
        assert torch.allclose(together[key], torch.cat([a[key] for a in apart]), atol=1e-6), key
    # the frames differ (else the check above would not see a frame mix-up)
    assert not torch.allclose(apart[0]["rgb"], render_rays(field, dense, rays_o[:8], rays_d[:8], 1.0,
                                                           n_samples=48)["rgb"], atol=1e-4)
    with pytest.raises(ValueError, match="equal frame blocks"):
        render_rays(field, dense, rays_o[:10], rays_d[:10], times, n_samples=48)


def test_the_last_iterations_polish_at_the_dense_positions(small_scene_dir, monkeypatch):
    scene = load_scene("synthetic", small_scene_dir, ndc=True)
    marches = []
    weights = MarchedSampler.weights
    monkeypatch.setattr(MarchedSampler, "weights", lambda self, *a: marches.append(self.compiled) or weights(self, *a))
    for compiled in ("1", "0"):
        args = parse_args(TINY + ["--datadir", str(small_scene_dir), "--n_iters", "10", "--occupancy_warmup", "2",
                                  "--importance_polish", "0.2", "--fit_compiled", compiled])
        trainer = Trainer(field_from_args(args, scene), scene, FitSettings.from_args(args), tensorboard=False)
        kinds = []
        for _ in range(10):
            kinds.append(type(trainer.ray_sampler()))
            if trainer.iteration == 8:  # the polish starts from volumes of the field as it is then
                assert not trainer.volumes._volumes
            trainer.step()
        assert kinds == [ImportanceSampler] * 8 + [MarchedSampler] * 2
    assert marches == [True, True, False, False]  # each polish step marched (compiled, then PyTorch operators)
    with pytest.raises(ConfigError, match="importance_polish"):
        parse_args(["--importance_polish", "2"])


@pytest.mark.parametrize("act", ["relu", "softplus"])
def test_the_polish_samples_what_a_render_weights(act):
    """The polish's samples are the dense positions a fast render gives a weight: a subset of those in occupied
    cells, and the field's compositing weights over them equal those over all of these up to the early stop's
    transmittance (the samples left out have zero density (relu) or lie behind the stop). The compiled march and the
    PyTorch operators keep the same samples."""
    field = tiny(act=act)
    with torch.no_grad():
        field.density_line[0].mul_(40.0)  # dense enough for rays to reach the early stop
    rays_o, rays_d = rays(24)
    times = [0.0, 0.4, 1.0]
    fast, occupied = build_sampler("fast", True), build_sampler("fast", True, min_transmittance=0)
    marched = MarchedSampler(fast, FeatureVolumes(7, budget_mib=16))
    plain = MarchedSampler(fast, FeatureVolumes(7, budget_mib=16), compiled=False)

    def draw(sampler, train=True):
        with torch.no_grad():
            return sampler(field, rays_o, rays_d, 160, train, torch.Generator().manual_seed(5), t=times)

    every, some, pytorch, culled = draw(occupied), draw(marched), draw(plain), draw(fast)
    assert torch.equal(every.z_vals, some.z_vals)
    assert not (some.valid & ~every.valid).any()
    assert some.valid.sum() < culled.valid.sum() <= every.valid.sum()  # fewer than the all-times grid's cull
    with torch.no_grad():
        w_every, w_some = (sample_weights(field, s, field.normalize_coord(s.xyz), times) for s in (every, some))
        marched_w = marched.weights(field, fast.dense.steps(field, rays_o, rays_d, 160, True,
                                                            torch.Generator().manual_seed(5)), every, times)
        pytorch_w = plain.weights(field, fast.dense.steps(field, rays_o, rays_d, 160, True,
                                                          torch.Generator().manual_seed(5)), every, times)
    assert (w_every - w_some).abs().max() <= fast.early_stop + 1e-5
    assert (1 - w_every.sum(-1) < fast.early_stop).any()  # some rays reach the early stop
    assert torch.allclose(marched_w, pytorch_w, atol=1e-5)
    assert (some.valid != pytorch.valid).sum() <= 2  # a sample of weight ~0 may round either way
    if act == "relu":  # samples of zero density were dropped, not only those behind the stop
        for block, t in zip(range(0, 24, 8), times):
            xyz = field.normalize_coord(every.xyz[block:block + 8])
            feature = field.density_feature(xyz.reshape(-1, 3), t).view(8, -1)
            kept, seen = some.valid[block:block + 8], every.valid[block:block + 8]
            assert (feature[kept] > -1e-4).all() and (feature[seen & ~kept] <= 0).any()
    # renders, and volumes over their budget, get the fast sampler's own samples
    for a, b in ((draw(marched, train=False), draw(fast, train=False)),
                 (draw(MarchedSampler(fast, FeatureVolumes(7, budget_mib=0))), culled)):
        assert torch.equal(a.valid, b.valid) and torch.equal(a.z_vals, b.z_vals)


@pytest.mark.parametrize("anchors", ["1", "0"])
def test_the_polish_fits_colour_where_renders_shade(small_scene_dir, monkeypatch, anchors):
    """In the polish, colour is fitted at a fast render's shading anchors (every round(render_color_voxels /
    step_ratio) samples, interpolated between), unless --importance_polish_anchors 0; elsewhere at every sample."""
    import models.fitting as fitting

    scene = load_scene("synthetic", small_scene_dir, ndc=True)
    args = parse_args(TINY + ["--datadir", str(small_scene_dir), "--n_iters", "6", "--occupancy_warmup", "2",
                              "--importance_polish", "0.34", "--render_color_voxels", "3",
                              "--importance_polish_anchors", anchors])
    trainer = Trainer(field_from_args(args, scene), scene, FitSettings.from_args(args), tensorboard=False)
    strides, render_rays = [], fitting.render_rays
    monkeypatch.setattr(fitting, "render_rays",
                        lambda *a, **k: strides.append(k["color_stride"]) or render_rays(*a, **k))
    losses = [trainer.step()["mse"] for _ in range(6)]
    polish = 3 if anchors == "1" else 1  # round(3 cells / step_ratio 1)
    assert strides == [1, 1, 1, 1, polish, polish] and all(math.isfinite(v) for v in losses)


@pytest.mark.parametrize("model_name", ["StreamTensorVMSplit", "StreamTensorCP"])
def test_feature_volumes_give_the_fields_density_feature(model_name):
    field = tiny(model_name)
    volumes = FeatureVolumes(7, budget_mib=16)
    assert volumes.usable(field)
    xyz = torch.rand(6, 11, 3, generator=torch.Generator().manual_seed(2)) * 2 - 1
    for t in (0.0, 0.4, 1.0):  # a frame, a time between frames, the last frame
        expected = field.density_feature(xyz.reshape(-1, 3), t).view(6, 11)
        assert torch.allclose(volumes.feature(field, xyz, t), expected, atol=1e-5), t
    # one time per block of rays, as in a batch of several frames
    together = volumes.feature(field, xyz, [0.0, 0.4, 1.0])
    assert torch.allclose(together[2:4], volumes.feature(field, xyz[2:4], 0.4))
    with pytest.raises(ValueError, match="equal frame blocks"):
        volumes.feature(field, xyz[:5], [0.0, 1.0])


def test_volumes_are_rebuilt_when_cleared_or_the_grid_changes():
    field = tiny()
    volumes = FeatureVolumes(7, budget_mib=16)
    before = volumes.volume(field, 0.5)
    with torch.no_grad():
        field.density_plane[0].add_(1.0)
    assert volumes.volume(field, 0.5) is before  # kept until cleared: the trainer clears them periodically
    volumes.clear()
    assert not torch.equal(volumes.volume(field, 0.5), before)
    field.upsample([10, 11, 7])
    assert volumes.volume(field, 0.5).shape == (1, 1, 7, 11, 10)
    assert not FeatureVolumes(7, budget_mib=0.001).usable(field) and not FeatureVolumes(7, 0).usable(field)


def test_coarse_pass_from_volumes_places_the_fine_samples_like_the_field():
    field = tiny()
    rays_o, rays_d = rays(24)
    options = {"coarse_ratio": 0.5, "fine_ratio": 0.25, "uniform_mix": 0.2, "min_fine": 8}
    plain = ImportanceSampler(build_sampler("dense", True), **options)
    fast = ImportanceSampler(build_sampler("fast", True), **options, volumes=FeatureVolumes(7, budget_mib=16))
    small = ImportanceSampler(build_sampler("dense", True), **options, volumes=FeatureVolumes(7, budget_mib=1e-4))
    times = [0.0, 0.4, 1.0]
    with torch.no_grad():
        a, b, c = (s(field, rays_o, rays_d, 40, True, torch.Generator().manual_seed(5), t=times)
                   for s in (plain, fast, small))
    assert a.z_vals.shape == (24, 10)
    assert torch.allclose(a.z_vals, b.z_vals, atol=1e-4)  # the volumes hold the field's density
    assert torch.equal(a.z_vals, c.z_vals)  # over budget: the field itself is evaluated


@pytest.mark.parametrize("act", ["relu", "softplus"])
def test_compiled_coarse_pass_equals_pytorch(act):
    """The coarse pass marched through the volumes in a compiled loop (one per frame block) gives the PyTorch
    operators' weights and fine samples, up to float rounding (rays partly outside the box included)."""
    field = tiny(act=act)
    rays_o, rays_d = rays(24)
    rays_o[:3, :2] = 1.4  # beyond the box's x and y faces for part of the ray
    options = {"coarse_ratio": 0.5, "fine_ratio": 0.25, "uniform_mix": 0.2, "min_fine": 8,
               "volumes": FeatureVolumes(7, budget_mib=16)}
    compiled, plain = ImportanceSampler(build_sampler("fast", True), **options), ImportanceSampler(
        build_sampler("fast", True), **options, compiled=False)
    times = [0.0, 0.4, 1.0]
    steps = build_sampler("dense", True).steps(field, rays_o, rays_d, 20, True, torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected, got = plain._volume_weights(field, steps, times), compiled._volume_weights(field, steps, times)
        assert got.shape == (24, 20) and expected.sum() > 1.0
        assert torch.allclose(got, expected, atol=1e-6)
        a, b = (sampler(field, rays_o, rays_d, 40, True, torch.Generator().manual_seed(5), t=times)
                for sampler in (plain, compiled))
    assert torch.allclose(a.z_vals, b.z_vals, atol=1e-5)


def test_trainer_clears_the_volumes_every_occupancy_period(small_scene_dir):
    scene = load_scene("synthetic", small_scene_dir, ndc=True)
    args = parse_args(TINY + ["--datadir", str(small_scene_dir), "--n_iters", "8", "--occupancy_warmup", "2",
                              "--occupancy_every", "3", "--importance_polish", "0"])
    trainer = Trainer(field_from_args(args, scene), scene, FitSettings.from_args(args), tensorboard=False)
    assert trainer.ray_sampler().volumes is trainer.volumes and trainer.volumes.usable(trainer.field)
    held = []
    for _ in range(7):
        trainer.step()
        held.append(len(trainer.volumes._volumes))
    assert all(n > 0 for n in held)
    trainer.iteration = 9
    trainer.ray_sampler()
    assert len(trainer.volumes._volumes) == 0
    with pytest.raises(ConfigError, match="importance_volumes_mib"):
        parse_args(["--importance_volumes_mib", "-1"])
