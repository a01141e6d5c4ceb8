"""Stage-2 mesh / Gaussian decoders: manifests, configs, block semantics, fixture f, dtypes."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import fixture_dir, manifest_path

from synchuman_core.errors import ConfigError
from synchuman_core.geometry.flexicubes import Mesh
from synchuman_core.parity import Fixture
from synchuman_core.parity.components.slat_mesh_decoder import run as run_f
from synchuman_core.sparse import SparseConv3d, SparseTensor
from synchuman_core.stage2.decoders import (
    MVSparseTransformerBlock,
    SLatGaussianDecoder,
    SLatGaussianDecoderConfig,
    SLatMeshDecoder,
    SLatMeshDecoderConfig,
)

DECODERS = {
    "slat_decoder_mesh": (SLatMeshDecoder, SLatMeshDecoderConfig),
    "slat_decoder_gs": (SLatGaussianDecoder, SLatGaussianDecoderConfig),
}


def _shell(res: int = 64, n_max: int = 40, seed: int = 0) -> torch.Tensor:
    """A few voxels of a spherical shell in a res^3 grid: coords [n, 4] (batch 0)."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.arange(res)] * 3, indexing="ij"), -1).reshape(-1, 3)
    r = (grid.float() + 0.5 - res / 2).norm(dim=-1)
    pts = grid[(r > res * 0.12) & (r < res * 0.12 + 1)]
    pts = pts[torch.randperm(pts.shape[0], generator=g)[:n_max]]
    return torch.cat([torch.zeros(pts.shape[0], 1, dtype=torch.long), pts], 1).int()


def _fill(model: torch.nn.Module, seed: int = 0, scale: float = 1.0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5 * scale)
            elif name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


TINY = {
    "resolution": 64, "model_channels": 256, "latent_channels": 8, "num_blocks": 2, "num_heads": 4,
    "mlp_ratio": 1, "attn_mode": "swin", "window_size": 8, "use_fp16": False, "mv_condition_mode": "4_view",
    "use_multiscale": False, "use_faceinfo": False,
}  # fmt: skip


@pytest.mark.parametrize("name", list(DECODERS))
def test_manifest_keys_shapes_dtypes_on_meta(name):
    manifest = json.loads(manifest_path(name).read_text())
    model_cls, cfg_cls = DECODERS[name]
    cfg = cfg_cls.from_official(manifest["config"])
    with torch.device("meta"):
        model = model_cls(cfg)
    ours = {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()}
    assert list(ours) == list(manifest["state_dict"])  # same keys, same order
    assert ours == manifest["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == manifest["total_parameters"]
    assert all(p.is_meta for p in model.parameters())
    assert model.torso_dtype() == torch.float16


def test_configs_reject_what_they_cannot_honour():
    base = {"name": "SLatMeshDecoder", "args": dict(TINY, representation_config={"use_color": True})}
    assert SLatMeshDecoderConfig.from_official(base).representation_config.use_color
    with pytest.raises(ConfigError, match="bogus"):
        SLatMeshDecoderConfig.from_official({**base, "args": {**base["args"], "bogus": 1}})
    with pytest.raises(ConfigError, match="use_normal"):
        SLatMeshDecoderConfig.from_official(
            {**base, "args": {**base["args"], "representation_config": {"use_normal": 1}}}
        )
    with pytest.raises(ConfigError, match="not SLatMeshDecoder"):
        SLatMeshDecoderConfig.from_official({**base, "name": "SLatGaussianDecoder"})
    with pytest.raises(ConfigError, match="use_faceinfo"):
        SLatMeshDecoderConfig.from_official({**base, "args": {**base["args"], "use_faceinfo": True}})
    with pytest.raises(ConfigError, match="mv_dim"):
        SLatMeshDecoderConfig.from_official({**base, "args": {**base["args"], "mv_dim": 0}})
    with pytest.raises(ConfigError, match="mv_condition_mode"):
        SLatMeshDecoderConfig.from_official(
            {**base, "args": {**base["args"], "mv_condition_mode": "front_global_cross"}}
        )
    with pytest.raises(ConfigError, match="attn_mode"):
        SLatMeshDecoderConfig.from_official({**base, "args": {**base["args"], "attn_mode": "shift_window"}})
    gs = SLatGaussianDecoderConfig.from_official(
        {"name": "SLatGaussianDecoder", "args": {**TINY, "use_checkpoint": True}}
    )
    assert gs.representation_config.num_gaussians == 32 and gs.representation_config.filter_3d_kernel_size == 9e-4


def test_block_order_attention_then_injection_then_mlp():
    torch.manual_seed(0)
    blk = _fill(MVSparseTransformerBlock(64, 4, mlp_ratio=2, attn_mode="full", num_views=1), scale=0.5)
    coords = _shell(16, 30)
    x = SparseTensor(torch.randn(coords.shape[0], 64), coords)
    mv_n, mv_c = torch.randn(coords.shape[0], 1024), torch.randn(coords.shape[0], 1024)
    out = blk(x, mv_n, mv_c).feats

    def ln(t):
        return F.layer_norm(t, t.shape[-1:], eps=1e-6)

    h = x.feats + blk.attn(x.replace(ln(x.feats))).feats
    h = h + blk.mv_condition(torch.cat([ln(h), mv_n, mv_c], dim=1))  # [h, normal, colour]
    h = h + blk.mlp(x.replace(ln(h))).feats
    torch.testing.assert_close(out, h, rtol=1e-5, atol=1e-5)
    assert blk.mv_condition[0].in_features == 64 + 2 * 1024
    # swapping the two modalities changes the result (the concat order matters)
    assert not torch.allclose(blk(x, mv_c, mv_n).feats, out, atol=1e-4)


def test_mesh_decoder_structure_and_skip_quirk():
    cfg = SLatMeshDecoderConfig.from_official(dict(TINY, representation_config={"use_color": True}))
    with torch.device("meta"):
        model = SLatMeshDecoder(cfg)
    for blk, (cin, cout) in zip(model.upsample, [(256, 64), (64, 32)]):
        assert isinstance(blk.skip_connection, SparseConv3d) and blk.skip_connection.spconv_1x1_quirk
        assert blk.skip_connection.conv.weight.shape == (cout, 1, 1, 1, cin)
    assert [b.attn.shift_window for b in model.blocks] == [0, 4]
    assert model.out_layer.out_features == 101 and model.mesh_resolution == 256


def _tiny_mesh_decoder(use_fp16=False) -> SLatMeshDecoder:
    cfg = SLatMeshDecoderConfig.from_official(dict(TINY, use_fp16=use_fp16, representation_config={"use_color": True}))
    torch.manual_seed(0)
    return _fill(SLatMeshDecoder(cfg), seed=1)


def test_mesh_decoder_forward_to_meshes():
    model = _tiny_mesh_decoder()
    coords = _shell(64, 24)
    x = SparseTensor(torch.randn(coords.shape[0], 8), coords)
    g = torch.Generator().manual_seed(2)
    mv_c = torch.randn(1, 4, 64, 64, 1024, generator=g)
    mv_n = torch.randn(1, 4, 64, 64, 1024, generator=g)
    with torch.no_grad():
        h = model.forward_features(x, mv_c, mv_n)
        # shift the SDF so that a surface exists around the voxels
        h = h.replace(torch.cat([h.feats[:, :8] * 0.01 - 0.002, h.feats[:, 8:]], 1))
        meshes = model.to_representation(h)
    assert h.feats.shape == (coords.shape[0] * 64, 101) and h.feats.dtype == torch.float32
    parents = (h.coords[:, 1:] // 4).unique(dim=0)
    assert parents.shape[0] == coords.shape[0]
    assert len(meshes) == 1 and isinstance(meshes[0], Mesh) and meshes[0].success
    assert meshes[0].vertices.abs().max() <= 0.5 and meshes[0].vertex_attrs.shape[1] == 6


def test_fp16_torso_runs_and_tracks_fp32():
    coords = _shell(64, 6)
    x = SparseTensor(torch.randn(coords.shape[0], 8), coords)
    g = torch.Generator().manual_seed(3)
    mv_c, mv_n = torch.randn(1, 4, 64, 64, 1024, generator=g), torch.randn(1, 4, 64, 64, 1024, generator=g)
    m16 = _tiny_mesh_decoder(use_fp16=True)
    assert m16.blocks[0].attn.to_qkv.weight.dtype == torch.float16
    assert m16.upsample[0].out_layers[0].conv.weight.dtype == torch.float16
    assert m16.upsample[0].act_layers[0].weight.dtype == torch.float32
    assert m16.input_layer.weight.dtype == torch.float32 and m16.out_layer.weight.dtype == torch.float32
    m32 = _tiny_mesh_decoder(use_fp16=False)
    m32.load_state_dict({k: v.float() for k, v in m16.state_dict().items()})
    with torch.no_grad():
        a, b = m16.forward_features(x, mv_c, mv_n).feats, m32.forward_features(x, mv_c, mv_n).feats
    assert a.dtype == torch.float32
    assert (a - b).abs().max() / b.abs().max() < 2e-2


def test_mv_inputs_are_validated():
    model = _tiny_mesh_decoder()
    coords = _shell(64, 4)
    x = SparseTensor(torch.randn(coords.shape[0], 8), coords)
    with pytest.raises(ValueError, match="mv_normal"):
        model.condition_mv(x, torch.zeros(1, 4, 64, 64, 1024), torch.zeros(1, 4, 64, 64, 2048))
    with pytest.raises(ValueError, match=r"\[0, 32\)"):
        model.condition_mv(x, torch.zeros(1, 4, 32, 32, 1024), torch.zeros(1, 4, 32, 32, 1024))


@pytest.mark.slow
def test_fixture_f_parity():
    torch.set_num_threads(1)
    fx = Fixture(fixture_dir("f_slat_mesh_decoder"), "slat_mesh_decoder", 1e-4)
    comps = run_f(fx)
    errors = {c.name: c.relative_error() for c in comps}
    assert all(c.passed for c in comps), errors
    assert errors["out_feats"] < 1e-5
