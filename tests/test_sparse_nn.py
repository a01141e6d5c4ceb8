import torch
import torch.nn.functional as F

from synchuman_core.sparse import (
    SparseGELU,
    SparseGroupNorm,
    SparseGroupNorm32,
    SparseLayerNorm,
    SparseLayerNorm32,
    SparseLinear,
    SparseReLU,
    SparseSiLU,
    SparseTensor,
)


def _random_sparse(counts, channels, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = []
    for b, n in enumerate(counts):
        cells = torch.randperm(512, generator=g)[:n]
        coords.append(torch.stack([torch.full((n,), b), cells // 64, (cells // 8) % 8, cells % 8], 1))
    coords = torch.cat(coords).int()
    feats = torch.randn(coords.shape[0], channels, generator=g, dtype=dtype) * 3 + 1
    return SparseTensor(feats, coords)


def _randomize(module):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
    return module


def test_linear_and_activations():
    x = _random_sparse([5, 4], 6)
    lin = SparseLinear(6, 3)
    assert set(lin.state_dict()) == {"weight", "bias"}
    y = lin(x)
    assert y.coords is x.coords
    torch.testing.assert_close(y.feats, x.feats @ lin.weight.t() + lin.bias)
    torch.testing.assert_close(SparseReLU()(x).feats, F.relu(x.feats))
    torch.testing.assert_close(SparseSiLU()(x).feats, F.silu(x.feats))
    torch.testing.assert_close(SparseGELU(approximate="tanh")(x).feats, F.gelu(x.feats, approximate="tanh"))


def test_group_norm_is_per_batch_item():
    x = _random_sparse([37, 0, 12], 8)
    gn = _randomize(SparseGroupNorm(4, 8))
    y = gn(x)
    for sl in x.layout:
        if sl.stop == sl.start:
            continue
        item = x.feats[sl].t().unsqueeze(0)  # [1, C, n] as TRELLIS builds it
        ref = F.group_norm(item, 4, gn.weight, gn.bias, gn.eps)[0].t()
        torch.testing.assert_close(y.feats[sl], ref)
    # per item, not over the whole batch
    whole = F.group_norm(x.feats.t().unsqueeze(0), 4, gn.weight, gn.bias, gn.eps)[0].t()
    assert (whole - y.feats).abs().max() > 1e-3


def test_group_norm32_computes_in_fp32():
    x = _random_sparse([40, 25], 16)
    gn = _randomize(SparseGroupNorm32(8, 16))
    ref = gn(x).feats
    y = gn(x.half())
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.feats.float(), ref, atol=1e-2, rtol=1e-2)
    gn_half = _randomize(SparseGroupNorm32(8, 16)).half()
    assert gn_half(x).dtype == torch.float32  # fp16 params are upcast, not the activations downcast
    no_affine = SparseGroupNorm32(4, 16, affine=False)
    z = no_affine(x).feats[:40].view(40, 4, 4)
    torch.testing.assert_close(z.mean(dim=(0, 2)), torch.zeros(4), atol=1e-5, rtol=0)


def test_layer_norms_per_voxel():
    x = _random_sparse([6, 3], 10)
    ln = _randomize(SparseLayerNorm(10))
    torch.testing.assert_close(ln(x).feats, F.layer_norm(x.feats, (10,), ln.weight, ln.bias, ln.eps))
    ln32 = _randomize(SparseLayerNorm32(10, elementwise_affine=False))
    y = ln32(x.half())
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.feats.float(), F.layer_norm(x.feats, (10,), eps=ln32.eps), atol=1e-2, rtol=1e-2)
