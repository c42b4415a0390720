"""Fields, shading modes, regularizers and the model registry (models/fields.py, shading.py, regularizers.py)."""

from __future__ import annotations

import pytest
import torch

from models import MODELS, ModelError, N_to_reso, build_model, build_sampler, render_rays
from models.fields import n_samples_for, voxel_schedule
from models.regularizers import density_l1, orthogonality, total_variation, tv_loss
from models.shading import ShadingError, positional_encoding

BOX = torch.tensor([[-1.5, -1.67, -1.0], [1.5, 1.67, 1.0]])


def tiny(model_name="StreamTensorVMSplit", shading="MLP_Fea", app_dim=27, **kw):
    torch.manual_seed(0)
    return build_model(model_name, BOX, [8, 9, 6], density_n_comp=[4, 2, 2], appearance_n_comp=[4, 2, 2],
                       app_dim=app_dim, shadingMode=shading, near_far=[0.0, 1.0], view_pe=2, fea_pe=2, pos_pe=2,
                       featureC=16, fea2denseAct="relu", num_frames=6, ld_per_frame=0.5, **kw)


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("shading,app_dim", [("MLP_Fea", 27), ("MLP_PE", 27), ("MLP", 27), ("SH", 27), ("RGB", 3)])
def test_field_interface(model_name, shading, app_dim):
    field = tiny(model_name, shading, app_dim)
    xyz = torch.rand(10, 3) * 2 - 1
    sigma = field.density(xyz, 0.3)
    feats = field.app_features(xyz, 0.3)
    rgb = field.color(xyz, torch.nn.functional.normalize(torch.randn(10, 3), dim=-1), feats)
    assert sigma.shape == (10,) and (sigma >= 0).all()
    assert feats.shape == (10, app_dim) and rgb.shape == (10, 3)


def test_release_state_dict_keys():
    keys = set(tiny().state_dict())
    for name in ("density_plane.0", "density_line.2", "app_plane.1", "app_line.0", "basis_mat.weight",
                 "renderModule.mlp.0.weight", "renderModule.mlp.4.bias", "target_portion"):
        assert name in keys
    assert "aabb" not in keys
    # stored channels: n_comp + ceil((6 - 1) * 0.5) = n_comp + 3; planes [1, C, res_b, res_a]
    assert tiny().state_dict()["density_plane.0"].shape == (1, 7, 9, 8)
    assert tiny().state_dict()["density_line.0"].shape == (1, 7, 6, 1)


def test_unknown_names_are_errors():
    with pytest.raises(ModelError, match="StreamTensorVMSplit"):
        build_model("TensorVMSplit", BOX, [4, 4, 4])
    with pytest.raises(ShadingError, match="MLP_Fea"):
        tiny(shading="Phong")


def test_positional_encoding_order():
    pe = positional_encoding(torch.tensor([[1.0, 2.0]]), 2)
    expected = torch.tensor([[1.0, 2.0, 2.0, 4.0]])  # dimension-major: x*1, x*2, y*1, y*2
    assert torch.allclose(pe, torch.cat([expected.sin(), expected.cos()], dim=-1))


def test_grid_sizes_and_sample_counts():
    # the n3dv configs: 128^3 -> 640^3 voxels in the NDC box, upsampled 4 times
    assert N_to_reso(2097156, BOX) == [141, 157, 94]
    counts = voxel_schedule(2097156, 262144000, 4)
    assert abs(counts[-1] - 262144000) < 1000 and len(counts) == 4  # float32, as in the release
    assert N_to_reso(counts[-1], BOX) == [706, 786, 471]
    assert n_samples_for([141, 157, 94], 0.5) == int((141**2 + 157**2 + 94**2) ** 0.5 / 0.5)
    field = tiny()
    step = (BOX[1] - BOX[0]) / (torch.tensor([8, 9, 6]) - 1)
    expected = int(torch.linalg.norm(BOX[1] - BOX[0]) / (step.mean() * 2.0)) + 1  # default step_ratio 2.0
    assert field.n_samples_full == expected


def test_upsample_keeps_values_at_grid_corners():
    field = tiny()
    before = field.density_plane[0].detach().clone()
    field.upsample([15, 17, 11])
    after = field.density_plane[0]
    assert after.shape == (1, 7, 17, 15)
    assert torch.allclose(after[..., 0, 0], before[..., 0, 0]) and torch.allclose(after[..., -1, -1],
                                                                                  before[..., -1, -1])
    assert field.density_line[0].shape == (1, 7, 11, 1) and field.gridSize == [15, 17, 11]


def test_regularizers_by_hand():
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])  # h diffs 2, 2; w diffs 1, 1
    assert total_variation(x).item() == pytest.approx(2 * (8 / 2 + 2 / 2))
    line = torch.tensor([[[[0.0], [1.0], [3.0]]]])  # a line: only its length axis counts
    assert total_variation(line).item() == pytest.approx(2 * (1 + 4) / 2)
    field = tiny()
    assert tv_loss(field, "density").item() > 0 and tv_loss(field, "app").item() > 0
    assert density_l1(field).item() > 0 and orthogonality(field).item() > 0
    cp = tiny("StreamTensorCP")
    assert tv_loss(cp, "density").item() > 0 and orthogonality(cp).item() > 0


def test_total_variation_gradient_matches_autograd_of_the_formula():
    def reference(x):  # the formula, differentiated by autograd
        batch, _, h, w = x.shape
        total = x.new_zeros(())
        if h > 1:
            total = total + (x[:, :, 1:] - x[:, :, :-1]).pow(2).sum() / x[:, :, 1:].numel() * batch
        if w > 1:
            total = total + (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).sum() / x[:, :, :, 1:].numel() * batch
        return 2.0 * total / batch

    for shape in [(1, 3, 5, 4), (2, 2, 6, 1), (1, 1, 1, 7)]:
        x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        torch.autograd.gradcheck(total_variation, (x,))
        value = total_variation(x) * 3.0
        value.backward()
        fused_grad = x.grad.clone()
        x.grad = None
        (reference(x) * 3.0).backward()
        assert value.item() == pytest.approx(reference(x).item() * 3.0)
        assert torch.allclose(fused_grad, x.grad)
    with pytest.raises(ValueError, match="B, C, H, W"):
        total_variation(torch.zeros(3, 4))


@pytest.mark.parametrize("shape", [(1, 5, 9, 7), (2, 3, 6, 1), (1, 2, 1, 8), (1, 4, 1, 1)])
def test_compiled_total_variation_is_the_pytorch_one(shape):
    """``compiled``: float32 CPU factors in one compiled loop, the same value and gradient up to float rounding
    (planes, lines, one-row maps, a single node); other dtypes take the PyTorch passes (the gradcheck above)."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2)).requires_grad_()
    results = []
    for compiled in (True, False):
        x.grad = None
        value = total_variation(x, compiled) * 3.0
        value.backward()
        results.append((value.item(), x.grad.clone()))
    (value, grad), (reference, reference_grad) = results
    assert value == pytest.approx(reference, rel=1e-5, abs=1e-7)
    assert torch.allclose(grad, reference_grad, rtol=1e-5, atol=1e-7)
    field = tiny()
    assert tv_loss(field, "app", compiled=True).item() == pytest.approx(tv_loss(field, "app").item(), rel=1e-5)


def test_render_rays_shapes_and_gradients():
    field = tiny()
    sampler = build_sampler("dense", ndc=True)
    rays_o = torch.tensor([[0.0, 0.0, -1.0]]).repeat(7, 1) + torch.randn(7, 3) * 0.1
    rays_d = torch.tensor([[0.0, 0.0, 2.0]]).repeat(7, 1)
    out = render_rays(field, sampler, rays_o, rays_d, 0.5, n_samples=16, train=True,
                      generator=torch.Generator().manual_seed(0))
    assert out["rgb"].shape == (7, 3) and out["depth"].shape == (7,) and out["acc"].shape == (7,)
    out["rgb"].sum().backward()
    assert field.density_plane[0].grad is not None and field.app_plane[0].grad is not None


# --- compiled lookups of CPU fits (models/compiled_field.py) ---------------------------------------------------
def _random_vm(num_frames: int, ld_per_frame: float, reso=(17, 13, 11), seed=0):
    from models.fields import StreamTensorVMSplit

    torch.manual_seed(seed)
    field = StreamTensorVMSplit(torch.tensor([[-1.0, -1, -1], [1, 1, 1]]), list(reso), density_n_comp=[8, 4, 4],
                                appearance_n_comp=[8, 4, 4], app_dim=5, shadingMode="MLP", num_frames=num_frames,
                                ld_per_frame=ld_per_frame)
    with torch.no_grad():
        for p in field.parameters():
            p.normal_()
    return field


def _lookups_and_gradients(field, xyz, t, compiled: bool):
    field.compiled_lookups = compiled
    field.zero_grad(set_to_none=True)
    density, app = field.density_feature(xyz, t), field.app_features(xyz, t)
    weights = torch.linspace(-1, 1, xyz.shape[0])
    ((density * weights).sum() + (app * app).sum()).backward()
    grads = {name: p.grad.clone() for name, p in field.named_parameters() if p.grad is not None}
    field.compiled_lookups = False
    return density.detach(), app.detach(), grads


@pytest.mark.parametrize("num_frames, ld_per_frame", [(16, 0.5), (5, 1), (3, 0), (9, 2), (11, 0.25)])
def test_compiled_lookups_and_gradients_equal_pytorch(num_frames, ld_per_frame):
    """Several frames in one lookup (times between table rows blend an entering channel; grouped and unstreamed
    fields), points on and beyond the box's faces (zeros outside, as grid_sample): the same features and factor
    gradients as the PyTorch operators up to float rounding."""
    from models.fields import FrameTimes

    field = _random_vm(num_frames, ld_per_frame)
    times = (0.0, 0.13, 0.37, 0.5, 0.81, 1.0)
    counts = (40, 0, 75, 33, 60, 52)
    xyz = torch.rand(sum(counts), 3) * 2.2 - 1.1
    xyz[:4] = torch.tensor([[1.0, 1, 1], [-1, -1, -1], [1.0000001, 0, 0], [-1.05, 0.5, 0.3]])
    t = FrameTimes(times, counts)
    reference = _lookups_and_gradients(field, xyz, t, compiled=False)
    compiled = _lookups_and_gradients(field, xyz, t, compiled=True)
    assert torch.allclose(compiled[0], reference[0], atol=1e-5) and torch.allclose(compiled[1], reference[1], atol=1e-5)
    assert compiled[2].keys() == reference[2].keys() and len(reference[2]) == 13  # 12 factors and the basis
    for name, grad in reference[2].items():
        assert torch.allclose(compiled[2][name], grad, rtol=1e-5, atol=1e-5 * grad.abs().max().item()), name
    # one time
    single, expected = (_lookups_and_gradients(field, xyz, 0.37, compiled=c) for c in (True, False))
    assert torch.allclose(single[0], expected[0], atol=1e-5) and torch.allclose(single[1], expected[1], atol=1e-5)
    for name, grad in expected[2].items():
        assert torch.allclose(single[2][name], grad, rtol=1e-5, atol=1e-5 * grad.abs().max().item()), name
    # without gradients (the forward then keeps nothing for a backward): the same values
    field.compiled_lookups = True
    with torch.no_grad():
        plain = field.density_feature(xyz, t)
    field.compiled_lookups = False
    assert torch.equal(plain, compiled[0])


def test_compiled_lookups_only_where_they_apply():
    """Points that need gradients, float64 points or factors, and point counts that do not add up are not given to
    the compiled loops (which check no index)."""
    from models import compiled_field
    from models.fields import FrameTimes

    field = _random_vm(4, 0.5)
    field.compiled_lookups = True
    xyz = torch.rand(10, 3) * 2 - 1
    assert compiled_field.usable(field, xyz)
    assert not compiled_field.usable(field, xyz.double()) and not compiled_field.usable(field, xyz.requires_grad_())
    xyz = xyz.detach()
    with pytest.raises(ValueError, match="do not describe 10 points"):
        field.density_feature(xyz, FrameTimes((0.0, 1.0), (4, 5)))
    field.double()
    assert not compiled_field.usable(field, xyz)
    field.float().compiled_lookups = False
    assert not compiled_field.usable(field, xyz)


def test_frame_times_lookups_equal_one_lookup_per_frame():
    """A lookup at several frames equals one lookup per frame, concatenated (PyTorch operators, VM and CP)."""
    from models.fields import FrameTimes, StreamTensorCP

    torch.manual_seed(1)
    cp = StreamTensorCP(torch.tensor([[-1.0, -1, -1], [1, 1, 1]]), [9, 8, 7], density_n_comp=6, appearance_n_comp=6,
                        app_dim=4, shadingMode="MLP", num_frames=4, ld_per_frame=0.5)
    for field in (_random_vm(4, 0.5), cp):
        xyz = torch.rand(30, 3) * 2 - 1
        t = FrameTimes((0.0, 0.4, 1.0), (10, 12, 8))
        for lookup in (field.density_feature, field.app_features):
            expected = torch.cat([lookup(xyz[:10], 0.0), lookup(xyz[10:22], 0.4), lookup(xyz[22:], 1.0)])
            assert torch.equal(lookup(xyz, t), expected)


# --- end compiled lookups --------------------------------------------------------------------------------------
