"""Multiview feature gather of the stage-2 decoders (row = R-1-z, columns x|y|x|y)."""

from __future__ import annotations

import pytest
import torch

from synchuman_core.errors import ConfigError
from synchuman_core.stage2.mv_features import condition_mv, mv_condition_views, mv_pixel_index


def _coords(n: int, r: int, batches: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.cat([torch.randint(0, batches, (n, 1), generator=g), torch.randint(0, r, (n, 3), generator=g)], 1)
    return c[c[:, 0].argsort(stable=True)].int()


def test_gather_matches_the_official_formula():
    r, c = 8, 5
    maps = torch.randn(2, 4, r, r, c)
    coords = _coords(50, r, 2)
    out = condition_mv(coords, maps)
    b, x, y, z = coords.long().unbind(1)
    row = r - 1 - z
    ref = torch.cat([maps[b, 0, row, x], maps[b, 1, row, y], maps[b, 2, row, x], maps[b, 3, row, y]], dim=1)
    assert out.shape == (50, 4 * c) and torch.equal(out, ref)


def test_top_row_is_highest_z_and_view_columns():
    r = 64
    maps = torch.zeros(1, 4, r, r, 1)
    maps[0, 0, 0, 10] = 1  # front view, top row, column 10 -> voxel x=10, z=63, any y
    maps[0, 1, 63, 20] = 2  # view 1, bottom row, column 20 -> voxel y=20, z=0
    coords = torch.tensor([[0, 10, 5, 63], [0, 10, 5, 62], [0, 3, 20, 0], [0, 20, 3, 0]])
    out = condition_mv(coords, maps)  # [4, 4]
    assert out[:, 0].tolist() == [1, 0, 0, 0]
    assert out[:, 1].tolist() == [0, 0, 2, 0]


def test_view_subsets_and_modes():
    assert mv_condition_views("4_view") == (0, 1, 2, 3)
    assert mv_condition_views("front&back") == (0, 2)
    with pytest.raises(ConfigError):
        mv_condition_views("no")
    maps = torch.randn(1, 5, 8, 8, 3)  # a fifth (face) view may be present; it is never gathered
    coords = _coords(10, 8, 1)
    full = condition_mv(coords, maps)
    assert torch.equal(condition_mv(coords, maps, (0, 2)), torch.cat([full[:, 0:3], full[:, 6:9]], 1))
    assert torch.equal(condition_mv(coords, maps, (0,)), full[:, :3])
    idx = mv_pixel_index(coords, maps.shape)
    assert torch.equal(maps.reshape(-1, 3)[idx[:, 3]], full[:, 9:12])


def test_invalid_inputs_raise():
    maps = torch.randn(1, 4, 8, 8, 2)
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        condition_mv(torch.tensor([[0, 8, 0, 0]]), maps)
    with pytest.raises(ValueError, match="batch"):
        condition_mv(torch.tensor([[1, 0, 0, 0]]), maps)
    with pytest.raises(ValueError, match="B, V, R, R, C"):
        condition_mv(torch.tensor([[0, 0, 0, 0]]), torch.randn(1, 4, 8, 2))
    with pytest.raises(ValueError, match="views"):
        condition_mv(torch.tensor([[0, 0, 0, 0]]), torch.randn(1, 2, 8, 8, 2))
    assert condition_mv(torch.zeros(0, 4, dtype=torch.int32), maps).shape == (0, 8)
