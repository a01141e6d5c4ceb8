"""Mesh clean-up: floaters, decimation, invisible faces, hole filling, the driver."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from synchuman_core.errors import ConfigError
from synchuman_core.geometry.cleanup import (
    CleanupSettings,
    boundary_loops,
    cleanup_mesh,
    decimate,
    fill_small_holes,
    find_invisible_faces,
    remove_small_components,
)
from synchuman_core.geometry.mesh import compact_mesh


def _sphere(sub: int = 3, r: float = 0.3, center=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    m = trimesh.creation.icosphere(subdivisions=sub, radius=r)
    m.apply_translation(center)
    return m


def _t(m: trimesh.Trimesh) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces, dtype=torch.int64)


def test_small_floaters_are_removed():
    big, tiny = _sphere(3), _sphere(1, 0.02, (0.4, 0.4, 0.4))
    m = trimesh.util.concatenate([big, tiny])
    keep = remove_small_components(np.asarray(m.faces), len(m.vertices), 0.1)  # tiny = 80 of 1360 faces
    assert keep.sum() == len(big.faces) and not keep[len(big.faces) :].any()
    # the largest component always stays, even with an absurd threshold
    assert remove_small_components(np.asarray(m.faces), len(m.vertices), 0.99).sum() == len(big.faces)


def test_decimation_ratio_and_target():
    v, f = _sphere(4).vertices, _sphere(4).faces
    _, f1 = decimate(v, f, ratio=0.7)
    assert abs(len(f1) - 0.3 * len(f)) < 0.02 * len(f)
    v2, f2 = decimate(v, f, target_faces=500)
    assert abs(len(f2) - 500) <= 10
    assert np.abs(np.linalg.norm(v2, axis=1) - 0.3).max() < 0.02  # shape kept
    v3, f3 = decimate(v, f, target_faces=10**6)
    assert f3 is f  # no-op when already below the budget


def test_small_holes_are_filled_large_ones_kept():
    m = _sphere(3)
    faces = np.asarray(m.faces)
    # punch a one-ring hole around vertex 0 (a small hole) and remove a whole cap (a big hole)
    ring = np.any(faces == 0, axis=1)
    cap = m.vertices[faces].mean(axis=1)[:, 2] < -0.2
    holed = faces[~ring & ~cap]
    loops = boundary_loops(holed)
    assert sorted(len(lp) for lp in loops)[0] in (5, 6) and len(loops) == 2
    v2, f2, _, n = fill_small_holes(np.asarray(m.vertices, dtype=np.float32), holed, max_edges=12)
    assert n == 1
    assert len(boundary_loops(f2)) == 1  # only the big one is left
    v3, f3, _, n = fill_small_holes(np.asarray(m.vertices, dtype=np.float32), holed, max_edges=1000)
    filled = trimesh.Trimesh(v3, f3, process=False)
    assert n == 2 and filled.is_watertight and filled.is_winding_consistent
    assert filled.volume > 0  # fill triangles wound like the surface (outward)


def test_inner_shell_is_removed_outer_surface_kept():
    outer, inner = _sphere(3, 0.35), _sphere(2, 0.15)
    m = trimesh.util.concatenate([outer, inner])
    v, f = _t(m)
    drop = find_invisible_faces(v, f, views=16, resolution=128)
    assert drop[len(outer.faces) :].all()
    assert not drop[: len(outer.faces)].any()


def test_cleanup_driver_with_colors():
    outer, inner, tiny = _sphere(4, 0.35), _sphere(2, 0.1), _sphere(1, 0.02, (0.45, 0.0, 0.0))
    m = trimesh.util.concatenate([outer, inner, tiny])
    v, f = _t(m)
    colors = (v * 0.5 + 0.5).clamp(0, 1)
    s = CleanupSettings(decimate_ratio=0.5, floater_min_fraction=0.05, visibility_views=12, visibility_resolution=128,
                        invisible_method="cull")
    v2, f2, c2, stats = cleanup_mesh(v, f, colors, s)
    assert stats["floater_faces_removed"] == len(tiny.faces)
    assert stats["invisible_faces_removed"] > 0
    out = trimesh.Trimesh(v2.numpy(), f2.numpy(), process=False)
    assert out.is_watertight
    assert abs(len(f2) - 0.5 * len(outer.faces)) < 0.05 * len(outer.faces)
    assert np.abs(np.linalg.norm(v2.numpy(), axis=1) - 0.35).max() < 0.02
    # colors follow their vertices through decimation
    torch.testing.assert_close(c2, (v2 * 0.5 + 0.5).clamp(0, 1), atol=0.03, rtol=0)


def test_inside_out_mesh_is_flipped_not_deleted():
    m = _sphere(3, 0.35)
    v, f = _t(m)
    s = CleanupSettings(decimate_ratio=0.0, visibility_views=8, visibility_resolution=96)
    v2, f2, _, stats = cleanup_mesh(v, f.flip(1), None, s)
    assert stats["flipped_orientation"] == 1.0 and stats["invisible_faces_removed"] == 0
    assert f2.shape[0] == f.shape[0] and trimesh.Trimesh(v2.numpy(), f2.numpy(), process=False).volume > 0


def test_compact_mesh_welds_and_drops_degenerates():
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0], [5, 5, 5]])
    f = torch.tensor([[0, 1, 2], [0, 3, 2], [0, 0, 2], [2, 1, 0]])
    v2, f2, (a,) = compact_mesh(v, f, [torch.arange(5.0)[:, None]], merge_tolerance=1e-6)
    assert v2.shape[0] == 3 and f2.shape[0] == 1  # weld 1/3, drop degenerate + duplicates + unused vertex
    assert a[:, 0].tolist() == [0.0, 2.0, 2.0]  # welded attribute is the mean of 1 and 3


def test_settings_are_validated():
    with pytest.raises(ConfigError):
        CleanupSettings(decimate_ratio=1.2).validate()
    with pytest.raises(ConfigError):
        CleanupSettings(max_hole_edges=2).validate()
