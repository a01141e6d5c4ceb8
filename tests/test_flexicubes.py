"""Sparse FlexiCubes: tables, official fixture h, topology and the SparseFeatures2Mesh input semantics."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from conftest import fixture_dir

from synchuman_core.geometry.flexicubes import (
    CUBE_CORNERS,
    CUBE_EDGES,
    _case_ids,
    _key,
    dmc_tables,
    sparse_features_to_mesh,
)
from synchuman_core.parity import Fixture
from synchuman_core.parity.components.flexicubes import compare_meshes
from synchuman_core.parity.components.flexicubes import run as run_h


def _crossing(case: int) -> set[int]:
    return {k for k, (a, b) in enumerate(CUBE_EDGES) if ((case >> a) & 1) != ((case >> b) & 1)}


def _directed_edges(faces: torch.Tensor) -> Counter:
    return Counter((a, b) for t in faces.tolist() for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])))


def _is_closed_and_oriented(faces: torch.Tensor) -> bool:
    """Every directed edge appears once and its reverse once: watertight with consistent winding."""
    d = _directed_edges(faces)
    return all(c == 1 and d.get((b, a), 0) == 1 for (a, b), c in d.items())


def _signed_volume(v: torch.Tensor, f: torch.Tensor) -> float:
    t = v.double()[f]
    return float(torch.linalg.det(t).sum() / 6)


def _ball_feats(res: int, centre, radius: float, seed: int = 0):
    """Active cubes of a solid ball with the exact sphere SDF on the corners, random other channels."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.arange(res)] * 3, indexing="ij"), -1).reshape(-1, 3)
    c = torch.tensor(centre)
    coords = grid[((grid.float() + 0.5 - c).norm(dim=-1) < radius + 1.5)]
    corners = coords[:, None, :].float() + torch.tensor(CUBE_CORNERS).float()
    feats = torch.randn(coords.shape[0], 101, generator=g)
    feats[:, :8] = ((corners - c).norm(dim=-1) - radius) / res
    return coords, feats


def test_tables_basic_cases():
    edge_patch, num, check = dmc_tables()
    assert num[0] == 0 and num[255] == 0
    # one inside corner: one patch through its three edges
    for c in range(8):
        case = 1 << c
        assert num[case] == 1
        assert set((edge_patch[case] >= 0).nonzero().flatten().tolist()) == {
            k for k, e in enumerate(CUBE_EDGES) if c in e
        }
    # corners 1 and 2 inside (diagonal on the z=0 face): inside corners are separated -> 2 patches,
    # the complement connects the two outside corners -> 1 patch
    assert num[0b110] == 2 and num[255 - 0b110] == 1
    for case in range(256):
        crossing = _crossing(case)
        assert set((edge_patch[case] >= 0).nonzero().flatten().tolist()) == crossing
        assert crossing == _crossing(255 - case)
        assert int(edge_patch[case].max()) + 1 == num[case]
    assert int(num.max()) == 4


def test_check_table_ambiguity_fix():
    _, num, check = dmc_tables()
    flagged = (check[:, 0] == 1).nonzero().flatten()
    assert flagged.numel() == 36
    for case in flagged.tolist():
        d = check[case, 1:4]
        assert int(d.abs().sum()) == 1  # an axis-aligned face normal
        assert check[case, 4] == 255 - case
        assert num[case] == 1 and num[255 - case] == 2
    assert check[61].tolist() == [1, 1, 0, 0, 194]


def test_case_ids_invert_only_when_the_adjacent_cube_is_flagged_too():
    res = 8
    keys = torch.tensor([_key(torch.tensor(p), res) for p in [(0, 0, 0), (1, 0, 0), (5, 5, 5), (6, 6, 6)]])

    def occ(case):
        return torch.tensor([(case >> i) & 1 for i in range(8)], dtype=torch.bool)

    # (0,0,0): case 61 points +x at (1,0,0) which has case 103 (flagged, pointing +z at nothing)
    # (5,5,5): case 61 points at (6,5,5), not a surface cube; (6,6,6): unflagged case 1
    cases = [61, 103, 61, 1]
    out = _case_ids(keys, torch.stack([occ(c) for c in cases]), res)
    assert out.tolist() == [194, 103, 61, 1]


def test_fixture_h_parity():
    fx = Fixture(fixture_dir("h_flexicubes"), "flexicubes", 1e-5)
    comps = run_h(fx)
    errors = {c.name: c.relative_error() for c in comps}
    assert all(c.passed for c in comps), errors
    assert errors["vertices (nearest neighbour)"] < 1e-6


def test_does_not_mutate_inputs_and_accepts_3_or_4_columns():
    coords, feats = _ball_feats(10, (5.2, 4.9, 5.1), 2.7)
    before = feats.clone()
    m3 = sparse_features_to_mesh(coords, feats, res=10)
    m4 = sparse_features_to_mesh(torch.cat([torch.zeros_like(coords[:, :1]), coords], 1).int(), feats, res=10)
    assert torch.equal(feats, before)
    assert torch.equal(m3.vertices, m4.vertices) and torch.equal(m3.faces, m4.faces)
    with pytest.raises(ValueError, match="several batch"):
        sparse_features_to_mesh(torch.cat([torch.arange(coords.shape[0])[:, None] % 2, coords], 1), feats, res=10)


def test_ball_is_closed_outward_and_in_the_unit_cube():
    coords, feats = _ball_feats(16, (7.7, 8.2, 8.4), 4.6, seed=3)
    m = sparse_features_to_mesh(coords, feats, res=16)
    v, f = m.vertices, m.faces
    assert m.success and _is_closed_and_oriented(f)
    assert v.shape[0] - f.shape[0] * 3 // 2 + f.shape[0] == 2  # sphere: Euler characteristic 2
    assert _signed_volume(v, f) > 0  # faces point towards positive SDF = outwards
    assert v.abs().max() <= 0.5
    assert m.vertex_attrs.shape == (v.shape[0], 6) and 0 <= m.vertex_attrs.min() and m.vertex_attrs.max() <= 1
    r = (v - (torch.tensor([7.7, 8.2, 8.4]) / 16 - 0.5)).norm(dim=-1)
    assert (r - 4.6 / 16).abs().max() < 1.5 / 16  # dual vertices stay near the sphere


def test_random_fields_give_watertight_oriented_meshes():
    g = torch.Generator().manual_seed(0)
    res = 12
    for _ in range(4):
        occ = torch.zeros(res, res, res, dtype=torch.bool)
        occ[2:10, 2:10, 2:10] = torch.rand(8, 8, 8, generator=g) < 0.6
        coords = occ.nonzero()
        feats = torch.randn(coords.shape[0], 101, generator=g)
        feats[:, :8] = torch.randn(coords.shape[0], 8, generator=g) * 0.1
        m = sparse_features_to_mesh(coords, feats, res=res)
        assert m.faces.shape[0] > 500 and _is_closed_and_oriented(m.faces)
        assert all(len(set(t)) == 3 for t in m.faces.tolist())


def test_single_inside_cube_is_wrapped_by_its_inactive_neighbours():
    # One active cube with all corners inside: the 26 inactive neighbours (weights 0) are the
    # surface cubes; 24 crossing edges -> 24 quads, a closed octahedron-like shell.
    coords = torch.tensor([[3, 3, 3]])
    feats = torch.zeros(1, 101)
    feats[:, :8] = -1.0
    m = sparse_features_to_mesh(coords, feats, res=8)
    assert m.vertices.shape == (26, 3) and m.faces.shape == (48, 3)
    assert _is_closed_and_oriented(m.faces) and _signed_volume(m.vertices, m.faces) > 0
    # deform 0, alpha = beta = 1: crossings at sdf-weighted points between -1 - 1/8 and +1 (untouched)
    t = (1 + 1 / 8) / (2 + 1 / 8)
    centre = 3.5 / 8 - 0.5
    face_vertex = (m.vertices - centre).abs().max(dim=1).values
    assert torch.allclose(face_vertex.max(), torch.tensor(0.5 / 8 + t / 8), atol=1e-6)
    # colours of untouched vertices are sigmoid(0) = 0.5 and interpolation keeps 0.5
    assert torch.allclose(m.vertex_attrs, torch.full_like(m.vertex_attrs, 0.5))


def test_surface_touching_the_grid_boundary_is_left_open():
    # a slab of inside cubes spanning the whole grid in x: the edges on the boundary faces get no quads
    res = 6
    coords = torch.stack(torch.meshgrid(torch.arange(res), torch.arange(2, 4), torch.arange(2, 4), indexing="ij"), -1)
    coords = coords.reshape(-1, 3)
    feats = torch.zeros(coords.shape[0], 101)
    feats[:, :8] = -1.0
    m = sparse_features_to_mesh(coords, feats, res=res)
    d = _directed_edges(m.faces)
    assert m.success and not _is_closed_and_oriented(m.faces)
    boundary = [e for e in d if (e[1], e[0]) not in d]
    xs = m.vertices[torch.tensor(boundary).flatten()][:, 0]
    assert bool(((xs < -0.5 + 1 / res) | (xs > 0.5 - 1 / res)).all())  # open only at x = 0 and x = res


def test_empty_and_all_outside_inputs():
    m = sparse_features_to_mesh(torch.zeros(0, 3, dtype=torch.int32), torch.zeros(0, 101), res=8)
    assert not m.success and m.vertices.shape == (0, 3) and m.faces.shape == (0, 3)
    m = sparse_features_to_mesh(torch.tensor([[1, 2, 3]]), torch.ones(1, 101), res=8)
    assert not m.success and m.vertex_attrs.shape == (0, 6)


def test_compare_meshes_is_order_independent():
    coords, feats = _ball_feats(10, (5.2, 4.9, 5.1), 2.7)
    m = sparse_features_to_mesh(coords, feats, res=10)
    perm = torch.randperm(m.vertices.shape[0])
    inv = torch.argsort(perm)
    v2, f2 = m.vertices[perm], inv[m.faces][torch.randperm(m.faces.shape[0])]
    r = compare_meshes(v2, f2, m.vertices, m.faces, m.vertex_attrs[perm], m.vertex_attrs)
    assert r == {"count_mismatch": 0.0, "vertex_error": 0.0, "attr_error": 0.0, "face_mismatches": 0.0}
    r = compare_meshes(v2, f2[:, [0, 2, 1]], m.vertices, m.faces)  # flipped winding is a mismatch
    assert r["face_mismatches"] == 2 * m.faces.shape[0]


def test_sorted_key_fallback_matches_dense_tables(monkeypatch):
    import synchuman_core.geometry.flexicubes as fc

    g = torch.Generator().manual_seed(5)
    res = 10
    coords = (torch.rand(res, res, res, generator=g) < 0.5).nonzero()
    feats = torch.randn(coords.shape[0], 101, generator=g)
    feats[:, :8] *= 0.1
    dense = sparse_features_to_mesh(coords, feats, res=res)
    monkeypatch.setattr(fc, "_DENSE_MAX_CELLS", 0)  # force sorting / binary search everywhere
    sparse = sparse_features_to_mesh(coords, feats, res=res)
    assert torch.equal(dense.vertices, sparse.vertices) and torch.equal(dense.faces, sparse.faces)
    assert torch.equal(dense.vertex_attrs, sparse.vertex_attrs) and dense.faces.shape[0] > 100
