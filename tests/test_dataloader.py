"""Scene loading, camera conventions and ray generation, checked against the synthetic scene's ground truth."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.image_io import ImageError, write_rgb
from dataloader import DATASETS, SceneError, cameras, load_scene


def sample_image(image: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``image [H, W, 3]`` at pixel index coordinates ``xy [N, 2]``."""
    H, W = image.shape[:2]
    grid = torch.stack([xy[:, 0] / (W - 1) * 2 - 1, xy[:, 1] / (H - 1) * 2 - 1], -1).view(1, 1, -1, 2)
    out = F.grid_sample(image.permute(2, 0, 1)[None], grid, align_corners=True, mode="bilinear")
    return out[0, :, 0].T


def test_registry_names():
    assert {"n3dv", "n3dv_dynamic", "synthetic"} <= set(DATASETS)


def test_load_synthetic_scene(synthetic_scene_dir):
    scene = load_scene("synthetic", synthetic_scene_dir)
    assert scene.images.shape == (12, 6, 120, 160, 3) and scene.images.dtype == torch.uint8
    assert scene.original is scene.images  # no copy until editing starts
    assert torch.allclose(scene.times, torch.arange(12) / 11.0)
    assert scene.test_cams == [0] and scene.train_cams == list(range(6))
    assert scene.K.shape == (6, 3, 3) and scene.c2w.shape == (6, 4, 4)
    assert scene.ndc and scene.near_far == (0.0, 1.0)
    assert scene.render_path.shape == (120, 4, 4)
    rot = scene.render_path[:, :3, :3]
    assert torch.allclose(rot.transpose(1, 2) @ rot, torch.eye(3).expand(120, 3, 3), atol=1e-5)
    # the release's recentring mirrors the world; the path keeps the cameras' handedness (no mirrored renders)
    assert torch.allclose(torch.linalg.det(rot), torch.linalg.det(scene.c2w[0, :3, :3]).expand(120), atol=1e-4)
    assert (rot[:, :, 0] * scene.c2w[0, :3, 0]).sum(-1).min() > 0.9  # x axes agree with the rig's
    assert scene.gt["depth"].shape == (12, 6, 120, 160)
    assert scene.gt["flow_fw"].shape == (11, 6, 120, 160, 2)
    held_out = load_scene("synthetic", synthetic_scene_dir, hold_out_test=True, num_frames=3)
    assert held_out.train_cams == [1, 2, 3, 4, 5] and held_out.num_frames == 3
    assert torch.allclose(held_out.times, torch.tensor([0.0, 0.5, 1.0]))


def test_frames_equal_rendered_pngs(synthetic_scene_dir):
    import imageio.v3 as iio

    scene = load_scene("synthetic", synthetic_scene_dir, frame_list=[3, 7], skip_cams=[1])
    assert scene.frame_ids == [3, 7] and scene.cam_ids == [0, 2, 3, 4, 5]
    png = iio.imread(synthetic_scene_dir / "frames" / "cam02" / "000008.png")
    assert np.array_equal(scene.images[1, 1].numpy(), png)


def test_cameras_match_ground_truth_poses(synthetic_scene_dir):
    scene = load_scene("synthetic", synthetic_scene_dir)
    M = scene.world_from_source.float()
    src = scene.gt["c2w_source"]
    expected_center = (M[:3, :3] @ src[:, :3, 3].T).T + M[:3, 3]
    assert torch.allclose(scene.c2w[:, :3, 3], expected_center, atol=1e-4)
    rot = M[:3, :3] * scene.scale  # remove the uniform scale to get the recentring rotation
    assert torch.allclose(scene.c2w[:, :3, :3], rot @ src[:, :3, :3], atol=1e-4)
    assert torch.allclose(scene.K, scene.gt["K"], atol=1e-3)


@pytest.mark.parametrize("src_cam,dst_cam", [(0, 5), (2, 3), (4, 1)])
def test_reprojection_with_ground_truth_depth(synthetic_scene_dir, src_cam, dst_cam):
    """Unproject camera A's depth, project into B, sample B: matches A where B sees the same surface."""
    scene = load_scene("synthetic", synthetic_scene_dir, num_frames=2)
    depth_a, depth_b = scene.gt["depth"][1, src_cam], scene.gt["depth"][1, dst_cam]
    points = cameras.unproject_depth(depth_a, scene.K[src_cam], scene.c2w[src_cam]).reshape(-1, 3)
    xy, z = cameras.project_points(points, scene.K[dst_cam], scene.c2w[dst_cam])
    inside = (xy[:, 0] >= 0) & (xy[:, 0] <= scene.width - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= scene.height - 1)
    seen_depth = sample_image(depth_b[..., None].expand(-1, -1, 3).contiguous(), xy)[:, 0]
    visible = inside & ((seen_depth - z).abs() < 0.01 * z)
    assert visible.float().mean() > 0.7
    colour_a = scene.image(1, src_cam).reshape(-1, 3)
    colour_b = sample_image(scene.image(1, dst_cam), xy)
    error = (colour_a - colour_b).abs()[visible].mean()
    assert error < 0.02, error
    # a wrong convention (y not flipped) is clearly detected by the same measure
    wrong = torch.stack([xy[:, 0], scene.height - 1 - xy[:, 1]], -1)
    assert (colour_a - sample_image(scene.image(1, dst_cam), wrong)).abs()[visible].mean() > 5 * error


def test_ndc_depth_round_trip(synthetic_scene_dir):
    """World points <-> NDC ray parameter, and NDC rays pass through the NDC image of the points."""
    scene = load_scene("synthetic", synthetic_scene_dir, num_frames=1)
    cam = 3
    ys, xs = torch.meshgrid(torch.arange(0, 120, 7), torch.arange(0, 160, 9), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    points = cameras.unproject_depth(scene.gt["depth"][0, cam], scene.K[cam], scene.c2w[cam])[ys, xs]
    world_o, world_d = scene.world_rays(torch.full_like(xs, cam), ys, xs)
    t = cameras.points_to_ndc_depth(points)
    assert ((t > 0) & (t < 1)).all()
    assert torch.allclose(cameras.ndc_depth_to_points(t, world_o, world_d), points, atol=1e-3)
    ndc_o, ndc_d, _ = scene.rays(0, cam, ys, xs)
    on_ray = ndc_o + t[:, None] * ndc_d
    a = -scene.focal / (scene.width / 2)
    b = -scene.focal / (scene.height / 2)
    ndc_points = torch.stack([a * points[:, 0] / points[:, 2], b * points[:, 1] / points[:, 2],
                              1 + 2 / points[:, 2]], -1)
    assert torch.allclose(on_ray, ndc_points, atol=1e-4)


def test_index_rays_equal_full_image_rays(synthetic_scene_dir):
    scene = load_scene("synthetic", synthetic_scene_dir, num_frames=4)
    g = torch.Generator().manual_seed(0)
    n = 500
    frames = torch.randint(0, 4, (n,), generator=g)
    cams = torch.randint(0, 6, (n,), generator=g)
    ys = torch.randint(0, scene.height, (n,), generator=g)
    xs = torch.randint(0, scene.width, (n,), generator=g)
    rays_o, rays_d, times = scene.rays(frames, cams, ys, xs)
    assert torch.equal(times, scene.times[frames])
    for cam in range(6):
        full_o, full_d = scene.image_rays(cam)
        sel = cams == cam
        flat = ys[sel] * scene.width + xs[sel]
        assert torch.allclose(rays_o[sel], full_o[flat], atol=1e-6)
        assert torch.allclose(rays_d[sel], full_d[flat], atol=1e-6)
    assert torch.allclose(scene.rgb(frames, cams, ys, xs) * 255, scene.images[frames, cams, ys, xs].float())


def test_memory_is_three_bytes_per_pixel(synthetic_scene_dir):
    scene = load_scene("n3dv", synthetic_scene_dir)
    pixels = scene.images.shape[:4].numel()
    assert 3.0 <= scene.nbytes() / pixels < 3.05
    scene.make_editable()
    assert scene.images.data_ptr() != scene.original.data_ptr()
    scene.images[0, 0] = 0
    assert scene.original[0, 0].any()
    assert 6.0 <= scene.nbytes() / pixels < 6.05


def test_downsample_cache_is_reused(small_scene_dir, tmp_path, monkeypatch):
    datadir = tmp_path / "scene"
    shutil.copytree(small_scene_dir, datadir)
    first = load_scene("synthetic", datadir, downsample=2)
    assert first.images.shape == (4, 3, 18, 24, 3)
    assert float(first.K[0, 0, 0]) == pytest.approx(float(load_scene("n3dv", datadir).K[0, 0, 0]) / 2, rel=1e-6)
    cached = sorted((datadir / "frames2x" / "cam01").glob("*.png"))
    assert len(cached) == 4

    import dataloader.n3dv as n3dv

    def no_resize(*args, **kwargs):
        raise AssertionError("second load resized a frame instead of reading the cache")

    monkeypatch.setattr(n3dv.cv2, "resize", no_resize)
    second = load_scene("synthetic", datadir, downsample=2)
    assert torch.equal(first.images, second.images)
    monkeypatch.undo()

    # a damaged entry is rebuilt, and so is one older than its source frame (the frames were replaced since)
    cached[0].write_bytes(b"")
    source = sorted((datadir / "frames" / "cam01").glob("*"))[1]
    write_rgb(source, np.zeros((36, 48, 3), np.uint8))
    os.utime(source, (cached[1].stat().st_mtime + 10,) * 2)
    third = load_scene("synthetic", datadir, downsample=2)
    assert torch.equal(third.images[0, 1], first.images[0, 1])
    assert not third.images[1, 1].any() and first.images[1, 1].any()


def test_synthetic_scene_is_deterministic(tmp_path):
    from tools.make_synthetic_scene import make_synthetic_scene

    a = make_synthetic_scene(tmp_path / "a", cams=2, frames=2, width=32, height=24, videos=False)
    b = make_synthetic_scene(tmp_path / "b", cams=2, frames=2, width=32, height=24, videos=False)
    c = make_synthetic_scene(tmp_path / "c", cams=2, frames=2, width=32, height=24, seed=1, videos=False)
    for name in ("poses_bounds.npy", "gt/depth.npy", "gt/flow_fw.npy"):
        assert np.array_equal(np.load(a / name), np.load(b / name))
    assert not np.array_equal(np.load(a / "gt/depth.npy"), np.load(c / "gt/depth.npy"))


def test_ground_truth_flow_warps_frames(synthetic_scene_dir):
    """Backward flow of frame k+1 samples frame k at the right places (checks the tool's flow and occlusion)."""
    scene = load_scene("synthetic", synthetic_scene_dir, num_frames=3)
    flow, occ = scene.gt["flow_bw"][0, 2], scene.gt["occ_bw"][0, 2]
    ys, xs = torch.meshgrid(torch.arange(scene.height), torch.arange(scene.width), indexing="ij")
    xy = torch.stack([xs, ys], -1).reshape(-1, 2).float() + flow.reshape(-1, 2)
    warped = sample_image(scene.image(0, 2), xy)
    target = scene.image(1, 2).reshape(-1, 3)
    visible = ~occ.reshape(-1)
    assert flow.abs().max() > 1.0  # objects do move
    assert 0.0 < occ.float().mean() < 0.1
    assert (warped - target).abs()[visible].mean() < 0.02
    assert (scene.image(0, 2).reshape(-1, 3) - target).abs()[visible].mean() > 0.0


# --- bad input ----------------------------------------------------------------------------------------------
@pytest.fixture
def scene_copy(small_scene_dir, tmp_path):
    datadir = tmp_path / "scene"
    shutil.copytree(small_scene_dir, datadir)
    return datadir


def test_missing_poses_bounds(scene_copy):
    (scene_copy / "poses_bounds.npy").unlink()
    with pytest.raises(SceneError, match="poses_bounds.npy not found"):
        load_scene("n3dv", scene_copy)


def test_missing_scene_folder(tmp_path):
    with pytest.raises(SceneError, match="not found: check --datadir"):
        load_scene("n3dv", tmp_path / "nowhere")


def test_pose_rows_differ_from_cameras(scene_copy):
    poses = np.load(scene_copy / "poses_bounds.npy")
    np.save(scene_copy / "poses_bounds.npy", poses[:2])
    with pytest.raises(SceneError, match="2 pose rows but .* 3 cameras"):
        load_scene("n3dv", scene_copy)


def test_fewer_frames_than_num_frames(scene_copy):
    (scene_copy / "frames" / "cam01" / "000004.png").unlink()
    with pytest.raises(SceneError, match="num_frames = 4, but camera cam01 has only 3 frames"):
        load_scene("n3dv", scene_copy, num_frames=4)
    assert load_scene("n3dv", scene_copy, num_frames=3).num_frames == 3


def test_unreadable_image(scene_copy):
    (scene_copy / "frames" / "cam02" / "000002.png").write_bytes(b"not an image")
    with pytest.raises(ImageError, match="unreadable image .*cam02/000002.png"):
        load_scene("n3dv", scene_copy)


def test_unknown_dataset_name(scene_copy):
    with pytest.raises(SceneError, match="unknown dataset_name 'llff_dynamic'"):
        load_scene("llff_dynamic", scene_copy)


def test_downsample_to_empty_image(scene_copy):
    with pytest.raises(SceneError, match="downsample = 100.0 turns 48x36 frames into 0x0"):
        load_scene("n3dv", scene_copy, downsample=100.0)


def test_skip_unknown_camera(scene_copy):
    with pytest.raises(SceneError, match="skip_cams names cameras \\[7\\]"):
        load_scene("n3dv", scene_copy, skip_cams=[7])


def test_frame_suffixes_in_capitals_load(scene_copy):
    for frame in (scene_copy / "frames" / "cam01").glob("*.png"):
        frame.rename(frame.with_suffix(".PNG"))
    assert load_scene("n3dv", scene_copy).images.shape[:2] == (4, 3)


def test_a_camera_of_another_aspect_ratio_is_named(scene_copy):
    write_rgb(scene_copy / "frames" / "cam02" / "000003.png", np.zeros((48, 36, 3), np.uint8))  # rotated
    with pytest.raises(SceneError, match="cam02/000003.png is 36x48, another aspect ratio than the scene's 48x36"):
        load_scene("n3dv", scene_copy)


def test_frames_of_another_aspect_than_the_poses_are_named(scene_copy):
    for frame in (scene_copy / "frames" / "cam00").glob("*.png"):
        write_rgb(frame, np.zeros((48, 36, 3), np.uint8))
    with pytest.raises(SceneError, match="000001.png is 36x48 but .*poses_bounds.npy says 48x36"):
        load_scene("n3dv", scene_copy)


def test_synthetic_reader_needs_ground_truth(scene_copy):
    shutil.rmtree(scene_copy / "gt")
    with pytest.raises(SceneError, match="not a scene written by tools/make_synthetic_scene.py"):
        load_scene("synthetic", scene_copy)
    assert load_scene("n3dv", scene_copy).gt is None
