"""Gaussian decoder head, Gaussian activations, and the 3DGS PLY round trip."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from synchuman_core.sparse import SparseTensor
from synchuman_core.stage2.decoders import SLatGaussianDecoder, SLatGaussianDecoderConfig, hammersley_offsets
from synchuman_core.stage2.gaussians import (
    OFFICIAL_PLY_TRANSFORM,
    Gaussians,
    load_gaussians_ply,
    quaternion_multiply,
    rotation_matrix_to_quaternion,
    save_gaussians_ply,
)

TINY = {
    "resolution": 64, "model_channels": 64, "latent_channels": 8, "num_blocks": 2, "num_heads": 4, "mlp_ratio": 2,
    "attn_mode": "swin", "window_size": 8, "use_fp16": False, "mv_condition_mode": "4_view",
    "use_multiscale": False, "use_faceinfo": False,
    "representation_config": {
        "lr": {"_xyz": 1.0, "_features_dc": 1.0, "_opacity": 1.0, "_scaling": 1.0, "_rotation": 0.1},
        "perturb_offset": True, "voxel_size": 1.5, "num_gaussians": 32, "2d_filter_kernel_size": 0.1,
        "3d_filter_kernel_size": 9e-4, "scaling_bias": 4e-3, "opacity_bias": 0.1, "scaling_activation": "softplus",
    },
}  # fmt: skip


def _decoder() -> SLatGaussianDecoder:
    cfg = SLatGaussianDecoderConfig.from_official({"name": "SLatGaussianDecoder", "args": TINY})
    torch.manual_seed(0)
    model = SLatGaussianDecoder(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) / (p.shape[-1] ** 0.5 if p.ndim > 1 else 10))
    return model.eval()


def test_offset_perturbation_is_the_hammersley_set():
    p = hammersley_offsets(32, 1.5)
    assert p.shape == (32, 3) and p.dtype == torch.float32

    def expect(u):
        return math.atanh((2 * u - 1) / 1.5)

    assert p[0].tolist() == pytest.approx([expect(0.0)] * 3, abs=1e-6)
    assert p[1].tolist() == pytest.approx([expect(1 / 32), expect(0.5), expect(1 / 3)], abs=1e-6)
    assert p[5].tolist() == pytest.approx([expect(5 / 32), expect(0.625), expect(7 / 9)], abs=1e-6)
    assert torch.equal(_decoder().offset_perturbation, p)


def test_head_layout_and_activations():
    model = _decoder()
    coords = torch.tensor([[0, 10, 20, 30], [0, 63, 0, 5]], dtype=torch.int32)
    feats = torch.zeros(2, 448)
    feats[:, 288:416] = 1.0  # raw rotation 1 -> x lr 0.1
    g = model.to_representation(SparseTensor(feats, coords))[0]
    assert g.num_gaussians == 64
    centre = (coords[:, 1:].float() + 0.5) / 64 - 0.5  # world voxel centres
    xyz = g.get_xyz.reshape(2, 32, 3)
    expected = centre[:, None, :] + torch.tanh(model.offset_perturbation)[None] * 0.75 / 64
    torch.testing.assert_close(xyz, expected, rtol=0, atol=1e-6)
    assert ((xyz - centre[:, None, :]).abs() <= 0.75 / 64).all()
    torch.testing.assert_close(g.get_opacity, torch.full((64, 1), 0.1), rtol=0, atol=1e-6)
    torch.testing.assert_close(g.get_scaling, torch.full((64, 3), math.sqrt(0.004**2 + 9e-4**2)), rtol=1e-5, atol=0)
    torch.testing.assert_close(g.rotation, torch.full((64, 4), 0.1))
    torch.testing.assert_close(g.get_rotation, F.normalize(torch.tensor([[1.1, 0.1, 0.1, 0.1]]), dim=-1).expand(64, 4))
    assert g.colors.shape == (64, 3) and torch.allclose(g.colors, torch.full((64, 3), 0.5))


def test_gaussian_decoder_forward():
    model = _decoder()
    g = torch.Generator().manual_seed(1)
    coords = torch.cat([torch.zeros(20, 1, dtype=torch.long), torch.randint(0, 64, (20, 3), generator=g)], 1)
    coords = torch.unique(coords, dim=0).int()
    x = SparseTensor(torch.randn(coords.shape[0], 8, generator=g), coords)
    mv_c, mv_n = torch.randn(1, 4, 64, 64, 1024, generator=g), torch.randn(1, 4, 64, 64, 1024, generator=g)
    with torch.no_grad():
        h = model.forward_features(x, mv_c, mv_n)
        gs = model(x, mv_c, mv_n)
    assert h.feats.shape == (coords.shape[0], 448) and torch.isfinite(h.feats).all()
    assert len(gs) == 1 and gs[0].num_gaussians == 32 * coords.shape[0]
    assert gs[0].get_xyz.abs().max() <= 0.5 + 0.75 / 64
    assert (gs[0].get_scaling >= 9e-4).all() and torch.allclose(gs[0].get_rotation.norm(dim=-1), torch.ones(1))


def _random_gaussians(n: int = 50, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    return Gaussians(
        xyz=torch.rand(n, 3, generator=g),
        features_dc=torch.randn(n, 1, 3, generator=g),
        scaling=torch.randn(n, 3, generator=g),
        rotation=torch.randn(n, 4, generator=g) * 0.3,
        opacity=torch.randn(n, 1, generator=g),
        min_kernel_size=9e-4, scaling_bias=4e-3, opacity_bias=0.1, scaling_activation="softplus",
    )  # fmt: skip


@pytest.mark.parametrize("transform", [None, OFFICIAL_PLY_TRANSFORM])
def test_ply_round_trip(tmp_path, transform):
    from plyfile import PlyData

    gs = _random_gaussians()
    path = tmp_path / "gs.ply"
    save_gaussians_ply(gs, path, transform=transform)
    ply = PlyData.read(str(path))
    names = [p.name for p in ply["vertex"].properties]
    assert names == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                     "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]  # fmt: skip
    v = ply["vertex"]
    opacity = torch.from_numpy(v["opacity"].copy())
    torch.testing.assert_close(torch.sigmoid(opacity)[:, None], gs.get_opacity)
    torch.testing.assert_close(torch.from_numpy(v["scale_1"].copy()), torch.log(gs.get_scaling[:, 1]))
    if transform is not None:  # (x, y, z) -> (x, -z, y)
        w = gs.get_xyz
        torch.testing.assert_close(torch.from_numpy(v["y"].copy()), -w[:, 2])
        torch.testing.assert_close(torch.from_numpy(v["z"].copy()), w[:, 1])
    back = load_gaussians_ply(path, transform=transform, min_kernel_size=9e-4, scaling_bias=4e-3,
                              scaling_activation="softplus")  # fmt: skip
    torch.testing.assert_close(back.get_xyz, gs.get_xyz, rtol=0, atol=1e-6)
    torch.testing.assert_close(back.get_opacity, gs.get_opacity, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(back.get_scaling, gs.get_scaling, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(back.features_dc, gs.features_dc)
    torch.testing.assert_close(back.get_rotation, gs.get_rotation, rtol=0, atol=1e-5)
    torch.testing.assert_close(back.rotation_biased.norm(dim=-1), gs.rotation_biased.norm(dim=-1), rtol=1e-5, atol=0)


def test_transform_quaternion_rotates_like_the_matrix():
    t = torch.tensor(OFFICIAL_PLY_TRANSFORM, dtype=torch.float64)
    q = rotation_matrix_to_quaternion(t)
    v = torch.tensor([0.3, -0.2, 0.7], dtype=torch.float64)
    qv = torch.cat([torch.zeros(1, dtype=torch.float64), v])
    conj = q * torch.tensor([1.0, -1, -1, -1], dtype=torch.float64)
    rotated = quaternion_multiply(quaternion_multiply(q, qv), conj)[1:]
    torch.testing.assert_close(rotated, t @ v)
    for m in ([[-1, 0, 0], [0, -1, 0], [0, 0, 1]], [[0, 0, 1], [0, 1, 0], [-1, 0, 0]], torch.eye(3)):
        m = torch.as_tensor(m, dtype=torch.float64)
        q = rotation_matrix_to_quaternion(m)
        r = quaternion_multiply(quaternion_multiply(q, qv), q * torch.tensor([1.0, -1, -1, -1], dtype=torch.float64))
        torch.testing.assert_close(r[1:], m @ v)
    with pytest.raises(ValueError, match="proper rotation"):
        rotation_matrix_to_quaternion(torch.diag(torch.tensor([1.0, 1.0, -1.0])))
