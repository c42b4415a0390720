"""Occupancy grid and fast sampling (models/occupancy.py, models/sampling.py OccupancySampler, the trainer's use)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dataloader import load_scene
from dataloader.cameras import unproject_depth
from models import (
    FitSettings,
    Trainer,
    build_model,
    build_sampler,
    field_from_args,
    occupancy,
    render_image,
    render_rays,
    rendering,
)
from models.compositing import HEAVY_WEIGHT, alpha_weights, shading_anchors
from models.config import parse_args
from models.occupancy import (
    OccupancyGrid,
    TimeVolume,
    corner_reduce,
    feature_threshold,
    probe_times,
    z_innermost,
)
from models.sampling import OccupancySampler

ROOT = Path(__file__).resolve().parents[1]
BOX = torch.tensor([[-1.5, -1.67, -1.0], [1.5, 1.67, 1.0]])
TINY = ["--ndc_ray", "1", "--N_voxel_init", str(16**3), "--N_voxel_final", str(24**3), "--upsamp_list", "60",
        "--n_lamb_sigma", "4", "--n_lamb_sigma", "2", "--n_lamb_sigma", "2", "--n_lamb_sh", "8", "--n_lamb_sh", "4",
        "--n_lamb_sh", "4", "--shadingMode", "MLP_Fea", "--fea2denseAct", "relu", "--view_pe", "0", "--fea_pe", "0",
        "--featureC", "32", "--step_ratio", "1.0", "--ld_per_frame", "0.5", "--batch_size", "512", "--n_iters", "250",
        "--TV_weight_density", "1", "--TV_weight_app", "1", "--dataset_name", "synthetic", "--sampling", "fast",
        "--occupancy_warmup", "100", "--occupancy_every", "50"]

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(model_name="StreamTensorVMSplit", act="relu", ld=0.5):
    torch.manual_seed(0)
    comps = [4, 4, 4] if ld > 1 else [4, 2, 2]  # grouped mode (ld 2) reads groups of 4 channels
    return build_model(model_name, BOX, [8, 9, 6], density_n_comp=comps, appearance_n_comp=comps,
                       app_dim=27, shadingMode="MLP_Fea", near_far=[0.0, 1.0], view_pe=0, fea_pe=0, featureC=16,
                       fea2denseAct=act, density_shift=-0.1, num_frames=7, ld_per_frame=ld, step_ratio=0.5)


def alpha_at_quantile(field, q):
    """The opacity threshold whose density feature is the ``q`` quantile of the field's features (the largest over a
    few times, so that some cells stay empty at every time)."""
    with torch.no_grad():
        xyz = torch.rand(4000, 3) * 2 - 1
        feature = max(field.density_feature(xyz, t).quantile(q) for t in (0.0, 0.25, 0.5, 0.75, 1.0))
        sigma = field.activate_density(feature).item()
    return -math.expm1(-sigma * field.step_size * field.distance_scale)


def rays(n=40):
    g = torch.Generator().manual_seed(3)
    rays_o = torch.cat([torch.rand(n, 2, generator=g) * 2 - 1, -torch.ones(n, 1)], dim=-1)
    rays_d = torch.cat([torch.randn(n, 2, generator=g) * 0.3, 2 * torch.ones(n, 1)], dim=-1)
    return rays_o, rays_d


def test_corner_reduce_is_the_two_node_pool():
    nodes = torch.randn(7, 9, 6, generator=torch.Generator().manual_seed(1))
    pooled = torch.nn.functional.max_pool3d(nodes[None, None], kernel_size=2, stride=1)[0, 0]
    assert torch.equal(corner_reduce(nodes, torch.maximum), pooled)
    assert torch.equal(corner_reduce(nodes, torch.minimum), -torch.nn.functional.max_pool3d(
        -nodes[None, None], kernel_size=2, stride=1)[0, 0])
    assert torch.equal(corner_reduce(nodes > 0.5, torch.logical_or), pooled > 0.5)


def test_probe_times_cover_row_ends():
    assert probe_times(7, 0) == [(0.0, 0.0)]
    times = probe_times(7, 0.5)  # 7 frames, a new channel every 2 frames: 3 rows, ends 0, 1/3, 2/3, 1
    assert times[0] == (0.0, 0.0) and times[-1] == (1.0, 1.0)
    assert (0.0, 1 / 3) in times and (1 / 3, 0.0) in times and (0.0, 2 / 3) not in times
    assert len(probe_times(7, 0.5, factor_kinds=3)) == 3 * 8 - 2


@pytest.mark.parametrize("model_name", ["StreamTensorVMSplit", "StreamTensorCP"])
@pytest.mark.parametrize("act", ["relu", "softplus"])
@pytest.mark.parametrize("ld", [0.5, 2])
def test_grid_never_drops_density_at_any_time(model_name, act, ld):
    """Every point whose opacity over one step exceeds the threshold at some time lies in an occupied cell, and
    the cell's floor never exceeds the density there."""
    field = tiny(model_name, act, ld)
    alpha = alpha_at_quantile(field, 0.999)
    grid = OccupancyGrid.from_field(field, alpha_thres=alpha)
    assert 0.0 < grid.fraction < 1.0, grid.fraction
    g = torch.Generator().manual_seed(1)
    xyz = (torch.rand(20000, 3, generator=g) * (BOX[1] - BOX[0]) + BOX[0])
    threshold = feature_threshold(field, alpha)
    checked = 0
    with torch.no_grad():
        for t in torch.rand(12, generator=g).tolist() + [0.0, 1.0]:
            feature = field.density_feature(field.normalize_coord(xyz), t)
            dense = feature > threshold + 1e-5
            assert grid.lookup(xyz)[dense].all(), f"an occupied point at t={t} lies in an empty cell"
            checked += int(dense.sum())
            floor = grid.floor.view(-1)[grid.cell_index(xyz)]
            assert (floor <= field.activate_density(feature) + 1e-5).all()
    assert checked > 0


def test_pooled_grid_is_conservative():
    field = tiny()
    fine = OccupancyGrid.from_field(field, alpha_thres=0.05)
    coarse = OccupancyGrid.from_field(field, alpha_thres=0.05, max_cells=3)
    dilated = OccupancyGrid.from_field(field, alpha_thres=0.05, dilation=1)
    assert coarse.factor != [1, 1, 1] and max(coarse.occupied.shape) <= 3
    xyz = torch.rand(5000, 3) * (BOX[1] - BOX[0]) + BOX[0]
    assert coarse.lookup(xyz)[fine.lookup(xyz)].all() and dilated.lookup(xyz)[fine.lookup(xyz)].all()
    assert dilated.fraction >= fine.fraction


@pytest.mark.parametrize("ld, ndc", [(0.5, True), (2, True), (0.5, False)])
def test_zero_threshold_relu_renders_exactly_like_dense(ld, ndc):
    """With relu and alpha_thres 0 the skipped samples have density exactly 0: the renders are dense mode's. In a
    box (``ndc`` False) each ray's first sample lies on the box face, where rounding decides inside or out: the
    march must decide it as the dense sampler does."""
    field = tiny(ld=ld)
    with torch.no_grad():  # no density where x < 0: every plane x line product is negative there
        for i in range(3):
            field.density_line[i].abs_()
            plane = field.density_plane[i]
            plane.abs_()
            plane[..., : plane.shape[-1] // 2 if i < 2 else plane.shape[-1]] *= -1
    rays_o, rays_d = rays(200)
    if not ndc:  # start outside the box: each ray's samples begin where it enters (its first on a face)
        rays_o = rays_o - torch.tensor([0.0, 0.0, 0.7])
    fast = build_sampler("fast", ndc, alpha_thres=0.0, min_transmittance=0.0, color_voxels=0)
    dense = build_sampler("dense", ndc)
    with torch.no_grad():
        a = render_rays(field, fast, rays_o, rays_d, 0.4, n_samples=48)
        b = render_rays(field, dense, rays_o, rays_d, 0.4, n_samples=48)
        skipped = (~fast(field, rays_o, rays_d, 48, False).valid).sum() - (~dense(field, rays_o, rays_d, 48,
                                                                                   False).valid).sum()
    assert skipped > 0
    for key in ("rgb", "depth", "acc"):
        assert torch.allclose(a[key], b[key], atol=1e-6), key


@pytest.mark.parametrize("act, ndc, ld, max_cells", [("softplus", True, 0.5, 256), ("relu", False, 2, 256),
                                                     ("softplus", False, 0.5, 3)])
def test_compiled_march_is_the_pytorch_march(act, ndc, ld, max_cells):
    """CPU renders march in one compiled loop (models.compiled_march): the same weights as the PyTorch march, with
    and without the early stop (0.2 here: it stops rays in both spaces), the same shading anchors' weights as
    shading_anchors' split of those weights, and so the same renders; in NDC and in a box, with a grid pooled to
    fewer cells than the field's (``max_cells`` 3)."""
    field = tiny(act=act, ld=ld)
    with torch.no_grad():
        for plane in field.density_plane:
            plane.mul_(8)  # opaque enough for rays to stop
    rays_o, rays_d = rays(200)
    if not ndc:
        rays_o = rays_o - torch.tensor([0.0, 0.0, 0.7])
    for stop, segment in ((1e-4, 64), (0.2, 8)):
        options = {"min_transmittance": stop, "max_cells": max_cells}
        compiled = build_sampler("fast", ndc, **options)
        plain = build_sampler("fast", ndc, compiled=False, **options)
        with torch.no_grad():
            a = compiled.march_weights(field, rays_o, rays_d, 48, 0.4, color_stride=4, segment=segment)
            b = plain.march_weights(field, rays_o, rays_d, 48, 0.4, color_stride=4, segment=segment)
            whole = build_sampler("fast", ndc, min_transmittance=0.0, max_cells=max_cells).march_weights(
                field, rays_o, rays_d, 48, 0.4, segment=segment)
        assert b.anchor_weights is None and a.anchor_weights is not None  # the PyTorch march has no anchors
        assert (a.weights > 0).sum() > 500 and torch.allclose(a.weights, b.weights, atol=1e-6, rtol=0)
        stopped = (whole.weights - a.weights).abs().sum(-1) > 0
        assert stopped.any() == (stop > 0.1), stopped.sum()
        ray, index = torch.nonzero(b.weights > field.rayMarch_weight_thres, as_tuple=True)
        w = b.weights[ray, index]
        anchors, lo, hi, share = shading_anchors(ray, index, 4, heavy=w > HEAVY_WEIGHT)
        expected = torch.zeros_like(b.weights)
        expected.index_put_((ray[anchors[lo]], index[anchors[lo]]), w * (1 - share), accumulate=True)
        expected.index_put_((ray[anchors[hi]], index[anchors[hi]]), w * share, accumulate=True)
        assert torch.allclose(a.anchor_weights, expected, atol=1e-6, rtol=0)
        assert torch.equal(a.anchor_weights > 0, expected > 0)
        with torch.no_grad():
            renders = [render_rays(field, sampler, rays_o, rays_d, 0.4, n_samples=48) for sampler in (compiled, plain)]
        for key in ("rgb", "depth", "acc"):
            assert torch.allclose(renders[0][key], renders[1][key], atol=1e-5), key


def test_march_reads_a_volume_in_either_layout():
    """The compiled march reads node volumes z innermost (``z_innermost``: same shape and values, Z's stride 1); a
    volume in the usual layout is copied to it and marches to the same weights."""
    from models import compiled_march

    field = tiny()
    volume = TimeVolume(512).update(field, 0.4)
    inner = volume.volume
    assert inner.stride(0) == 1 and inner.permute(1, 2, 0).is_contiguous()
    plain = inner.contiguous()
    assert torch.equal(z_innermost(plain), plain) and z_innermost(plain).stride() == inner.stride()
    rays_o, rays_d = rays(200)
    steps = build_sampler("dense", True).steps(field, rays_o, rays_d, 48)
    weights = [compiled_march.march_weights(steps, steps.dists * field.distance_scale, field.aabb, v, volume.grid,
                                            field.fea2denseAct, field.density_shift, 1e-4, 64)[0]
               for v in (inner, plain)]
    assert (weights[0] > 0).sum() > 500 and torch.equal(weights[0], weights[1])


@pytest.mark.parametrize("ld", [0.5, 2])
def test_compiled_appearance_is_the_fields(ld, monkeypatch):
    """CPU renders of VM fields look the appearance features up in compiled code, from the factors live at the
    frame's time (kept for that time): the field's own features at any time (between rows of the stream table
    too), following the field when it changes; and renders shaded a block of points at a time are the same."""
    field = tiny(ld=ld)
    sampler = build_sampler("fast", True)
    g = torch.Generator().manual_seed(5)
    points = torch.rand(3000, 3, generator=g) * 2 - 1
    with torch.no_grad():
        for t in (0.0, 0.1, 0.5, 0.93, 1.0, 0.1):
            assert torch.allclose(sampler.app_features(field, points, t), field.app_features(points, t), atol=1e-6)
        for plane in field.app_plane:
            plane.mul_(-2)  # an in-place change: the version counters move
        assert torch.allclose(sampler.app_features(field, points, 0.1), field.app_features(points, 0.1), atol=1e-6)
        for line in field.app_line:
            line.data.add_(0.5)  # as a fused optimizer step changes them: counted by the trainer only
        field.optimizer_steps = getattr(field, "optimizer_steps", 0) + 1
        assert torch.allclose(sampler.app_features(field, points, 0.1), field.app_features(points, 0.1), atol=1e-6)
        rays_o, rays_d = rays(200)
        whole = render_rays(field, sampler, rays_o, rays_d, 0.4, n_samples=48)
        monkeypatch.setattr(rendering, "SHADE_BLOCK", 7)
        blocks = render_rays(field, sampler, rays_o, rays_d, 0.4, n_samples=48)
    assert torch.allclose(whole["rgb"], blocks["rgb"], atol=1e-6)
    cp = tiny("StreamTensorCP")  # other fields keep their own lookups
    assert not sampler.appearance.usable(cp, points) and sampler.appearance.usable(field, points)


def test_render_caches_tell_a_new_field_at_a_freed_fields_address_apart(monkeypatch):
    """A field made after another was freed often gets its ``id`` (here every field does); with the same grid and
    untouched version counters, the sampler's time volume, grid and appearance factors must still be rebuilt for
    the new field."""
    monkeypatch.setattr(occupancy, "id", lambda obj: 12345, raising=False)
    sampler = build_sampler("fast", True)
    rays_o, rays_d = rays()
    with torch.no_grad():
        first = render_rays(tiny(), sampler, rays_o, rays_d, 0.3, n_samples=48)
        assert first["acc"].max() > 0
        field = tiny()
        for plane in field.density_plane:  # .data leaves the version counters as they were
            plane.data.zero_()  # no density anywhere
        for plane in field.app_plane:
            plane.data.mul_(-1)  # another appearance
        assert render_rays(field, sampler, rays_o, rays_d, 0.3, n_samples=48)["acc"].max() == 0
        points = torch.rand(50, 3) * 2 - 1
        assert torch.allclose(sampler.app_features(field, points, 0.3), field.app_features(points, 0.3), atol=1e-6)


def test_compiled_march_takes_a_nan_ray_as_outside():
    """A ray with a NaN coordinate has no sample inside the box (its indices would read anywhere); the other rays
    are marched as the PyTorch march does."""
    field = tiny()
    rays_o, rays_d = rays()
    rays_o[0, 0] = math.nan
    with torch.no_grad():
        marched = build_sampler("fast", True).march_weights(field, rays_o, rays_d, 48, 0.3, 4)
        plain = build_sampler("fast", True, compiled=False).march_weights(field, rays_o[1:], rays_d[1:], 48, 0.3)
    assert marched.anchor_weights is not None and marched.weights[0].abs().sum() == 0
    assert torch.allclose(marched.weights[1:], plain.weights, atol=1e-6, rtol=0)


def test_models_load_where_numba_cannot_cache():
    """With no writable folder for numba's cache (a read-only install and home), the loops compile in the process
    instead of failing the import."""
    code = """
import numba.core.caching as caching
def refuse(self):
    raise OSError("read-only")
for name in ("InTreeCacheLocator", "UserWideCacheLocator", "UserProvidedCacheLocator"):
    getattr(caching, name).ensure_cache_path = refuse
import models.sampling
from models import compiled_march
assert compiled_march.numba is not None and type(compiled_march._march._cache).__name__ == "NullCache"
print("loaded")
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "loaded" in done.stdout, done.stderr[-2000:]


def test_compiled_march_only_where_it_applies():
    """The PyTorch march runs for what the compiled one does not cover: float64 rays, a field too large for the
    time volume, ``--render_compiled 0``."""
    field = tiny()
    rays_o, rays_d = rays()
    with torch.no_grad():
        assert build_sampler("fast", True).march_weights(field, rays_o, rays_d, 48, 0.3, 4).anchor_weights is not None
        for sampler in (build_sampler("fast", True, render_volume_mib=0), build_sampler("fast", True, compiled=False)):
            assert sampler.march_weights(field, rays_o, rays_d, 48, 0.3, 4).anchor_weights is None
        points = torch.zeros(5, 3)
        for budget_mib, fits in ((0, False), (0.001, False), (0.01, True)):  # its live factors: 2.1 KiB
            assert build_sampler("fast", True, render_volume_mib=budget_mib).appearance.usable(field, points) == fits
        wide = build_sampler("fast", True).march_weights(field.double(), rays_o.double(), rays_d.double(), 48, 0.3, 4)
        assert wide.anchor_weights is None and wide.weights.dtype == torch.float64
    args = parse_args(TINY + ["--render_compiled", "0"])
    assert not FitSettings.from_args(args).sampler_options()["compiled"]


def test_colour_spacing_and_depth_only_renders():
    field = tiny()  # step_ratio 0.5: two samples per grid cell
    assert build_sampler("fast", True).color_stride(field) == 4  # the default, 2 cells
    assert build_sampler("fast", True, color_voxels=0).color_stride(field) == 1
    with pytest.raises(ValueError, match="--render_color_voxels"):
        build_sampler("fast", True, color_voxels=-1)
    rays_o, rays_d = rays()
    sampler = build_sampler("fast", True)
    with torch.no_grad():
        full = render_rays(field, sampler, rays_o, rays_d, 0.3, n_samples=48)
        depth_only = render_rays(field, sampler, rays_o, rays_d, 0.3, n_samples=48, color=False)
    assert "rgb" not in depth_only  # no appearance lookups nor shading
    assert torch.equal(full["depth"], depth_only["depth"]) and torch.equal(full["acc"], depth_only["acc"])


def test_fresh_sampler_builds_and_follows_the_field():
    field = tiny()
    sampler = build_sampler("fast", True)
    assert isinstance(sampler, OccupancySampler) and sampler.grid is None
    rays_o, rays_d = rays(8)
    with torch.no_grad():
        render_rays(field, sampler, rays_o, rays_d, 0.0, n_samples=16)  # a render: the grid of its time
        assert sampler.grid is None and sampler.time_volume.grid.node_reso == [8, 9, 6]
        render_rays(field, sampler, rays_o, rays_d, 0.0, n_samples=16, train=True)  # training: all times
    assert sampler.grid is not None and sampler.grid.node_reso == [8, 9, 6]
    field.upsample([12, 13, 9])
    with torch.no_grad():
        render_rays(field, sampler, rays_o, rays_d, 0.0, n_samples=16, train=True)
        render_rays(field, sampler, rays_o, rays_d, 0.0, n_samples=16)
    assert sampler.grid.node_reso == [12, 13, 9] and list(sampler.grid.occupied.shape) == [8, 12, 11]
    assert sampler.time_volume.grid.node_reso == [12, 13, 9]


def test_time_volume_is_the_field_at_that_time_and_follows_its_changes():
    field = tiny()
    volume = TimeVolume(budget_mib=64)
    points = torch.rand(500, 3) * 2 - 1
    for t in (0.0, 0.37, 0.8):
        volume.update(field, t)
        assert torch.allclose(volume.density(field, points), field.density(points, t), rtol=1e-5, atol=1e-6)
        # the grid of one time is contained in the grid of all times
        all_times = OccupancyGrid.from_field(field)
        assert not (volume.grid.occupied & ~all_times.occupied).any()
    before = volume.volume
    with torch.no_grad():  # an optimizer step changes the factors in place: the next update rebuilds
        field.density_plane[0].mul_(2.0)
    volume.update(field, 0.8)
    assert volume.volume is not before
    assert torch.allclose(volume.density(field, points), field.density(points, 0.8), rtol=1e-5, atol=1e-6)
    assert not TimeVolume(budget_mib=1e-6).usable(field)


def test_a_single_frame_field_builds_its_grid():
    field = build_model("StreamTensorVMSplit", BOX, [8, 9, 6], density_n_comp=[4, 2, 2], appearance_n_comp=[4, 2, 2],
                        app_dim=27, shadingMode="MLP_Fea", near_far=[0.0, 1.0], view_pe=0, fea_pe=0, featureC=16,
                        fea2denseAct="relu", density_shift=-0.1, num_frames=1, ld_per_frame=0.5, step_ratio=0.5)
    assert probe_times(1, 0.5) == [(0.0, 0.0)]  # a single frame's table has no next row to blend into
    assert OccupancyGrid.from_field(field).occupied.any()


@pytest.fixture(scope="module")
def fitted(small_scene_dir):
    """A small model fitted in fast mode (dense warm-up, then the occupancy grid), and its scene.

    Batches are fitted at the dense positions (``--importance_fine 0``): these tests check the grid against the
    field and the ground-truth geometry. With importance sampling this tiny 250-iteration fit leaves 3 of the
    ~19k ground-truth surface points of frame 0 in cells where the field itself has no density yet (the grid is
    exact for the field, see ``test_grid_never_drops_density_at_any_time``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    scene = load_scene("synthetic", small_scene_dir, ndc=True)
    args = parse_args(TINY + ["--datadir", str(small_scene_dir), "--importance_fine", "0"])
    torch.manual_seed(0)
    trainer = Trainer(field_from_args(args, scene), scene, FitSettings.from_args(args), tensorboard=False)
    trainer.train(progress=False)
    torch.set_num_threads(before)
    return trainer


def test_fast_and_dense_renders_match_on_trained_model(fitted):
    scene, field = fitted.scene, fitted.field
    assert isinstance(fitted.sampler, OccupancySampler) and fitted.sampler.grid.fraction < 1.0
    dense = build_sampler("dense", scene.ndc)
    rays_o, rays_d = scene.image_rays(scene.test_cams[0])
    with torch.no_grad():  # renders march: the time's volume and grid, rays dropped once they are opaque
        steps, sigma = fitted.sampler.march(field, rays_o, rays_d, field.n_samples_full, 0.0)
    looked_at = (sigma > 0).sum().item()
    inside = steps.samples(field.aabb).valid.sum().item()
    assert 0 < looked_at < 0.9 * inside  # the grid of this time (rays this short: one segment)
    for frame in (0, scene.num_frames - 1):
        a = render_image(field, fitted.sampler, scene, frame, scene.test_cams[0])
        b = render_image(field, dense, scene, frame, scene.test_cams[0])
        match = -10 * math.log10(max(torch.mean((a["rgb"] - b["rgb"]) ** 2).item(), 1e-20))
        assert match > 45.0, f"fast vs dense render PSNR {match:.1f} dB at frame {frame}"
        assert (a["acc"] - b["acc"]).abs().max() < 2e-3 and (a["depth"] - b["depth"]).abs().max() < 2e-3


def test_grid_keeps_every_ground_truth_surface(fitted):
    """Surface points of every camera and frame (ground-truth depth, in NDC) lie in occupied cells."""
    scene = fitted.scene
    grid = OccupancyGrid.from_field(fitted.field)
    ax = -scene.focal / (scene.width / 2.0)
    ay = -scene.focal / (scene.height / 2.0)
    for frame in range(scene.num_frames):
        for cam in range(scene.num_cams):
            points = unproject_depth(scene.gt["depth"][frame, cam], scene.K[cam], scene.c2w[cam]).reshape(-1, 3)
            x, y, z = points.unbind(-1)
            ndc = torch.stack([ax * x / z, ay * y / z, 1.0 + 2.0 / z], dim=-1)
            inside = ((ndc >= scene.scene_box[0]) & (ndc <= scene.scene_box[1])).all(-1)
            assert inside.float().mean() > 0.9
            hit = grid.lookup(ndc[inside])
            assert hit.all(), f"frame {frame} cam {cam}: {(~hit).sum()} surface points in empty cells"


def test_early_ray_termination_skips_samples_behind_opaque_matter(fitted):
    """Renders stop each ray once its transmittance is below the threshold: far fewer density evaluations, weights
    that differ by at most the threshold. Here without the time volume (a field too large for it): the march looks
    the density up in the field itself, at the cells of the all-times grid."""
    scene, field = fitted.scene, fitted.field
    rays_o, rays_d = scene.image_rays(scene.test_cams[0])
    evaluated = []
    density = field.density

    def counting(points, t):
        evaluated.append(points.shape[0])
        return density(points, t)

    weights = {}
    with torch.no_grad():
        field.density = counting
        try:
            for stop in (0.0, 1e-3):
                sampler = build_sampler("fast", scene.ndc, min_transmittance=stop, render_volume_mib=0)
                evaluated.clear()
                steps, sigma = sampler.march(field, rays_o, rays_d, field.n_samples_full, 0.0, segment=8)
                weights[stop] = (alpha_weights(sigma, steps.dists * field.distance_scale)[1], sum(evaluated))
        finally:
            del field.density
    (reference, full), (stopped, fewer) = weights[0.0], weights[1e-3]
    assert 0 < fewer < full, (fewer, full)  # how many fewer depends on how opaque the model is
    assert (reference - stopped).abs().sum(-1).max() <= 1e-3 + 1e-6
    assert torch.equal(stopped[:, :8], reference[:, :8])  # the first segment is always evaluated


@pytest.mark.parametrize("volume_mib", [512, 0])  # the frame's volume, or the all-times grid (a field too large)
def test_renders_follow_the_trainer_steps(fitted, small_scene_dir, volume_mib):
    """The fused optimizer's steps do not count tensor versions: renders at the same time must still see them."""
    scene = fitted.scene
    args = parse_args(TINY + ["--datadir", str(small_scene_dir), "--n_iters", "60", "--occupancy_warmup", "0"])
    torch.manual_seed(0)
    trainer = Trainer(field_from_args(args, scene), scene, FitSettings.from_args(args), tensorboard=False)
    trainer.train(progress=False)
    field, cam = trainer.field, scene.test_cams[0]
    fast, dense = build_sampler("fast", scene.ndc, render_volume_mib=volume_mib), build_sampler("dense", scene.ndc)
    kept = [plane.data.clone() for plane in field.density_plane]
    with torch.no_grad():  # an empty field, rendered: its volume or grid is empty
        for plane in field.density_plane:
            plane.data.zero_()
    field.optimizer_steps += 1
    assert render_image(field, fast, scene, 0, cam, color=False)["acc"].max() == 0
    with torch.no_grad():  # the field back, as fused steps change it: values moved, version counters not
        for plane, values in zip(field.density_plane, kept):
            plane.data.copy_(values)
    field.optimizer_steps += 1
    after = render_image(field, fast, scene, 0, cam, color=False)["depth"]
    assert (after - render_image(field, dense, scene, 0, cam, color=False)["depth"]).abs().max() < 1e-3
    trainer.train(n=5, progress=False)  # and real steps
    after = render_image(field, fast, scene, 0, cam, color=False)["depth"]
    assert (after - render_image(field, dense, scene, 0, cam, color=False)["depth"]).abs().max() < 1e-3
