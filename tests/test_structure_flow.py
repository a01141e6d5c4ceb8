"""Sparse-structure flow DiT: official parity, mixin pieces, stage-1 quirks, configs, manifest."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import fixture_dir, manifest_path
from torch import nn

from synchuman_core.errors import ConfigError
from synchuman_core.parity import run_fixture
from synchuman_core.parity.fixgen import fill_model
from synchuman_core.stage1.structure_flow import (
    SparseStructureFlowConfig,
    SparseStructureFlowModel,
    StructureFlowLayers,
    structure_pos_emb,
)

TINY = {
    "resolution": 8, "in_channels": 8, "out_channels": 8, "model_channels": 32, "cond_channels": 16,
    "num_blocks": 3, "num_heads": 2, "mlp_ratio": 2, "patch_size": 1, "pe_mode": "ape",
    "qk_rms_norm": True, "qk_rms_norm_cross": False, "use_fp16": False,
}
_TRELLIS_KEYS = ("pos_emb", "t_embedder", "input_layer", "blocks", "out_layer")


def _tiny_model(**over) -> SparseStructureFlowModel:
    m = SparseStructureFlowModel(SparseStructureFlowConfig.from_official({**TINY, **over}))
    fill_model(m, 7)
    return m.eval()


def test_fixture_c_parity():
    comps = run_fixture(fixture_dir("c_sparse_structure_flow"))
    assert comps and all(c.passed for c in comps), [(c.name, c.relative_error()) for c in comps]


@torch.no_grad()
def test_block_ranges_compose_to_forward():
    m = _tiny_model()
    x, cond = torch.randn(2, 8, 8, 8, 8), torch.randn(2, 5, 16)
    t = torch.tensor([700.0, 300.0])
    ref = m(x, t, cond)
    h = m.structure_embed(x)
    assert h.shape == (2, 512, 32)
    te = m.structure_time(t)
    for a, b in ((0, 1), (1, 1), (1, None)):
        h = m.structure_blocks(h, te, cond, a, b)
    torch.testing.assert_close(m.structure_head(h, torch.float32), ref, rtol=0, atol=0)


@torch.no_grad()
def test_single_timestep_broadcasts_over_cfg_batch():
    """Stage 1 passes ``trellis_t`` of shape [1] with a batch of 2 (uncond, cond)."""
    m = _tiny_model()
    x, cond = torch.randn(2, 8, 8, 8, 8), torch.randn(2, 5, 16)
    one = m(x, torch.tensor([500.0]), cond)
    two = m(x, torch.tensor([500.0, 500.0]), cond)
    torch.testing.assert_close(one, two, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_fp16_timestep_rounds_frequency_embedding():
    m = _tiny_model()
    t16 = torch.tensor([993.0], dtype=torch.float16)
    from synchuman_core.modules import timestep_embedding

    freq = timestep_embedding(t16, 256).half().float()
    torch.testing.assert_close(m.structure_time(t16), m.t_embedder.mlp(freq), rtol=0, atol=0)
    # the rounding is real: fp32 and fp16-rounded embeddings differ
    assert not torch.equal(m.structure_time(torch.tensor([993.0])), m.structure_time(t16))


@torch.no_grad()
def test_patch_size_two_and_token_order():
    m = _tiny_model(patch_size=2)
    x, cond = torch.randn(1, 8, 8, 8, 8), torch.randn(1, 3, 16)
    assert m.structure_embed(x).shape == (1, 64, 32)
    assert m(x, torch.tensor([10.0]), cond).shape == (1, 8, 8, 8, 8)
    # pos_emb rows follow x*g^2 + y*g + z: row of (1, 2, 3) with g = 4 is 27
    pe = structure_pos_emb(m.config)
    from synchuman_core.modules import sincos_position_embedding

    torch.testing.assert_close(pe[27], sincos_position_embedding(torch.tensor([[1, 2, 3]]), 32)[0])


def test_wrong_input_shape_raises():
    m = _tiny_model()
    with pytest.raises(ValueError, match="structure latent"):
        m(torch.randn(1, 8, 16, 16, 16), torch.tensor([1.0]), torch.randn(1, 2, 16))


def test_config_parsing():
    c = SparseStructureFlowConfig.from_official({"name": "SparseStructureFlowModel", "args": TINY})
    assert c == SparseStructureFlowConfig.from_official(TINY)
    assert SparseStructureFlowConfig.from_official({**TINY, "num_heads": None, "model_channels": 128}).heads == 2
    with pytest.raises(ConfigError, match="heads"):
        SparseStructureFlowConfig.from_official({**TINY, "num_heads": None})  # 32 // 64 = 0 heads
    assert SparseStructureFlowConfig.from_official({**TINY, "use_checkpoint": True}).num_blocks == 3
    with pytest.raises(ConfigError, match="bogus"):
        SparseStructureFlowConfig.from_official({**TINY, "bogus": 1})
    with pytest.raises(ConfigError, match="rope"):
        SparseStructureFlowConfig.from_official({**TINY, "pe_mode": "rope"})
    with pytest.raises(ConfigError, match="SLatFlowModel"):
        SparseStructureFlowConfig.from_official({"name": "SLatFlowModel", "args": TINY})
    with pytest.raises(ConfigError, match="required"):
        SparseStructureFlowConfig.from_official({"resolution": 16})


class _Host(nn.Module, StructureFlowLayers):
    """A stand-in for the joint model: TRELLIS layers at the top level, no fp16 conversion."""

    def __init__(self, cfg):
        super().__init__()
        self._init_structure_flow(cfg, convert_fp16=False)


def _manifest_entries(name):
    return json.loads(manifest_path(name).read_text())


def test_joint_model_trellis_keys_match_manifest_on_meta():
    man = _manifest_entries("SyncHuman_2D3DCrossSpaceDiffusion")
    cfg = SparseStructureFlowConfig.from_joint_config(man["config"])
    assert (cfg.model_channels, cfg.num_blocks, cfg.heads, cfg.patch_size) == (1024, 24, 16, 1)
    want = [(k, v) for k, v in man["state_dict"].items() if k.split(".")[0] in _TRELLIS_KEYS]
    with torch.device("meta"):
        host = _Host(cfg)
    got = [(k, [list(v.shape), str(v.dtype).removeprefix("torch.")]) for k, v in host.state_dict().items()]
    assert got == want
    assert all(p.is_meta for p in host.parameters())


def test_standalone_use_fp16_converts_block_linears_only():
    man = _manifest_entries("SyncHuman_2D3DCrossSpaceDiffusion")
    cfg = SparseStructureFlowConfig.from_joint_config(man["config"])
    assert cfg.use_fp16
    with torch.device("meta"):
        m = SparseStructureFlowModel(cfg)
    sd = m.state_dict()
    assert sd["blocks.3.self_attn.to_qkv.weight"].dtype == torch.float16
    assert sd["blocks.3.norm2.weight"].dtype == torch.float32
    assert sd["blocks.3.self_attn.q_rms_norm.gamma"].dtype == torch.float32
    assert sd["input_layer.weight"].dtype == torch.float32 and sd["t_embedder.mlp.0.weight"].dtype == torch.float32
    assert sum(v.numel() for k, v in sd.items() if k != "pos_emb") == 555_543_560


@torch.no_grad()
def test_fp16_torso_close_to_fp32():
    m32 = _tiny_model()
    m16 = _tiny_model(use_fp16=True)
    assert m16.structure_torso_dtype() == torch.float16
    x, cond = torch.randn(2, 8, 8, 8, 8), torch.randn(2, 5, 16)
    t = torch.tensor([700.0, 300.0])
    a, b = m32(x, t, cond), m16(x, t, cond)
    assert b.dtype == torch.float32
    assert (a - b).abs().max() / a.abs().max() < 2e-2
