"""Rasteriser and camera conventions (docs/ARCHITECTURE.md §3.4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from synchuman_core.geometry.cameras import (
    FACE_REGION,
    body_view_camera,
    face_view_camera,
    generated_to_true_orientation,
    sphere_cameras,
)
from synchuman_core.geometry.raster import interpolate, rasterize


def _brute_force(screen: np.ndarray, faces: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference z-buffer: loop over pixels and triangles (float64)."""
    depth = np.full((h, w), np.inf)
    tri = np.full((h, w), -1)
    for r in range(h):
        for c in range(w):
            p = np.array([c + 0.5, r + 0.5])
            for t, (a, b, d) in enumerate(faces):
                p0, p1, p2 = screen[a], screen[b], screen[d]
                e1, e2 = p1[:2] - p0[:2], p2[:2] - p0[:2]
                area = e1[0] * e2[1] - e1[1] * e2[0]
                if abs(area) < 1e-12:
                    continue
                q = p - p0[:2]
                b1 = (q[0] * e2[1] - q[1] * e2[0]) / area
                b2 = (e1[0] * q[1] - e1[1] * q[0]) / area
                b0 = 1 - b1 - b2
                if min(b0, b1, b2) >= 1e-9:
                    z = b0 * p0[2] + b1 * p1[2] + b2 * p2[2]
                    if z < depth[r, c]:
                        depth[r, c], tri[r, c] = z, t
    return depth, tri


def test_matches_brute_force_zbuffer():
    g = torch.Generator().manual_seed(3)
    h, w = 24, 20
    screen = torch.rand(30, 3, generator=g) * torch.tensor([w * 1.3, h * 1.3, 1.0]) - torch.tensor([2.0, 2.0, 0.0])
    faces = torch.randint(0, 30, (12, 3), generator=g)
    rast = rasterize(screen, faces, h, w, max_candidates=64)  # tiny chunks exercise the chunking
    depth_ref, tri_ref = _brute_force(screen.double().numpy(), faces.numpy(), h, w)
    covered_ref = tri_ref >= 0
    # pixel centres exactly on an edge may differ (inclusive slack); require near-total agreement
    agree = (rast.mask.numpy() == covered_ref).mean()
    assert agree > 0.99
    both = rast.mask.numpy() & covered_ref
    np.testing.assert_allclose(rast.depth.numpy()[both], depth_ref[both], atol=1e-5)


def test_sphere_silhouette_depth_and_interpolation():
    m = trimesh.creation.icosphere(subdivisions=4, radius=0.4)
    v = torch.tensor(m.vertices, dtype=torch.float32)
    f = torch.tensor(m.faces)
    cam = body_view_camera(0)
    rast = rasterize(cam.project(v, 128, 128), f, 128, 128)
    assert abs(rast.mask.float().mean().item() - math.pi * 0.16) < 0.01
    pos = interpolate(v, f, rast)
    m_ = rast.mask
    # front camera at -Y looking +Y: depth = y, the visible half has y < 0
    torch.testing.assert_close(rast.depth[m_], pos[m_][:, 1], atol=1e-5, rtol=0)
    assert (pos[m_][:, 1] <= 1e-3).all()
    assert torch.isinf(rast.depth[~m_]).all() and (rast.tri_id[~m_] == -1).all()
    # back-face culling changes nothing for a closed mesh seen from outside
    culled = rasterize(cam.project(v, 128, 128), f, 128, 128, cull_backfaces=True)
    assert torch.equal(culled.mask, rast.mask)
    torch.testing.assert_close(culled.depth, rast.depth)


def test_tessellated_square_has_no_cracks():
    n = 9
    xs = torch.linspace(4.0, 60.0, n)
    gy, gx = torch.meshgrid(xs, xs, indexing="ij")
    verts = torch.stack([gx.reshape(-1), gy.reshape(-1), torch.zeros(n * n)], dim=-1)
    quads = [
        (i * n + j, i * n + j + 1, (i + 1) * n + j + 1, (i + 1) * n + j) for i in range(n - 1) for j in range(n - 1)
    ]
    faces = torch.tensor([[a, b, c] for a, b, c, d in quads] + [[a, c, d] for a, b, c, d in quads])
    rast = rasterize(verts, faces, 64, 64)
    expected = torch.zeros(64, 64, dtype=torch.bool)
    expected[4:60, 4:60] = True  # pixel centres 4.5 .. 59.5 lie inside [4, 60]
    assert torch.equal(rast.mask, expected)


def test_nearer_triangle_wins():
    verts = torch.tensor([[0, 0, 5.0], [16, 0, 5.0], [0, 16, 5.0], [0, 0, 1.0], [16, 0, 1.0], [0, 16, 1.0]])
    faces = torch.tensor([[0, 1, 2], [3, 5, 4]])  # second one nearer and wound the other way
    rast = rasterize(verts, faces, 16, 16)
    assert (rast.tri_id[rast.mask] == 1).all()
    assert torch.allclose(rast.depth[rast.mask], torch.tensor(1.0))


def test_body_camera_conventions():
    h = w = 64
    p = torch.tensor([[0.3, 0.0, 0.4]])
    col, row, _ = body_view_camera(0).project(p, h, w)[0]
    assert col > w / 2 and row < h / 2  # view 0: column = x, top row = max z
    col2, _, depth2 = body_view_camera(2).project(p, h, w)[0]
    assert col2 < w / 2  # true back render: +x appears on the left ...
    gen = torch.zeros(4, 1, h, w)
    gen[2, 0, 0, w - 1] = 1.0
    assert generated_to_true_orientation(gen)[2, 0, 0, 0] == 1.0  # ... the generated back view is mirrored
    q = torch.tensor([[0.0, 0.3, 0.0]])
    assert body_view_camera(1).project(q, h, w)[0, 0] > w / 2  # view 1: column = y
    assert body_view_camera(3).project(q, h, w)[0, 0] < w / 2  # true left render: column = -y
    # depth grows away from each camera
    near, far = torch.tensor([[0.0, -0.4, 0.0]]), torch.tensor([[0.0, 0.4, 0.0]])
    assert body_view_camera(0).project(near, h, w)[0, 2] < body_view_camera(0).project(far, h, w)[0, 2]
    assert body_view_camera(2).project(far, h, w)[0, 2] < body_view_camera(2).project(near, h, w)[0, 2]
    assert depth2.item() == pytest.approx(0.0)


def test_face_camera_is_zoomed_front_region():
    h = 768
    x0, x1, z0, z1 = FACE_REGION
    corners = torch.tensor([[x0, 0.0, z1], [x1, 0.0, z0]])
    front = body_view_camera(0).project(corners, h, h)
    # official crop box (256, 0, 512, 256) of the 768 front view
    torch.testing.assert_close(front[:, :2], torch.tensor([[256.0, 0.0], [512.0, 256.0]]), atol=1e-3, rtol=0)
    face = face_view_camera().project(corners, h, h)
    torch.testing.assert_close(face[:, :2], torch.tensor([[0.0, 0.0], [768.0, 768.0]]), atol=1e-3, rtol=0)


def test_sphere_cameras_are_orthonormal_and_cover_directions():
    cams = sphere_cameras(20)
    fwd = torch.tensor([c.forward for c in cams])
    assert fwd[:, 2].max() > 0.9 and fwd[:, 2].min() < -0.9
    for c in cams:
        b = torch.tensor([c.right, c.up, c.forward])
        torch.testing.assert_close(b @ b.T, torch.eye(3), atol=1e-6, rtol=0)
        # right-handed: right x up = -forward (camera looks along forward, we see right/up)
        torch.testing.assert_close(torch.cross(b[0], b[1], dim=0), -b[2], atol=1e-6, rtol=0)
