"""Synthetic body-like meshes (trimesh primitives) for tests, benchmarks and demos.

The parts overlap without a boolean union, so the mesh has inner faces, like a raw surface extraction.
Units and axes follow the SyncHuman world: inside ``[-0.5, 0.5]^3``, z up, facing the front camera at
``-Y`` (the nose bump sits on the ``-Y`` side of the head).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["smooth_color_field", "synthetic_body"]


def _capsule(a: np.ndarray, b: np.ndarray, radius: float, count: int):
    import trimesh

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    length = float(np.linalg.norm(b - a))
    cap = trimesh.creation.capsule(height=length, radius=radius, count=[count, count])
    # trimesh capsules run along +z centred at the origin
    direction = (b - a) / length
    transform = trimesh.geometry.align_vectors([0.0, 0.0, 1.0], direction)
    transform[:3, 3] = (a + b) / 2
    cap.apply_transform(transform)
    return cap


def synthetic_body(detail: int = 16, *, nose: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A standing figure (torso, head, arms, legs, optional nose) as ``(vertices [V,3] float32, faces [F,3] int64)``.

    ``detail`` sets the tessellation: 16 → ~6k faces, 32 → ~25k faces, 64 → ~100k faces.
    """
    import trimesh

    head_sub = max(1, int(round(np.log2(max(detail, 2)))) - 1)
    parts = [
        _capsule([0.0, 0.0, -0.02], [0.0, 0.0, 0.2], 0.11, detail),  # torso
        _capsule([-0.06, 0.0, -0.08], [-0.07, 0.0, -0.44], 0.045, detail),  # legs
        _capsule([0.06, 0.0, -0.08], [0.07, 0.0, -0.44], 0.045, detail),
        _capsule([-0.13, 0.0, 0.24], [-0.3, 0.0, 0.02], 0.035, detail),  # arms
        _capsule([0.13, 0.0, 0.24], [0.3, 0.0, 0.02], 0.035, detail),
    ]
    head = trimesh.creation.icosphere(subdivisions=head_sub + 1, radius=0.085)
    head.apply_translation([0.0, 0.0, 0.38])
    parts.append(head)
    if nose:
        n = trimesh.creation.icosphere(subdivisions=head_sub, radius=0.022)
        n.apply_translation([0.0, -0.085, 0.38])
        parts.append(n)
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
