"""Synthetic body-like meshes (trimesh primitives) for tests, benchmarks and demos.

The parts overlap without a boolean union, so the mesh has inner faces, like a raw surface extraction.
Units and axes follow the SyncHuman world: inside ``[-0.5, 0.5]^3``, z up, facing the front camera at
``-Y`` (the nose bump sits on the ``-Y`` side of the head).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["smooth_color_field", "synthetic_body"]


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
