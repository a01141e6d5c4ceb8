import pytest
import torch

from synchuman_core.errors import ConfigError
from synchuman_core.sparse import (
    SparseMultiHeadAttention,
    SparseTensor,
    sparse_cross_attention,
    sparse_self_attention,
    sparse_windowed_self_attention,
    window_partition,
)


def _random_sparse(counts, channels, res, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = []
    for b, n in enumerate(counts):
        cells = torch.randperm(res**3, generator=g)[:n]
        xyz = torch.stack([cells // (res * res), (cells // res) % res, cells % res], 1)
        coords.append(torch.cat([torch.full((n, 1), b), xyz], 1))
    coords = torch.cat(coords).int()
    return SparseTensor(torch.randn(coords.shape[0], channels, generator=g, dtype=torch.float64), coords)


def _softmax_attention(q, k, v):
    """[L, H, D] textbook attention."""
    w = torch.softmax(torch.einsum("lhd,mhd->hlm", q, k) / q.shape[-1] ** 0.5, dim=-1)
    return torch.einsum("hlm,mhd->lhd", w, v)


def _qkv(n, h=2, d=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, h, d, generator=g, dtype=torch.float64) for _ in range(3)]


def test_full_self_attention_per_batch_item():
    x = _random_sparse([30, 0, 17], 4, res=6)
    q, k, v = _qkv(x.num_voxels)
    out = sparse_self_attention(q, k, v, x)
    for sl in x.layout:
        if sl.stop > sl.start:
            torch.testing.assert_close(out[sl], _softmax_attention(q[sl], k[sl], v[sl]))


def _naive_windowed(x, q, k, v, window, shift):
    out = torch.empty_like(q)
    keys = {}
    for i, c in enumerate(x.coords.tolist()):
        keys.setdefault((c[0], *[(p + shift) // window for p in c[1:]]), []).append(i)
    for idx in keys.values():
        idx = torch.tensor(idx)
        out[idx] = _softmax_attention(q[idx], k[idx], v[idx])
    return out, len(keys)


@pytest.mark.parametrize("shift", [0, 2, 4])
def test_windowed_attention_matches_naive_per_window_loop(shift):
    x = _random_sparse([260, 140], 4, res=13)  # 13 is not a multiple of the window: ragged windows
    q, k, v = _qkv(x.num_voxels, h=3, d=4)
    out = sparse_windowed_self_attention(q, k, v, x, 4, shift)
    ref, num_windows = _naive_windowed(x, q, k, v, 4, shift)
    torch.testing.assert_close(out, ref)
    part = window_partition(x, (4, 4, 4), (shift,) * 3)
    assert len(part.seq_lens) == num_windows and len(set(part.seq_lens)) > 1
    assert torch.equal(part.fwd[part.bwd], torch.arange(x.num_voxels))


def test_window_partition_is_cached_per_shift():
    x = _random_sparse([50], 2, res=8)
    a = window_partition(x, (4, 4, 4), (0, 0, 0))
    assert window_partition(x.replace(x.feats + 1), (4, 4, 4), (0, 0, 0)) is a
    assert window_partition(x, (4, 4, 4), (2, 2, 2)) is not a


def test_cross_attention_dense_and_sparse_context():
    x = _random_sparse([11, 6], 4, res=5)
    q, _, _ = _qkv(x.num_voxels)
    g = torch.Generator().manual_seed(3)
    k = torch.randn(2, 9, 2, 8, generator=g, dtype=torch.float64)
    v = torch.randn(2, 9, 2, 8, generator=g, dtype=torch.float64)
    out = sparse_cross_attention(q, k, v, x)
    for b, sl in enumerate(x.layout):
        torch.testing.assert_close(out[sl], _softmax_attention(q[sl], k[b], v[b]))
    packed = sparse_cross_attention(q, k[:, :4].reshape(8, 2, 8), v[:, :4].reshape(8, 2, 8), x, [4, 4])
    for b, sl in enumerate(x.layout):
        torch.testing.assert_close(packed[sl], _softmax_attention(q[sl], k[b, :4], v[b, :4]))


def _reference_mha(attn, x, context=None):
    """Straightforward per-item / per-window implementation of the module, from its parameters."""
    H, D, C = attn.num_heads, attn.head_dim, attn.channels
    feats = x.feats
    if attn._type == "self":
        qkv = (feats @ attn.to_qkv.weight.t() + attn.to_qkv.bias).view(-1, 3, H, D)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    else:
        q = (feats @ attn.to_q.weight.t() + attn.to_q.bias).view(-1, H, D)
        kv = (context @ attn.to_kv.weight.t() + attn.to_kv.bias).view(*context.shape[:2], 2, H, D)
        k, v = kv[:, :, 0], kv[:, :, 1]
    if attn.qk_rms_norm:

        def rms(t, gamma):
            return t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12) * gamma * D**0.5

        q, k = rms(q, attn.q_rms_norm.gamma), rms(k, attn.k_rms_norm.gamma)
    if attn._type == "cross":
        h = torch.cat([_softmax_attention(q[sl], k[b], v[b]) for b, sl in enumerate(x.layout)])
    elif attn.attn_mode == "full":
        h = torch.cat([_softmax_attention(q[sl], k[sl], v[sl]) for sl in x.layout])
    else:
        h, _ = _naive_windowed(x, q, k, v, attn.window_size, attn.shift_window or 0)
    return h.reshape(-1, C) @ attn.to_out.weight.t() + attn.to_out.bias


def _randomized(module):
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if name.endswith("gamma") else torch.randn_like(p) * 0.3)
    return module


@pytest.mark.parametrize(
    "kwargs",
    [
        {"type": "self", "attn_mode": "full", "qk_rms_norm": True},
        {"type": "self", "attn_mode": "swin", "window_size": 4, "shift_window": 2},
        {"type": "self", "attn_mode": "windowed", "window_size": 3},
        {"type": "cross", "ctx_channels": 6, "qk_rms_norm": True},
        {"type": "cross", "ctx_channels": 6},
    ],
)
def test_multi_head_attention_module(kwargs):
    x = _random_sparse([40, 25], 16, res=7)
    attn = _randomized(SparseMultiHeadAttention(16, 4, dtype=torch.float64, **kwargs))
    context = torch.randn(2, 5, 6, dtype=torch.float64) if kwargs["type"] == "cross" else None
    out = attn(x, context)
    assert out.shape == torch.Size([2, 16]) and out.coords is x.coords
    torch.testing.assert_close(out.feats, _reference_mha(attn, x, context))


def test_module_keys():
    self_attn = SparseMultiHeadAttention(64, 4, qk_rms_norm=True)
    assert set(self_attn.state_dict()) == {
        "to_qkv.weight", "to_qkv.bias", "to_out.weight", "to_out.bias", "q_rms_norm.gamma", "k_rms_norm.gamma"
    }
    assert self_attn.q_rms_norm.gamma.shape == (4, 16)
    cross = SparseMultiHeadAttention(64, 4, ctx_channels=32, type="cross")
    assert set(cross.state_dict()) == {
        "to_q.weight", "to_q.bias", "to_kv.weight", "to_kv.bias", "to_out.weight", "to_out.bias"
    }
    assert cross.to_kv.weight.shape == (128, 32)


def test_bad_configs():
    with pytest.raises(ConfigError):
        SparseMultiHeadAttention(10, 3)
    with pytest.raises(ConfigError):
        SparseMultiHeadAttention(8, 2, attn_mode="serialized")
    with pytest.raises(ConfigError):
        SparseMultiHeadAttention(8, 2, attn_mode="swin")
    with pytest.raises(ConfigError):
        SparseMultiHeadAttention(8, 2, type="cross", attn_mode="swin", window_size=4)
