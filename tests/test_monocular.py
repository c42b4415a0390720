"""Monocular captures in the Nerfies layout (Nerfies, HyperNeRF, DyCheck): the reader, its cameras, fitting."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from test_stream_train import CONFIG

from dataloader import SceneError, load_scene
from dataloader.nerfies import camera_to_json, read_camera
from dataloader.synthetic_render import look_at, make_monocular_capture

CENTER = np.array([0.3, -0.2, 1.5])
SCALE = 0.5


def nerfies_project(camera: dict, point: np.ndarray) -> np.ndarray:
    """Pixel position (pixel i spans [i, i + 1]) of a source-world point, by the formats' documented model."""
    R, c = np.asarray(camera["orientation"]), np.asarray(camera["position"])
    x, y, z = R @ (point - c)
    x, y = x / z, y / z
    k1, k2, k3 = camera["radial_distortion"]
    p1, p2 = camera["tangential_distortion"]
    r = x * x + y * y
    d = 1 + r * (k1 + r * (k2 + k3 * r))
    xd = x * d + 2 * p1 * x * y + p2 * (r + 2 * x * x)
    yd = y * d + 2 * p2 * x * y + p1 * (r + 2 * y * y)
    f, (cx, cy) = camera["focal_length"], camera["principal_point"]
    return np.array([f * xd + camera["skew"] * yd + cx, f * camera["pixel_aspect_ratio"] * yd + cy])


def write_capture(root: Path, frames: int = 4, size=(40, 30), distortion=(0.08, -0.03, 0.01, 0.002, -0.001),
                  splits: bool = False, val_missing: bool = False) -> Path:
    """A small capture with every file of the layout: a moving camera with distortion, one static val camera."""
    width, height = size
    rng = np.random.default_rng(0)
    K = np.array([[36.0, 0.4, 20.5], [0.0, 36.0 * 1.02, 14.0], [0.0, 0.0, 1.0]])
    (root / "camera").mkdir(parents=True)
    for scale in (1, 2):
        (root / "rgb" / f"{scale}x").mkdir(parents=True)
    train, val, metadata = [], [], {}
    for t in range(frames):
        for cam in (0, 1):
            if cam == 1 and val_missing and t == 2:
                continue
            name = f"{cam}_{t:05d}"
            position = [0.2 * t, 0.1, 3.0] if cam == 0 else [-0.5, 0.3, 3.2]
            pose = look_at(position, CENTER)
            camera = camera_to_json(pose, K, distortion if cam == 0 else [0.0] * 5, (width, height))
            (root / "camera" / f"{name}.json").write_text(json.dumps(camera))
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            iio.imwrite(root / "rgb" / "1x" / f"{name}.png", image)
            iio.imwrite(root / "rgb" / "2x" / f"{name}.png", image[::2, ::2])
            metadata[name] = {"warp_id": t, "appearance_id": t, "camera_id": cam}
            (train if cam == 0 else val).append(name)
    (root / "scene.json").write_text(json.dumps({"center": CENTER.tolist(), "scale": SCALE, "near": 0.5,
                                                 "far": 2.5}))
    if splits:
        (root / "splits").mkdir()
        for name, items in (("train", train), ("val", val)):
            (root / "splits" / f"{name}.json").write_text(json.dumps({
                "frame_names": items, "time_ids": [metadata[i]["warp_id"] for i in items],
                "camera_ids": [metadata[i]["camera_id"] for i in items]}))
    else:
        (root / "dataset.json").write_text(json.dumps({"ids": train + val, "train_ids": train, "val_ids": val}))
        (root / "metadata.json").write_text(json.dumps(metadata))
    return root


def test_camera_file_round_trip():
    pose = look_at([1.0, 0.5, 2.0], [0.0, 0.0, 0.0])
    K = np.array([[100.0, 0.5, 31.0], [0.0, 98.0, 25.0], [0.0, 0.0, 1.0]])
    data = camera_to_json(pose, K, [0.1, -0.02, 0.003, 0.001, -0.002], (64, 48))
    assert data["tangential_distortion"] == [0.001, -0.002]
    back = read_camera_from(data)
    np.testing.assert_allclose(back.c2w, pose, atol=1e-12)
    np.testing.assert_allclose(back.K, K, atol=1e-12)
    np.testing.assert_allclose(back.distortion, [0.1, -0.02, 0.003, 0.001, -0.002])
    # Nerfies itself writes the tangential coefficients under "tangential"
    data["tangential"] = data.pop("tangential_distortion")
    np.testing.assert_allclose(read_camera_from(data).distortion[3:], [0.001, -0.002])


def read_camera_from(data: dict, folder=None):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.json"
        path.write_text(json.dumps(data))
        return read_camera(path)


@pytest.mark.parametrize("splits", [False, True])
def test_reader_rays_match_the_formats_projection(tmp_path, splits):
    root = write_capture(tmp_path / "capture", splits=splits)
    scene = load_scene("nerfies", root)
    assert scene.images.shape == (4, 2, 30, 40, 3) and scene.moving and not scene.ndc
    assert (scene.cam_ids, scene.train_cams, scene.test_cams, scene.frame_ids) == ([0, 1], [0], [1], [0, 1, 2, 3])
    torch.testing.assert_close(scene.times, torch.tensor([0, 1 / 3, 2 / 3, 1]))
    assert scene.near_far == (0.5, 2.5)
    original = iio.imread(root / "rgb" / "1x" / "0_00002.png")
    assert torch.equal(scene.images[2, 0], torch.from_numpy(original))
    # a point on the ray through pixel (i, j) projects, by the format's own model (distortion included), to the
    # centre of that pixel: (i + 0.5, j + 0.5) in the format's pixel coordinates
    world_to_source = torch.linalg.inv(scene.world_from_source)
    for frame, cam, (i, j) in [(0, 0, (3, 4)), (2, 0, (37, 26)), (3, 0, (20, 15)), (1, 1, (5, 25))]:
        o, d, _ = scene.rays(frame, cam, torch.tensor([j]), torch.tensor([i]))
        point = (o + 1.3 * d)[0].double()
        source = (world_to_source @ torch.cat([point, torch.ones(1, dtype=torch.float64)]))[:3].numpy()
        camera = json.loads((root / "camera" / f"{cam}_{frame:05d}.json").read_text())
        np.testing.assert_allclose(nerfies_project(camera, source), [i + 0.5, j + 0.5], atol=1e-4)
        # the normalized world is (p - center) * scale
        np.testing.assert_allclose(point.numpy(), (source - CENTER) * SCALE, atol=1e-5)


def test_reader_downsample_frames_and_validation_cameras(tmp_path, caplog):
    root = write_capture(tmp_path / "capture", val_missing=True)
    with caplog.at_level(logging.WARNING):
        scene = load_scene("nerfies", root, downsample=2)
    assert "test figures are measured on the training camera" in caplog.text
    assert scene.images.shape[2:4] == (15, 20)
    # the validation camera lacks time 2: it is no test view; the training camera is
    assert (scene.cam_ids, scene.test_cams) == ([0], [0])
    torch.testing.assert_close(scene.K[0, 0, 0], torch.tensor(18.0))
    sub = load_scene("nerfies", write_capture(tmp_path / "other"), frame_list=[1, 3])
    assert sub.frame_ids == [1, 3] and sub.images.shape[0] == 2
    torch.testing.assert_close(sub.times, torch.tensor([0.0, 1.0]))
    unordered = load_scene("nerfies", tmp_path / "other", frame_list=[3, 0, 1])  # times stay in [0, 1]
    torch.testing.assert_close(unordered.times, torch.tensor([1.0, 0.0, 1 / 3]))


def test_transparent_pixels_are_said(tmp_path, caplog):
    root = write_capture(tmp_path / "capture")
    first = sorted((root / "rgb" / "1x").glob("0_*.png"))[0]
    rgba = np.concatenate([iio.imread(first), np.full((30, 40, 1), 255, np.uint8)], axis=-1)
    rgba[:15, :, 3] = 0  # the top half invalid, as an iPhone capture marks what its depth missed
    iio.imwrite(first, rgba)
    with caplog.at_level(logging.WARNING):
        load_scene("iphone", root)
    assert "alpha 0 on 50.0% of its pixels" in caplog.text


def test_reader_bad_input(tmp_path):
    root = write_capture(tmp_path / "capture")
    with pytest.raises(SceneError, match="ndc_ray = 0"):
        load_scene("nerfies", root, ndc=True)
    (root / "scene.json").unlink()
    with pytest.raises(SceneError, match="scene.json"):
        load_scene("dycheck", root)
    root = write_capture(tmp_path / "capture2")
    (root / "camera" / "0_00001.json").write_text("{}")
    with pytest.raises(SceneError, match="0_00001.json"):
        load_scene("iphone", root)
    with pytest.raises(SceneError, match="frame_list"):
        load_scene("hypernerf", write_capture(tmp_path / "capture3"), frame_list=[7])
    with pytest.raises(SceneError, match="num_frames = 9, but .* has 4 training frames"):
        load_scene("nerfies", tmp_path / "capture3", num_frames=9)
    with pytest.raises(SceneError, match="skip_cams \\[7\\]: .* no such validation camera"):
        load_scene("nerfies", tmp_path / "capture3", skip_cams=[7])
    # the files of the layout, each missing or wrong, named
    root = write_capture(tmp_path / "capture4")
    (root / "dataset.json").unlink()
    with pytest.raises(SceneError, match="dataset.json"):
        load_scene("nerfies", root)
    root = write_capture(tmp_path / "capture5")
    (root / "camera" / "0_00002.json").unlink()
    with pytest.raises(SceneError, match="0_00002.json"):
        load_scene("nerfies", root)
    root = write_capture(tmp_path / "capture6")
    iio.imwrite(root / "rgb" / "1x" / "0_00003.png", np.zeros((10, 12, 3), np.uint8))
    with pytest.raises(SceneError, match="0_00003.png is 12x10, .*: the training camera's images must have one"):
        load_scene("nerfies", root)
    val = sorted((root / "rgb" / "1x").glob("1_*.png"))[0]
    iio.imwrite(val, np.zeros((10, 12, 3), np.uint8))
    iio.imwrite(root / "rgb" / "1x" / "0_00003.png", np.zeros((30, 40, 3), np.uint8))
    with pytest.raises(SceneError, match="validation camera 1 has another size.*skip_cams \\[1\\]"):
        load_scene("nerfies", root)
    assert load_scene("nerfies", root, skip_cams=[1]).cam_ids == [0]
    # several training cameras at one time (a rig) and per-frame poses do not mix
    root = write_capture(tmp_path / "capture7")
    dataset = json.loads((root / "dataset.json").read_text())
    dataset["train_ids"].append("1_00001")
    (root / "dataset.json").write_text(json.dumps(dataset))
    with pytest.raises(SceneError, match="share time id 1"):
        load_scene("nerfies", root)


def test_stream_train_names_a_bad_capture_and_exits_2(tmp_path, caplog):
    import stream_train

    root = write_capture(tmp_path / "capture")
    (root / "dataset.json").unlink()
    (tmp_path / "train.txt").write_text(MONO_CONFIG)
    with caplog.at_level("ERROR"):
        assert stream_train.main(["--config", str(tmp_path / "train.txt"), "--datadir", str(root), "--dataset_name",
                                  "nerfies", "--basedir", str(tmp_path / "log")]) == 2
    assert "dataset.json" in caplog.text


def test_synthetic_monocular_capture(tmp_path):
    root = make_monocular_capture(tmp_path / "mono", frames=5, width=48, height=36)
    scene = load_scene("synthetic", root)
    assert scene.moving and scene.images.shape == (5, 3, 36, 48, 3) and scene.test_cams == [1, 2]
    # the ray through every pixel of the moving camera, at the ground-truth depth, is the surface point the tool cast
    ys, xs = torch.meshgrid(torch.arange(36), torch.arange(48), indexing="ij")
    for frame in (0, 4):
        o, d, _ = scene.rays(frame, 0, ys.reshape(-1), xs.reshape(-1))
        ours = o + scene.gt["depth"][frame, 0].reshape(-1, 1) * d
        c2w, K = scene.gt["c2w_source"][frame, 0].double(), scene.gt["K"][0].double()
        dirs = torch.stack([(xs.reshape(-1) + 0.5 - K[0, 2]) / K[0, 0], -(ys.reshape(-1) + 0.5 - K[1, 2]) / K[1, 1],
                            -torch.ones(36 * 48, dtype=torch.float64)], -1) @ c2w[:3, :3].T
        source = c2w[:3, 3] + scene.gt["depth"][frame, 0].reshape(-1, 1).double() * scene.scale * dirs
        world = (scene.world_from_source @ torch.cat([source, torch.ones(len(source), 1, dtype=torch.float64)],
                                                      1).T).T[:, :3]
        torch.testing.assert_close(ours.double(), world, atol=1e-4, rtol=0)
    # the camera moves, the validation cameras do not
    assert not torch.allclose(scene.frame_c2w[0, 0], scene.frame_c2w[4, 0])
    assert torch.equal(scene.frame_c2w[0, 1:], scene.frame_c2w[4, 1:])


# the tiny fit of test_stream_train, in box mode, a little larger (monocular novel views need it)
MONO_CONFIG = (CONFIG.replace("ndc_ray = 1", "ndc_ray = 0").replace("n_iters = 30", "n_iters = 300")
               .replace("batch_size = 256", "batch_size = 512").replace("N_voxel_final = 8000", "N_voxel_final = 32768")
               .replace("upsamp_list = [15]", "upsamp_list = [100]").replace("step_ratio = 2.0", "step_ratio = 1.0")
               .replace("vis_every = 20", "vis_every = 1000").replace("ckpt_every = 10", "ckpt_every = -1")
               .replace("render_path = 1", "render_path = 0").replace("featureC = 16", "featureC = 32"))


def test_fit_monocular_capture_beats_a_floor_on_the_validation_cameras(tmp_path, one_thread):
    import stream_train

    root = make_monocular_capture(tmp_path / "mono", frames=4, width=48, height=36)
    (tmp_path / "train.txt").write_text(MONO_CONFIG)
    argv = ["--config", str(tmp_path / "train.txt"), "--datadir", str(root), "--basedir", str(tmp_path / "log"),
            "--expname", "mono"]
    assert stream_train.main(argv) == 0
    run = tmp_path / "log" / "mono"
    lines = (run / "imgs_test_all" / "mean.txt").read_text().split("\n")
    values = {line.split()[0]: float(line.split()[1]) for line in lines if line.startswith("cam")}
    # the validation cameras were never fitted; a blank grey guess scores about 11 dB on this scene
    assert set(values) == {"cam01", "cam02"}
    assert min(values.values()) > 15.0, values


MONO_EDIT = """
prompt = make it purple
ip2p_device = cpu
sequence_length = 3
diffusion_steps = 2
refine_num_steps = 600
refine_diffusion_steps = 2
post_edit_iters = 10
editor_threads = 1
edit_save_every = 0
render_path = 0
"""


@pytest.fixture(scope="module")
def mono_fitted(tmp_path_factory):
    """A monocular capture (6 frames at 48x36) and a tiny NeRF fitted to it: ``(capture, checkpoint)``."""
    import stream_train

    root = tmp_path_factory.mktemp("mono_fit")
    capture = make_monocular_capture(root / "capture", frames=6, width=48, height=36)
    (root / "train.txt").write_text(MONO_CONFIG)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    assert stream_train.main(["--config", str(root / "train.txt"), "--datadir", str(capture), "--basedir", str(root),
                              "--expname", "nerf", "--render_test", "0", "--n_iters", "120"]) == 0
    torch.set_num_threads(before)
    return capture, root / "nerf" / "ckpt-119.th"


def test_monocular_edit_schedule_end_to_end(mono_fitted, tmp_path, one_thread):
    import stream_edit
    from editing.evaluation import ground_truth_flow, temporal_warp_errors

    capture, ckpt = mono_fitted
    config = tmp_path / "edit.txt"
    config.write_text(MONO_CONFIG + MONO_EDIT)

    def argv(name, *extra):
        return ["--config", str(config), "--datadir", str(capture), "--basedir", str(tmp_path / "log"), "--expname",
                name, "--ckpt", str(ckpt), "--editor", "editing.toy_editors:colour_shift", "--n_iters", "10", *extra]

    # 1. a multi-view schedule is refused before any work, the monocular one is chosen by default
    assert stream_edit.main(argv("refused", "--edit_schedule", "keyframe")) == 2
    assert not (tmp_path / "log" / "refused" / "edit_state.json").exists()
    assert stream_edit.main(argv("mono")) == 0
    run = tmp_path / "log" / "mono"
    assert "edit_schedule = monocular" in (run / "config.txt").read_text()
    state = json.loads((run / "edit_state.json").read_text())
    assert sorted(k for k in state["done"] if "/time/" in k) == [
        "pass0/time/cam00/frames000-002", "pass0/time/cam00/frames003-004", "pass0/time/cam00/frames005-005"]
    edited = np.load(run / "edited_images.npy")
    scene = load_scene("synthetic", capture)
    # the validation cameras are never edited; the moving camera's every frame is
    assert np.array_equal(edited[:, 1:], scene.original[:, 1:].numpy())
    assert (np.abs(edited[:, 0].astype(int) - scene.original[:, 0].numpy()).mean(axis=(1, 2, 3)) > 5).all()
    # a second pass starts from the NeRF's renders of the moving camera only: the validation frames stay real
    assert stream_edit.main(argv("mono2", "--edit_rounds", "2")) == 0
    twice = np.load(tmp_path / "log" / "mono2" / "edited_images.npy")
    assert np.array_equal(twice[:, 1:], scene.original[:, 1:].numpy())
    # the second pass refines the video from frame 0 on (its first window whole, from the NeRF's renders)
    done = json.loads((tmp_path / "log" / "mono2" / "edit_state.json").read_text())["done"]
    assert "pass1/time/cam00/frames000-002" in done

    # 2. more consistent over time than editing every frame alone
    assert stream_edit.main(argv("perframe", "--edit_schedule", "perframe")) == 0
    perframe = np.load(tmp_path / "log" / "perframe" / "edited_images.npy")
    flow = ground_truth_flow(scene.gt)
    mono_error = np.nanmean(temporal_warp_errors(edited, flow, cams=[0]))
    perframe_error = np.nanmean(temporal_warp_errors(perframe, flow, cams=[0]))
    assert mono_error < 0.8 * perframe_error, (mono_error, perframe_error)


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs" / "nerfies").glob("*.txt")),
                         ids=lambda p: p.stem)
def test_capture_configs_parse(path):
    from models.config import parse_args

    args = parse_args(["--config", str(path)])
    assert args.ndc_ray == 0 and args.dataset_name in ("iphone", "hypernerf")
    assert args.downsample_train in (2.0, 4.0)
