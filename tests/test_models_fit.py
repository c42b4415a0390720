"""Pixel samplers and the fitting loop on a tiny synthetic scene (models/samplers.py, models/fitting.py)."""

from __future__ import annotations

import pytest
import torch

from dataloader import load_scene
from models import FitSettings, Trainer, field_from_args, render_rays
from models.compositing import distortion
from models.config import parse_args
from models.pixel_batches import MotionSampler, UniformSampler, moving_pixels

TINY = ["--ndc_ray", "1", "--N_voxel_init", str(16**3), "--N_voxel_final", str(32**3), "--upsamp_list", "100",
        "--n_lamb_sigma", "4", "--n_lamb_sigma", "2", "--n_lamb_sigma", "2", "--n_lamb_sh", "8", "--n_lamb_sh", "4",
        "--n_lamb_sh", "4", "--shadingMode", "MLP_Fea", "--fea2denseAct", "relu", "--view_pe", "0", "--fea_pe", "0",
        "--featureC", "32", "--step_ratio", "1.0", "--ld_per_frame", "0.5", "--batch_size", "512", "--n_iters", "300",
        "--TV_weight_density", "1", "--TV_weight_app", "1", "--dataset_name", "synthetic"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def scene(small_scene_dir):
    return load_scene("synthetic", small_scene_dir, ndc=True)


def test_moving_pixels_by_hand(scene):
    images = torch.zeros(4, 2, 3, 5, 3, dtype=torch.uint8)
    images[2, 1, 1, 2] = 200  # moves at frames 2 and 3 (pixel index 1*15 + 1*5 + 2 = 22)
    images[3, 0, 0, 0, 0] = 30  # mean difference exactly 10/255: not moving (strictly more is needed)
    images[0, 0, 2, 4] = 31  # mean diff 31/255 > 10/255; frame 0 also differs from frame 3 (wrap-around)
    moving = moving_pixels(images, torch.tensor([0, 1]), window=0)
    assert moving[0].tolist() == [14] and moving[1].tolist() == [14]
    assert moving[2].tolist() == [22] and moving[3].tolist() == [22]
    widened = moving_pixels(images, torch.tensor([0, 1]), window=1)
    assert widened[1].tolist() == [14, 22] and widened[0].tolist() == [14]


def test_batches_hold_one_frame(scene):
    g = torch.Generator().manual_seed(0)
    for kind in (UniformSampler, MotionSampler):
        sampler = kind(scene, 300, generator=g)
        batch = sampler()
        assert isinstance(batch.frame, int) and 0 <= batch.frame < scene.num_frames
        assert len(batch.cams) == len(batch.ys) == len(batch.xs) == 300
        assert set(batch.cams.tolist()) <= set(scene.train_cams)
        assert batch.ys.max() < scene.height and batch.xs.max() < scene.width
    motion = MotionSampler(scene, 300, generator=g)
    batch = motion()
    pixels = (torch.searchsorted(motion.cams, batch.cams) * scene.height + batch.ys) * scene.width + batch.xs
    assert torch.isin(pixels[:30], motion.moving[batch.frame].long()).all()  # a tenth from the moving set


def test_lr_schedule_resumes_exactly(scene):
    args = parse_args(TINY + ["--datadir", str(scene.datadir), "--upsamp_list", "4", "--n_iters", "20"])
    settings = FitSettings.from_args(args)
    trainer = Trainer(field_from_args(args, scene), scene, settings)
    for _ in range(10):
        trainer.step()
    lrs = [g["lr"] for g in trainer.optimizer.param_groups]
    assert lrs[0] == pytest.approx(settings.lr_init * trainer.lr_scale_at(10), rel=1e-9)
    assert lrs[-1] == pytest.approx(settings.lr_basis * trainer.lr_scale_at(10), rel=1e-9)
    resumed = Trainer(trainer.field, scene, settings, start_iteration=10,
                      optimizer_state=trainer.optimizer.state_dict())
    assert [g["lr"] for g in resumed.optimizer.param_groups] == pytest.approx(lrs)
    assert resumed.tv_density == pytest.approx(trainer.tv_density)


def test_short_fit_beats_mean_colour(scene):
    """300 steps reach about 23.8 dB on the test camera where the mean colour gets 14.6 dB (measured);
    assert at least 6 dB above the baseline."""
    test = scene.images[:, scene.test_cams].float() / 255
    baseline = -10 * torch.log10(((test - test.mean(dim=(0, 1, 2, 3))) ** 2).mean()).item()
    args = parse_args(TINY + ["--datadir", str(scene.datadir)])
    trainer = Trainer(field_from_args(args, scene), scene, FitSettings.from_args(args))
    trainer.train(progress=False)
    psnr = trainer.evaluate(-1, save=False)
    assert trainer.field.gridSize != [16, 16, 16] and trainer.iteration == 300
    assert psnr > baseline + 6.0, f"test PSNR {psnr:.2f} dB vs mean-colour baseline {baseline:.2f} dB"


def test_distortion_loss_gathers_the_weight(scene):
    """``--distortion_weight`` pulls each ray's weight together: after the same short fit from the same seed, the
    test camera's rays spread their weight less along the ray (mip-NeRF 360's measure) than without it."""
    spread = {}
    for weight in (0.0, 0.05):
        args = parse_args(TINY + ["--datadir", str(scene.datadir), "--n_iters", "150", "--distortion_weight",
                                  str(weight)])
        trainer = Trainer(field_from_args(args, scene), scene, FitSettings.from_args(args), tensorboard=False)
        stats = trainer.train(progress=False)
        assert ("reg_distortion" in stats) == (weight > 0)
        rays_o, rays_d = scene.image_rays(scene.test_cams[0], 0)
        with torch.no_grad():
            out = render_rays(trainer.field, trainer.dense_sampler, rays_o, rays_d, float(scene.times[0]),
                              n_samples=trainer.n_samples, train=True, generator=torch.Generator().manual_seed(0))
        spread[weight] = distortion(out["weights"], out["z_vals"]).mean().item()
    assert spread[0.05] < 0.7 * spread[0.0], spread


def test_compiled_fit_follows_the_pytorch_fit(scene, monkeypatch):
    """``--fit_compiled 1`` (the default) fits with the compiled lookups, batches of several frames in one lookup
    (fast sampling), and follows the PyTorch operators' fit up to float rounding; renders after a step use the
    PyTorch operators again (the dense reference)."""
    from models import compiled_field

    calls = []
    original = compiled_field.vm_products
    monkeypatch.setattr(compiled_field, "vm_products", lambda *a: calls.append(a[3]) or original(*a))
    fields = {}
    for compiled in ("1", "0"):
        args = parse_args(TINY + ["--datadir", str(scene.datadir), "--sampling", "fast", "--occupancy_warmup", "5",
                                  "--fit_compiled", compiled])
        torch.manual_seed(0)
        trainer = Trainer(field_from_args(args, scene), scene, FitSettings.from_args(args))
        losses = [trainer.step()["mse"] for _ in range(12)]
        fields[compiled] = trainer.field, losses
        assert trainer.field.compiled_lookups is False
        if compiled == "1":
            assert calls and all(len(times) == trainer.settings.batch_frames for times in calls)
            calls.clear()
    assert not calls  # --fit_compiled 0: the PyTorch operators
    (compiled_field_, compiled_losses), (torch_field, torch_losses) = fields["1"], fields["0"]
    assert compiled_losses == pytest.approx(torch_losses, rel=1e-3)
    for (name, a), b in zip(compiled_field_.state_dict().items(), torch_field.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-3), name


def test_a_failed_step_leaves_the_lookup_switch_as_it_was(scene, monkeypatch):
    import models.fitting as fitting

    args = parse_args(TINY + ["--datadir", str(scene.datadir)])
    trainer = Trainer(field_from_args(args, scene), scene, FitSettings.from_args(args))

    def fails(field, *args, **kwargs):
        assert field.compiled_lookups is True  # on during the step's render
        raise RuntimeError("render failed")

    monkeypatch.setattr(fitting, "render_rays", fails)
    with pytest.raises(RuntimeError, match="render failed"):
        trainer.step()
    assert trainer.field.compiled_lookups is False
