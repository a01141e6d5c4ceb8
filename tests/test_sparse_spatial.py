from fractions import Fraction

import pytest
import torch

from synchuman_core.sparse import (
    SparseConv3d,
    SparseDownsample,
    SparseSubdivide,
    SparseTensor,
    SparseUpsample,
    neighbour_map,
    trellis_mean_pool,
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


def _naive_pool(x, factor, count_zero):
    groups: dict[tuple, list[torch.Tensor]] = {}
    for c, f in zip(x.coords.tolist(), x.feats):
        key = (c[0], c[1] // factor, c[2] // factor, c[3] // factor)
        groups.setdefault(key, []).append(f)
    keys = sorted(groups)  # row-major (batch, x, y, z)
    feats = [torch.stack(groups[k]).sum(0) / (len(groups[k]) + (1 if count_zero else 0)) for k in keys]
    return torch.tensor(keys, dtype=torch.int32), torch.stack(feats)


@pytest.mark.parametrize("quirk", [True, False])
def test_downsample_matches_naive_pooling(quirk):
    x = _random_sparse([200, 150], 4, res=9)
    down = SparseDownsample(2, trellis_mean_quirk=quirk)(x)
    coords, feats = _naive_pool(x, 2, quirk)
    assert torch.equal(down.coords, coords)
    torch.testing.assert_close(down.feats, feats)
    assert down.batch_size == 2
    assert down.scale == (Fraction(2),) * 3
    assert [s.stop - s.start for s in down.layout] == [int((coords[:, 0] == b).sum()) for b in range(2)]


def test_trellis_mean_counts_the_initial_zero():
    # what torch.scatter_reduce(zeros, reduce="mean") with include_self=True gives (TRELLIS)
    feats = torch.tensor([[2.0], [4.0], [9.0]])
    idx = torch.tensor([0, 0, 1])
    ref = torch.zeros(2, 1).scatter_reduce(0, idx[:, None], feats, reduce="mean")
    torch.testing.assert_close(trellis_mean_pool(feats, idx, 2), ref)
    torch.testing.assert_close(trellis_mean_pool(feats, idx, 2, count_zero=False), torch.tensor([[3.0], [9.0]]))


def test_down_up_round_trip_restores_coords_layout_and_cache():
    x = _random_sparse([120, 80], 3, res=8)
    conv = SparseConv3d(3, 3, 3, dtype=torch.float64)
    conv(x)  # builds the fine neighbour map
    nm = neighbour_map(x, (3, 3, 3))
    down = SparseDownsample(2)(x)
    mid = conv(down)  # coarse map goes to the coarse scale entry
    assert neighbour_map(mid, (3, 3, 3)) is not nm
    up = SparseUpsample(2)(mid)
    assert up.coords is x.coords and up.layout == x.layout
    assert up.scale == x.scale
    assert neighbour_map(up, (3, 3, 3)) is nm  # fine map reused
    # every fine voxel copies its coarse parent
    parent = {tuple(c): f for c, f in zip(mid.coords.tolist(), mid.feats)}
    for c, f in zip(x.coords.tolist(), up.feats):
        torch.testing.assert_close(f, parent[(c[0], c[1] // 2, c[2] // 2, c[3] // 2)])


def test_upsample_without_downsample_fails():
    x = _random_sparse([10], 2, res=4)
    with pytest.raises(ValueError, match="SparseDownsample"):
        SparseUpsample(2)(x)


def test_subdivide_children_order_and_features():
    x = _random_sparse([3, 2], 2, res=4)
    y = SparseSubdivide()(x)
    assert y.num_voxels == 40 and y.batch_size == 2
    assert y.layout == [slice(0, 24), slice(24, 40)]
    assert y.scale == (Fraction(1, 2),) * 3
    order = torch.nonzero(torch.ones(2, 2, 2)).int()  # TRELLIS child order
    for i in range(x.num_voxels):
        kids = y.coords[8 * i : 8 * i + 8]
        assert (kids[:, 0] == x.coords[i, 0]).all()
        assert torch.equal(kids[:, 1:], x.coords[i, 1:] * 2 + order)
        assert torch.equal(y.feats[8 * i : 8 * i + 8], x.feats[i].expand(8, -1))
    # subdividing h and skip separately gives tensors that share one neighbour map
    z = SparseSubdivide()(x.replace(x.feats * 2))
    SparseConv3d(2, 2, 3, dtype=torch.float64)(y)
    assert neighbour_map(z, (3, 3, 3)) is neighbour_map(y, (3, 3, 3))
