"""Shared dense blocks: norms, embedders, attention, modulated DiT block (against textbook formulas)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import manifest_path

from synchuman_core.modules import (
    AbsolutePositionEmbedder,
    ChannelLayerNorm32,
    FeedForwardNet,
    GroupNorm32,
    LayerNorm32,
    ModulatedTransformerCrossBlock,
    MultiHeadAttention,
    MultiHeadRMSNorm,
    TimestepEmbedder,
    convert_to_fp16,
    timestep_embedding,
)


def _randomize(m: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def test_layernorm32_computes_in_fp32_and_returns_input_dtype():
    ln = LayerNorm32(8, eps=1e-6)
    _randomize(ln)
    x = torch.randn(3, 5, 8).half()
    y = ln(x)
    assert y.dtype == torch.float16
    ref = F.layer_norm(x.float(), (8,), ln.weight, ln.bias, 1e-6).half()
    assert torch.equal(y, ref)
    # fp16 parameters (the stage-1 model after .to(fp16)) work without autocast
    ln.half()
    assert ln(x).dtype == torch.float16


def test_channel_layernorm_normalises_channel_dim():
    ln = ChannelLayerNorm32(4)
    _randomize(ln)
    x = torch.randn(2, 4, 3, 5, 6)
    ref = F.layer_norm(x.permute(0, 2, 3, 4, 1), (4,), ln.weight, ln.bias, 1e-5).permute(0, 4, 1, 2, 3)
    torch.testing.assert_close(ln(x), ref, rtol=0, atol=1e-6)
    assert ln(x).is_contiguous()


def test_groupnorm32_half_input():
    gn = GroupNorm32(2, 4)
    x = torch.randn(2, 4, 3, 3).half()
    y = gn(x)
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float(), F.group_norm(x.float(), 2, gn.weight, gn.bias, 1e-5), rtol=1e-3, atol=1e-3)


def test_multihead_rms_norm():
    n = MultiHeadRMSNorm(16, 4)
    assert tuple(n.gamma.shape) == (4, 16)
    _randomize(n)
    x = torch.randn(2, 7, 4, 16)
    rms = x / x.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(n(x), rms * n.gamma * 4.0, rtol=1e-5, atol=1e-5)
    assert n(x.half()).dtype == torch.float16


def test_timestep_embedding_formula_and_cast():
    t = torch.tensor([0.0, 1.5, 993.0])
    e = timestep_embedding(t, 256)
    half = 128
    f = torch.tensor([math.exp(-math.log(10000) * i / half) for i in range(half)], dtype=torch.float64)
    ref = torch.cat([torch.cos(t.double()[:, None] * f), torch.sin(t.double()[:, None] * f)], -1)
    torch.testing.assert_close(e.double(), ref, rtol=0, atol=2e-4)
    assert timestep_embedding(t, 7).shape == (3, 7)

    emb = TimestepEmbedder(32, cast_to_t_dtype=True)
    assert list(emb.state_dict()) == ["mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"]
    emb.half()
    out = emb(torch.tensor([993.0], dtype=torch.float16))
    assert out.shape == (1, 32) and out.dtype == torch.float16


def test_absolute_position_embedder_layout():
    pe = AbsolutePositionEmbedder(1024, 3)
    coords = torch.tensor([[0, 0, 0], [1, 2, 3]])
    e = pe(coords)
    assert e.shape == (2, 1024)
    fd = 170
    f = 1.0 / (10000 ** (torch.arange(fd, dtype=torch.float32) / fd))
    # axis y of the second point: columns [340, 680) = [sin(2f), cos(2f)]
    torch.testing.assert_close(e[1, 340:510], torch.sin(2 * f))
    torch.testing.assert_close(e[1, 510:680], torch.cos(2 * f))
    assert torch.equal(e[:, 1020:], torch.zeros(2, 4))
    assert torch.equal(e[0, :170], torch.zeros(170)) and torch.equal(e[0, 170:340], torch.ones(170))
    with pytest.raises(ValueError):
        pe(torch.zeros(2, 2))


def _naive_mha(q, k, v):
    w = torch.softmax(torch.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(q.shape[-1]), -1)
    return torch.einsum("bhlm,bmhd->blhd", w, v)


def test_self_attention_with_rms_norm_matches_naive():
    m = MultiHeadAttention(32, 4, type="self", qk_rms_norm=True)
    _randomize(m, 1)
    x = torch.randn(2, 9, 32)
    q, k, v = m.to_qkv(x).reshape(2, 9, 3, 4, 8).unbind(2)
    q = F.normalize(q, dim=-1) * m.q_rms_norm.gamma * math.sqrt(8)
    k = F.normalize(k, dim=-1) * m.k_rms_norm.gamma * math.sqrt(8)
    ref = m.to_out(_naive_mha(q, k, v).reshape(2, 9, 32))
    torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)


def test_cross_attention_matches_naive():
    m = MultiHeadAttention(32, 4, ctx_channels=12, type="cross")
    _randomize(m, 2)
    assert {k.split(".")[0] for k in m.state_dict()} == {"to_q", "to_kv", "to_out"}
    x, c = torch.randn(2, 9, 32), torch.randn(2, 5, 12)
    q = m.to_q(x).reshape(2, 9, 4, 8)
    k, v = m.to_kv(c).reshape(2, 5, 2, 4, 8).unbind(2)
    ref = m.to_out(_naive_mha(q, k, v).reshape(2, 9, 32))
    torch.testing.assert_close(m(x, c), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        m(x)


def test_modulated_block_matches_reference_and_broadcasts_time():
    blk = ModulatedTransformerCrossBlock(32, 12, 4, mlp_ratio=2, qk_rms_norm=True)
    _randomize(blk, 3)
    x, c = torch.randn(2, 6, 32), torch.randn(2, 5, 12)
    t_emb = torch.randn(1, 32)
    sh1, sc1, g1, sh2, sc2, g2 = blk.adaLN_modulation(t_emb).chunk(6, 1)
    h = F.layer_norm(x, (32,), eps=1e-6) * (1 + sc1[:, None]) + sh1[:, None]
    x1 = x + blk.self_attn(h) * g1[:, None]
    x2 = x1 + blk.cross_attn(F.layer_norm(x1, (32,), blk.norm2.weight, blk.norm2.bias, 1e-6), c)
    h = F.layer_norm(x2, (32,), eps=1e-6) * (1 + sc2[:, None]) + sh2[:, None]
    ref = x2 + blk.mlp(h) * g2[:, None]
    out = blk(x, t_emb, c)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # a batch-1 modulation equals the same modulation repeated over the batch
    torch.testing.assert_close(out, blk(x, t_emb.expand(2, -1), c), rtol=1e-5, atol=1e-5)


def test_feedforward_keys():
    assert list(FeedForwardNet(8, 2).state_dict()) == ["mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"]


def test_block_keys_match_joint_manifest_on_meta():
    manifest = json.loads(manifest_path("SyncHuman_2D3DCrossSpaceDiffusion").read_text())["state_dict"]
    want = {k[len("blocks.0."):]: tuple(v[0]) for k, v in manifest.items() if k.startswith("blocks.0.")}
    with torch.device("meta"):
        blk = ModulatedTransformerCrossBlock(1024, 1024, 16, 4, qk_rms_norm=True)
    got = {k: tuple(v.shape) for k, v in blk.state_dict().items()}
    assert got == want
    assert list(got) == list(want)


def test_convert_to_fp16_keeps_norms_fp32():
    with torch.device("meta"):
        blk = ModulatedTransformerCrossBlock(64, 64, 4, qk_rms_norm=True)
    convert_to_fp16(blk)
    dt = {k: v.dtype for k, v in blk.state_dict().items()}
    assert dt["norm2.weight"] == torch.float32 and dt["self_attn.q_rms_norm.gamma"] == torch.float32
    assert dt["self_attn.to_qkv.weight"] == torch.float16 and dt["adaLN_modulation.1.bias"] == torch.float16
