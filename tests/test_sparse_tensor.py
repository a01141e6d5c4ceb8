from fractions import Fraction

import pytest
import torch

from synchuman_core.sparse import SparseTensor, sparse_batch_broadcast, sparse_cat


def _random_sparse(counts, channels=3, res=8, dtype=torch.float32, seed=0):
    """Batch of items with ``counts[i]`` distinct random voxels each, rows shuffled within items."""
    g = torch.Generator().manual_seed(seed)
    coords = []
    for b, n in enumerate(counts):
        cells = torch.randperm(res**3, generator=g)[:n]
        xyz = torch.stack([cells // (res * res), (cells // res) % res, cells % res], 1)
        coords.append(torch.cat([torch.full((n, 1), b), xyz], 1))
    coords = torch.cat(coords).int()
    return SparseTensor(torch.randn(coords.shape[0], channels, generator=g, dtype=dtype), coords)


def test_shape_layout_and_properties():
    x = _random_sparse([5, 0, 7], channels=4)
    assert x.shape == torch.Size([3, 4])
    assert x.layout == [slice(0, 5), slice(5, 5), slice(5, 12)]
    assert x.seq_lens() == [5, 0, 7]
    assert x.batch_size == 3 and x.num_voxels == 12
    assert x.coords.dtype == torch.int32
    assert x.scale == (Fraction(1),) * 3
    assert torch.equal(x.batch_index(), x.coords[:, 0].long())


def test_coords_converted_and_validated():
    feats = torch.randn(3, 2)
    x = SparseTensor(feats, torch.tensor([[0, 1, 2, 3], [0, 0, 0, 0], [1, 5, 5, 5]], dtype=torch.int64))
    assert x.coords.dtype == torch.int32
    with pytest.raises(ValueError, match="sorted by batch"):
        SparseTensor(feats, torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]))
    with pytest.raises(ValueError, match="disagree"):
        SparseTensor(torch.randn(2, 2), torch.zeros(3, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        SparseTensor(torch.randn(3, 2), torch.zeros(3, 3, dtype=torch.int32))


def test_replace_keeps_cache_only_for_same_coords():
    x = _random_sparse([6, 4])
    x.register_spatial_cache("k", 1)
    y = x.replace(x.feats * 2)
    assert y.get_spatial_cache("k") == 1 and y.layout is x.layout
    assert x.replace(x.feats, x.coords.clone()).get_spatial_cache("k") == 1
    moved = x.coords.clone()
    moved[:, 1] += 1
    z = x.replace(x.feats, moved)
    assert z.get_spatial_cache("k") is None
    assert torch.equal(z.coords, moved)
    # a cache entry registered through a derived tensor is visible to the original
    y.register_spatial_cache("k2", 2)
    assert x.get_spatial_cache("k2") == 2
    # different scale -> different cache entry
    assert x.with_scale((2, 2, 2)).get_spatial_cache("k") is None


def test_to_type_and_reshape():
    x = _random_sparse([3, 2], channels=6)
    x.register_spatial_cache("k", 1)
    h = x.to(torch.float16)
    assert h.dtype == torch.float16 and h.get_spatial_cache("k") == 1
    assert x.type(torch.float64).dtype == torch.float64
    assert x.to("cpu", dtype=torch.float64).dtype == torch.float64
    assert x.half().float().dtype == torch.float32
    r = x.reshape(2, 3)
    assert r.shape == torch.Size([2, 2, 3]) and torch.equal(r.feats.reshape(5, 6), x.feats)


def test_elementwise_with_tensors_and_sparse():
    x = _random_sparse([4, 3], channels=2)
    y = x.replace(torch.randn_like(x.feats))
    torch.testing.assert_close((x + y).feats, x.feats + y.feats)
    torch.testing.assert_close((x - y).feats, x.feats - y.feats)
    torch.testing.assert_close((x * y).feats, x.feats * y.feats)
    torch.testing.assert_close((x / (y * y + 1)).feats, x.feats / (y.feats**2 + 1))
    torch.testing.assert_close((2 - x).feats, 2 - x.feats)
    torch.testing.assert_close((1 / (x * x + 1)).feats, 1 / (x.feats**2 + 1))
    torch.testing.assert_close((-x).feats, -x.feats)
    # per-voxel tensor
    t = torch.randn(7, 2)
    torch.testing.assert_close((x + t).feats, x.feats + t)
    # per-item [B, C] tensor (adaLN style)
    per_item = torch.tensor([[1.0, 2.0], [10.0, 20.0]])
    out = (x * per_item).feats
    torch.testing.assert_close(out[:4], x.feats[:4] * per_item[0])
    torch.testing.assert_close(out[4:], x.feats[4:] * per_item[1])
    # [C] and [1, C] broadcast to every voxel
    torch.testing.assert_close((x + per_item[1]).feats, x.feats + per_item[1])
    torch.testing.assert_close((x + per_item[:1]).feats, x.feats + per_item[0])


def test_elementwise_rejects_other_coords():
    x = _random_sparse([4, 3], seed=0)
    y = _random_sparse([4, 3], seed=1)
    with pytest.raises(ValueError, match="different coordinates"):
        _ = x + y


def test_batch_broadcast_and_cat():
    x = _random_sparse([2, 0, 3], channels=2)
    b = sparse_batch_broadcast(x, torch.tensor([[1.0, 1], [2, 2], [3, 3]]))
    assert b[:, 0].tolist() == [1, 1, 3, 3, 3]
    y = x.replace(torch.randn(5, 4))
    c = sparse_cat([x, y])
    assert c.shape == torch.Size([3, 6]) and torch.equal(c.feats[:, 2:], y.feats)
    s = sparse_cat([x, y.replace(y.feats[:, :2])], dim=0)
    assert s.batch_size == 6 and s.num_voxels == 10
    assert s.coords[5:, 0].tolist() == (x.coords[:, 0] + 3).tolist()


def test_getitem_and_dense():
    x = _random_sparse([3, 4], channels=2, res=4)
    one = x[1]
    assert one.batch_size == 1 and torch.equal(one.feats, x.feats[3:])
    assert (one.coords[:, 0] == 0).all()
    d = x.dense((4, 4, 4))  # [B, C, X, Y, Z]
    assert d.shape == (2, 2, 4, 4, 4)
    c = x.coords.long()
    torch.testing.assert_close(d[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]], x.feats)
    assert d.abs().sum() == pytest.approx(x.feats.abs().sum().item(), rel=1e-6)
