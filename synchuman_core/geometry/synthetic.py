"""Synthetic body-like meshes (trimesh primitives) for tests, benchmarks and demos.

The parts overlap without a boolean union, so the mesh has inner faces, like a raw surface extraction.
Units and axes follow the SyncHuman world: inside ``[-0.5, 0.5]^3``, z up, facing the front camera at
``-Y`` (the nose bump sits on the ``-Y`` side of the head).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "body_sdf",
    "detailed_color_field",
    "sample_surface",
    "smooth_color_field",
    "surface_gaussians",
    "synthetic_body",
    "synthetic_body_detail",
    "synthetic_human",
]


_TORSO = ((0.0, 0.0, -0.02), (0.0, 0.0, 0.2), 0.11)
_LIMBS = (
    ((-0.06, 0.0, -0.08), (-0.07, 0.0, -0.44), 0.045),  # legs
    ((0.06, 0.0, -0.08), (0.07, 0.0, -0.44), 0.045),
    ((-0.13, 0.0, 0.24), (-0.3, 0.0, 0.02), 0.035),  # arms
    ((0.13, 0.0, 0.24), (0.3, 0.0, 0.02), 0.035),
)
_HEAD = ((0.0, 0.0, 0.38), 0.085)
_NOSE = ((0.0, -0.085, 0.38), 0.022)


def _capsule(a, b, radius: float, edge: float):
    """Capsule from ``a`` to ``b`` with near-uniform triangles of about ``edge`` length (no long slivers)."""
    import trimesh

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    length = float(np.linalg.norm(b - a))
    sections = max(6, int(np.ceil(2 * np.pi * radius / edge)))
    n_arc = max(2, int(np.ceil(0.5 * np.pi * radius / edge)))
    n_len = max(1, int(np.ceil(length / edge)))
    th = np.linspace(-0.5 * np.pi, 0.0, n_arc + 1)
    bottom = np.stack([radius * np.cos(th), -length / 2 + radius * np.sin(th)], axis=1)
    z = np.linspace(-length / 2, length / 2, n_len + 1)[1:-1]
    side = np.stack([np.full_like(z, radius), z], axis=1)
    top = np.stack([radius * np.cos(-th[::-1]), length / 2 + radius * np.sin(-th[::-1])], axis=1)
    profile = np.concatenate([bottom, side, top], axis=0)
    profile[0, 0] = profile[-1, 0] = 0.0
    cap = trimesh.creation.revolve(profile, sections=sections)
    if cap.volume < 0:
        cap.invert()
    direction = (b - a) / length
    transform = trimesh.geometry.align_vectors([0.0, 0.0, 1.0], direction)
    transform[:3, 3] = (a + b) / 2
    cap.apply_transform(transform)
    return cap


def _sphere(center, radius: float, edge: float):
    import trimesh

    # icosphere edges are about 1.1 * radius / 2**subdivisions long
    sub = int(np.clip(np.round(np.log2(1.1 * radius / edge)), 1, 7))
    sph = trimesh.creation.icosphere(subdivisions=sub, radius=radius)
    sph.apply_translation(center)
    return sph


def synthetic_body_detail(faces: int) -> int:
    """The ``detail`` of :func:`synthetic_body` that gives about ``faces`` triangles (~15.3 × detail²)."""
    return max(8, round((faces / 15.3) ** 0.5))


def synthetic_body(detail: int = 16, *, nose: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A standing figure (torso, head, arms, legs, optional nose) as ``(vertices [V,3] float32, faces [F,3] int64)``.

    Triangles are near-uniform with edges of about ``0.7 / detail / 2`` (like a surface extraction);
    ``detail`` 8 → ~1.2k faces, 16 → ~4k, 32 → ~16k, 64 → ~63k, 81 → ~100k.
    """
    import trimesh

    edge = 0.35 / max(detail, 1)
    parts = [_capsule(a, b, r, edge) for a, b, r in (_TORSO, *_LIMBS)]
    parts.append(_sphere(*_HEAD, edge))
    if nose:
        parts.append(_sphere(*_NOSE, edge))
    mesh = trimesh.util.concatenate(parts)
    return (
        torch.from_numpy(np.asarray(mesh.vertices, dtype=np.float32)),
        torch.from_numpy(np.asarray(mesh.faces, dtype=np.int64)),
    )


def smooth_color_field(points: torch.Tensor) -> torch.Tensor:
    """A smooth, asymmetric RGB field over space in [0.1, 0.9] (known colors for bake tests)."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    return torch.stack(
        [
            0.5 + 0.4 * torch.sin(7.0 * x + 1.0 + 2.0 * z),
            0.5 + 0.4 * torch.sin(6.0 * y + 5.0 * z),
            0.5 + 0.4 * torch.cos(4.0 * z - 5.0 * x + 3.0 * y),
        ],
        dim=-1,
    )


def _capsule_sdf(p: torch.Tensor, a, b, r: float) -> torch.Tensor:
    a = torch.tensor(a, dtype=p.dtype, device=p.device)
    b = torch.tensor(b, dtype=p.dtype, device=p.device)
    ab = b - a
    ll = float(ab @ ab)
    t = (((p - a) @ ab) / ll).clamp(0.0, 1.0) if ll > 0 else torch.zeros_like(p[:, 0])
    return (p - a - t[:, None] * ab).norm(dim=-1) - r


def _smooth_min(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    h = (0.5 + 0.5 * (b - a) / k).clamp(0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def body_sdf(points: torch.Tensor, *, blend: float = 0.02) -> torch.Tensor:
    """Signed distance (approximately; negative inside) of a standing figure: torso, head with a nose,
    arms and legs blended into one closed surface. Same proportions as :func:`synthetic_body`."""
    d = _capsule_sdf(points, *_TORSO[:2], _TORSO[2])
    for a, b, r in _LIMBS:
        d = _smooth_min(d, _capsule_sdf(points, a, b, r), blend)
    (hc, hr), (nc, nr) = _HEAD, _NOSE
    d = _smooth_min(d, _capsule_sdf(points, hc, hc, hr), blend)
    return _smooth_min(d, _capsule_sdf(points, nc, nc, nr), 0.5 * blend)


def synthetic_human(res: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """One closed, watertight, outward-wound surface of :func:`body_sdf` extracted with our FlexiCubes at
    ``res`` cubes per side (like the mesh decoder's output). ``res`` 64 → ~10k faces, 128 → ~40k."""
    from .flexicubes import CUBE_CORNERS, flexicubes_extract

    n = res + 1
    g = torch.arange(n, dtype=torch.float32)
    grid = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), dim=-1).view(-1, 3)
    sdf = body_sdf(grid / res - 0.5).view(n, n, n)
    corners = torch.tensor(CUBE_CORNERS, dtype=torch.long)  # [8, 3]
    cubes = torch.stack(torch.meshgrid(*(torch.arange(res),) * 3, indexing="ij"), dim=-1).view(-1, 3)
    cs = sdf[tuple((cubes[:, None, :] + corners[None]).unbind(-1))]  # [N, 8]
    active = cs.min(dim=1).values < 0  # interior cubes too: missing corners default to "outside"
    cubes, cs = cubes[active], cs[active]
    m = flexicubes_extract(
        cubes, cs, torch.zeros(cubes.shape[0], 8, 3), torch.zeros(cubes.shape[0], 21), None, res
    )
    return m.vertices.float().contiguous(), m.faces.long().contiguous()


def detailed_color_field(points: torch.Tensor) -> torch.Tensor:
    """A textured RGB field in [0.1, 0.9]: the smooth field plus stripes and a checker of a few
    centimetres, so blur and misplaced texels show in a PSNR."""
    base = smooth_color_field(points)
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    stripes = 0.12 * torch.sin(60.0 * z + 20.0 * x)[:, None]
    checker = 0.08 * torch.sign(torch.sin(45.0 * x) * torch.sin(45.0 * y) * torch.sin(45.0 * z))[:, None]
    return (base * 0.8 + 0.1 + stripes + checker * torch.tensor([1.0, -1.0, 0.5])).clamp(0.1, 0.9)


def sample_surface(
    vertices: torch.Tensor, faces: torch.Tensor, count: int, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` points uniformly over the surface (area-weighted, seeded) and their face normals."""
    gen = torch.Generator().manual_seed(seed)
    tri = vertices[faces]  # [F, 3, 3]
    cross = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    area = cross.norm(dim=-1)
    f = torch.multinomial(area / area.sum(), count, replacement=True, generator=gen)
    r1, r2 = torch.rand(count, generator=gen), torch.rand(count, generator=gen)
    s1 = r1.sqrt()
    bary = torch.stack([1 - s1, s1 * (1 - r2), s1 * r2], dim=-1)
    pts = (bary[:, :, None] * tri[f]).sum(dim=1)
    return pts, torch.nn.functional.normalize(cross[f], dim=-1)


def surface_gaussians(
    vertices: torch.Tensor, faces: torch.Tensor, color_fn, count: int, *, seed: int = 0, opacity: float = 0.95
):
    """``count`` flat Gaussians on the surface with the true colours ``color_fn(points)`` (a known-answer
    scene for the splatting renderer and the official bake): discs of radius ~0.8 × the mean spacing,
    one tenth as thick, lying in the tangent plane."""
    from .splat import GaussianCloud

    pts, nrm = sample_surface(vertices, faces, count, seed=seed)
    tri = vertices[faces]
    area = float(torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1).norm(dim=-1).sum() / 2)
    s = 0.8 * (area / count) ** 0.5
    # quaternion (w, x, y, z) turning +z onto the normal
    z = torch.tensor([0.0, 0.0, 1.0]).expand_as(nrm)
    w = 1.0 + nrm[:, 2]
    q = torch.cat([w[:, None], torch.cross(z, nrm, dim=-1)], dim=-1)
    q[w < 1e-6] = torch.tensor([0.0, 1.0, 0.0, 0.0])
    return GaussianCloud(
        means=pts,
        scales=torch.tensor([s, s, 0.1 * s]).expand(count, 3).clone(),
        quats=torch.nn.functional.normalize(q, dim=-1),
        opacities=torch.full((count,), float(opacity)),
        colors=color_fn(pts),
    )
