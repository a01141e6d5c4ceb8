import json

import pytest
import torch
import torch.nn.functional as F
from conftest import manifest_path

import synchuman_core.sparse.conv as conv_mod
from synchuman_core.errors import ConfigError
from synchuman_core.sparse import (
    FP16_SPARSE_MODULE_TYPES,
    SparseConv3d,
    SparseSubdivide,
    SparseTensor,
    dense_equivalent_weight,
    neighbour_map,
    spconv_1x1_matrix,
)


def _random_sparse(counts, channels, res, dtype=torch.float64, seed=0, offset=0):
    g = torch.Generator().manual_seed(seed)
    coords = []
    for b, n in enumerate(counts):
        cells = torch.randperm(res**3, generator=g)[:n]
        xyz = torch.stack([cells // (res * res), (cells // res) % res, cells % res], 1) + offset
        coords.append(torch.cat([torch.full((n, 1), b), xyz], 1))
    coords = torch.cat(coords).int()
    return SparseTensor(torch.randn(coords.shape[0], channels, generator=g, dtype=dtype), coords)


def _dense_reference(x, weight, bias, dilation=1):
    """F.conv3d on the zero-filled dense grid, read at the active sites."""
    c = x.coords.long()
    extent = (c[:, 1:].max(0).values + 1).tolist()
    dense = x.dense(extent)
    k = weight.shape[1:4]
    pad = tuple((kk // 2) * dilation for kk in k)
    ref = F.conv3d(dense, dense_equivalent_weight(weight), bias, padding=pad, dilation=dilation)
    return ref.permute(0, 2, 3, 4, 1)[c[:, 0], c[:, 1], c[:, 2], c[:, 3]]


def _make_conv(cin, cout, k, dilation=1, bias=True, dtype=torch.float64):
    conv = SparseConv3d(cin, cout, k, dilation=dilation, bias=bias, dtype=dtype)
    with torch.no_grad():
        conv.conv.weight.normal_()
        if bias:
            conv.conv.bias.normal_()
    return conv


@pytest.mark.parametrize(
    "cin,cout,k,dilation",
    [(4, 6, 3, 1), (5, 3, 5, 1), (3, 7, (3, 1, 5), 1), (4, 4, 3, 2), (6, 2, 1, 1)],
)
@pytest.mark.parametrize("lookup", ["table", "search"])
def test_submanifold_conv_matches_dense_conv(cin, cout, k, dilation, lookup, monkeypatch):
    if lookup == "search":
        monkeypatch.setattr(conv_mod, "_DENSE_TABLE_MAX_CELLS", 0)
    x = _random_sparse([150, 90], cin, res=7, offset=2)
    conv = _make_conv(cin, cout, k, dilation)
    out = conv(x)
    assert out.shape == torch.Size([2, cout]) and out.coords is x.coords
    torch.testing.assert_close(out.feats, _dense_reference(x, conv.conv.weight, conv.conv.bias, dilation))


def test_dense_grid_fully_active_and_tiny_chunks(monkeypatch):
    # every site active: all 27 taps hit; tiny chunks exercise the chunk loop
    monkeypatch.setattr(conv_mod, "_CHUNK_ELEMENTS", 1)
    x = _random_sparse([64, 64], 3, res=4)
    conv = _make_conv(3, 5, 3, bias=False)
    torch.testing.assert_close(conv(x).feats, _dense_reference(x, conv.conv.weight, None))


def test_neighbour_map_cached_and_symmetric():
    x = _random_sparse([80, 40], 2, res=6)
    nm = neighbour_map(x, (3, 3, 3))
    assert neighbour_map(x.replace(x.feats * 2), (3, 3, 3)) is nm
    assert nm.centre == 13 and set(nm.pairs) == set(range(27)) - {13}
    for t, (i, o) in nm.pairs.items():
        mi, mo = nm.pairs[26 - t]
        assert torch.equal(i, mo) and torch.equal(o, mi)
        # pairs only within a batch item, at the right offset
        a, b, c = t // 9, (t // 3) % 3, t % 3
        d = x.coords[i.long()] - x.coords[o.long()]
        assert (d[:, 0] == 0).all()
        assert (d[:, 1:] == torch.tensor([a - 1, b - 1, c - 1], dtype=torch.int32)).all()
    # brute-force pair count
    c = x.coords.long()
    diff = (c[:, None, :] - c[None, :, :]).abs()
    adj = (diff[..., 0] == 0) & (diff[..., 1:].max(-1).values <= 1)
    assert nm.num_pairs() == int(adj.sum()) - x.num_voxels


def test_spconv_1x1_quirk_formula():
    x = _random_sparse([20, 10], 6, res=5)
    conv = _make_conv(6, 4, 1)
    conv.spconv_1x1_quirk = True
    w, b = conv.conv.weight, conv.conv.bias
    expected = x.feats @ w.reshape(-1).view(6, 4) + b  # spconv's torch.mm fast path
    torch.testing.assert_close(conv(x).feats, expected)
    torch.testing.assert_close(spconv_1x1_matrix(w), w.flatten().view(6, 4))
    # and it is not the textbook 1x1 conv
    textbook = x.feats @ w[:, 0, 0, 0, :].t() + b
    assert (conv(x).feats - textbook).abs().max() > 0.1
    conv.spconv_1x1_quirk = False
    torch.testing.assert_close(conv(x).feats, textbook)


def test_quirk_flag_does_not_touch_3x3():
    x = _random_sparse([30], 3, res=4)
    a = _make_conv(3, 2, 3)
    b = SparseConv3d(3, 2, 3, spconv_1x1_quirk=True, dtype=torch.float64)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(x).feats, b(x).feats)


def test_half_precision_input_and_param_cast():
    x = _random_sparse([40, 30], 8, res=5, dtype=torch.float32)
    conv = _make_conv(8, 8, 3, dtype=torch.float32)
    ref = conv(x).feats
    conv.half()
    out = conv(x.half())
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.feats.float(), ref, atol=2e-2, rtol=2e-2)
    # fp32 features with fp16 parameters compute in fp32
    assert conv(x).dtype == torch.float32


def test_empty_batch_item_and_empty_tensor():
    x = _random_sparse([10, 0, 5], 2, res=4)
    conv = _make_conv(2, 3, 3)
    torch.testing.assert_close(conv(x).feats, _dense_reference(x, conv.conv.weight, conv.conv.bias))
    e = SparseTensor(torch.zeros(0, 2, dtype=torch.float64), torch.zeros(0, 4, dtype=torch.int32))
    assert conv(e).feats.shape == (0, 3)


def test_state_dict_keys_and_layout_match_manifest():
    manifest = json.loads(manifest_path("slat_decoder_mesh").read_text())["state_dict"]
    with torch.device("meta"):
        conv = SparseConv3d(768, 192, 3)
        skip = SparseConv3d(768, 192, 1, spconv_1x1_quirk=True)
    for name, module in [("upsample.0.out_layers.0", conv), ("upsample.0.skip_connection", skip)]:
        for key, p in module.state_dict().items():
            shape, _ = manifest[f"{name}.{key}"]
            assert list(p.shape) == shape, key
    assert set(conv.state_dict()) == {"conv.weight", "conv.bias"}
    assert isinstance(conv.conv, FP16_SPARSE_MODULE_TYPES)


@pytest.mark.parametrize("k,quirk", [(3, False), (1, True), (1, False), (5, False)])
def test_conv_right_after_subdivision_uses_parents(k, quirk, monkeypatch):
    monkeypatch.setattr(conv_mod, "_CHUNK_ELEMENTS", 64)  # several chunks per tap
    x = _random_sparse([40, 0, 25], 4, res=5, offset=1)
    sub = SparseSubdivide()(x)
    assert sub.subdivided_from is x and sub._feats is None  # lazy
    conv = _make_conv(4, 3, k)
    conv.spconv_1x1_quirk = quirk
    fast = conv(sub)
    assert sub._feats is None or k == 5  # the parent path never materialises the children
    plain = SparseTensor(sub.feats.clone(), sub.coords)  # same voxels, no parent link
    assert plain.subdivided_from is None
    torch.testing.assert_close(fast.feats, conv(plain).feats)
    if k == 3:
        torch.testing.assert_close(fast.feats, _dense_reference(plain, conv.conv.weight, conv.conv.bias))
    # any new tensor drops the parent link
    assert sub.replace(sub.feats * 1).subdivided_from is None


def test_rejects_unsupported_kernels():
    with pytest.raises(ConfigError):
        SparseConv3d(2, 2, 2)
    with pytest.raises(ConfigError):
        SparseConv3d(2, 2, (3, 3))
