"""Triangle-mesh container and small mesh utilities (normals, compaction, components).

Conventions (shared by everything in ``geometry`` and ``export``):

- ``vertices`` ``[V, 3]`` float32 in the SyncHuman world frame: unit cube ``[-0.5, 0.5]^3``, **z up**,
  the subject faces the front camera at ``-Y`` (docs/ARCHITECTURE.md §3.4).
- ``faces`` ``[F, 3]`` int64, counter-clockwise seen from outside (normals point outwards).
- ``uvs`` ``[V, 2]`` float32 in ``[0, 1]``: ``u`` grows with the texture column, ``v`` with the texture
  **row counted from the top** (the glTF convention; OBJ writers store ``1 - v``).
- ``texture`` ``[T, T, 3]`` float32 in ``[0, 1]``, row 0 = top (= ``v = 0``).
- ``vertex_colors`` ``[V, 3]`` float32 in ``[0, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputImageError

__all__ = [
    "TexturedMesh",
    "as_mesh_tensors",
    "compact_mesh",
    "connected_components",
    "face_areas",
    "face_normals",
    "mesh_edges",
    "vertex_normals",
    "welded_vertex_normals",
]


@dataclass
class TexturedMesh:
    """A mesh with optional UVs, a base-color texture and per-vertex colors (see module docstring)."""

    vertices: torch.Tensor  # [V, 3] float32
    faces: torch.Tensor  # [F, 3] int64
    uvs: torch.Tensor | None = None  # [V, 2] float32, v counted from the top row
    texture: torch.Tensor | None = None  # [T, T, 3] float32 in [0, 1]
    vertex_colors: torch.Tensor | None = None  # [V, 3] float32 in [0, 1]
    stats: dict[str, float] = field(default_factory=dict)  # face counts, coverage, timings

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def to(self, device: torch.device | str) -> TexturedMesh:
        def mv(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return TexturedMesh(
            vertices=self.vertices.to(device),
            faces=self.faces.to(device),
            uvs=mv(self.uvs),
            texture=mv(self.texture),
            vertex_colors=mv(self.vertex_colors),
            stats=dict(self.stats),
        )

    def validate(self) -> None:
        """Raise ``InputImageError`` when shapes or index ranges are inconsistent."""
        v, f = self.vertices, self.faces
        if v.ndim != 2 or v.shape[1] != 3:
            raise InputImageError(f"mesh vertices must have shape [V, 3], got {tuple(v.shape)}")
        if f.ndim != 2 or f.shape[1] != 3:
            raise InputImageError(f"mesh faces must have shape [F, 3], got {tuple(f.shape)}")
        if f.numel() and (int(f.min()) < 0 or int(f.max()) >= v.shape[0]):
            raise InputImageError(
                f"mesh faces index vertices outside [0, {v.shape[0]}); the mesh is corrupt or its faces "
                "belong to another vertex array"
            )
        for name in ("uvs", "vertex_colors"):
            t = getattr(self, name)
            if t is not None and t.shape[0] != v.shape[0]:
                raise InputImageError(f"mesh {name} has {t.shape[0]} rows but the mesh has {v.shape[0]} vertices")
        if self.texture is not None:
            if self.texture.ndim != 3 or self.texture.shape[2] != 3:
                raise InputImageError(f"texture must have shape [T, T, 3], got {tuple(self.texture.shape)}")
            if self.uvs is None:
                raise InputImageError("a textured mesh needs uvs")


def as_mesh_tensors(vertices, faces) -> tuple[torch.Tensor, torch.Tensor]:
    """Accept numpy or torch, with or without a leading batch of 1; return float32 ``[V,3]``, int64 ``[F,3]``."""
    v = torch.as_tensor(np.asarray(vertices) if not isinstance(vertices, torch.Tensor) else vertices)
    f = torch.as_tensor(np.asarray(faces) if not isinstance(faces, torch.Tensor) else faces)
    if v.ndim == 3 and v.shape[0] == 1:
        v = v[0]
    if f.ndim == 3 and f.shape[0] == 1:
        f = f[0]
    if v.ndim != 2 or v.shape[-1] != 3 or f.ndim != 2 or f.shape[-1] != 3:
        raise InputImageError(
            f"expected a mesh as vertices [V, 3] and faces [F, 3] (a batch of one is accepted), got "
            f"{tuple(v.shape)} and {tuple(f.shape)}"
        )
    if f.is_floating_point():
        raise InputImageError("mesh faces must be integer vertex indices")
    v = v.detach().to(torch.float32)
    f = f.detach().to(torch.int64)
    if not torch.isfinite(v).all():
        raise InputImageError("mesh vertices contain NaN or Inf; the mesh extraction failed upstream")
    if f.numel() and (int(f.min()) < 0 or int(f.max()) >= v.shape[0]):
        raise InputImageError(f"mesh faces index vertices outside [0, {v.shape[0]})")
    return v, f


def face_normals(vertices: torch.Tensor, faces: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
    """``[F, 3]`` face normals (unnormalised = 2 × area-weighted)."""
    tri = vertices[faces]  # [F, 3, 3]
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    return torch.nn.functional.normalize(n, dim=-1, eps=1e-20) if normalize else n


def face_areas(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """``[F]`` triangle areas."""
    return face_normals(vertices, faces, normalize=False).norm(dim=-1) * 0.5


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """``[V, 3]`` area-weighted unit vertex normals (zero-length for unreferenced vertices)."""
    fn = face_normals(vertices, faces, normalize=False)  # [F, 3]
    vn = torch.zeros_like(vertices)
    for k in range(3):
        vn.index_add_(0, faces[:, k], fn)
    return torch.nn.functional.normalize(vn, dim=-1, eps=1e-20)


def welded_vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Like :func:`vertex_normals`, but copies of a vertex at the same position (UV seams) share one
    normal, so shading and bake weights show no seams."""
    uniq, node = torch.unique(vertices, dim=0, return_inverse=True)
    return vertex_normals(uniq, node[faces])[node]


def mesh_edges(faces: torch.Tensor) -> torch.Tensor:
    """``[E, 2]`` unique undirected edges (sorted pairs) of a triangle list."""
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], dim=0)
    e = torch.sort(e, dim=1).values
    return torch.unique(e, dim=0)


def compact_mesh(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    vertex_attrs: list[torch.Tensor | None] | None = None,
    *,
    merge_tolerance: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor | None]]:
    """Drop degenerate/duplicate faces and unreferenced vertices; optionally weld coincident vertices.

    ``merge_tolerance`` welds vertices whose coordinates round to the same multiple of it (attributes of
    welded vertices are averaged). Returns new vertices, faces and the re-indexed attributes.
    """
    attrs = list(vertex_attrs or [])
    if merge_tolerance is not None and merge_tolerance > 0 and vertices.shape[0]:
        key = torch.round(vertices.double() / merge_tolerance).to(torch.int64)
        _, inv, counts = torch.unique(key, dim=0, return_inverse=True, return_counts=True)
        n = counts.shape[0]
        cnt = counts.to(vertices.dtype).unsqueeze(1)
        merged = torch.zeros(n, 3, dtype=vertices.dtype, device=vertices.device).index_add_(0, inv, vertices) / cnt
        new_attrs: list[torch.Tensor | None] = []
        for a in attrs:
            if a is None:
                new_attrs.append(None)
                continue
            acc = torch.zeros(n, *a.shape[1:], dtype=a.dtype, device=a.device).index_add_(0, inv, a)
            new_attrs.append(acc / cnt.to(a.dtype).view(-1, *([1] * (a.ndim - 1))))
        vertices, faces, attrs = merged, inv[faces], new_attrs

    if faces.numel():
        f = faces
        ok = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])
        f = f[ok]
        if f.numel():
            # duplicate faces (same vertex set, any order or winding): keep the first
            key = torch.sort(f, dim=1).values
            _, inv, counts = torch.unique(key, dim=0, return_inverse=True, return_counts=True)
            first = torch.full((counts.shape[0],), f.shape[0], dtype=torch.int64, device=f.device)
            first.scatter_reduce_(0, inv, torch.arange(f.shape[0], device=f.device), "amin")
            f = f[torch.sort(first).values]
        faces = f

    used = torch.zeros(vertices.shape[0], dtype=torch.bool, device=vertices.device)
    if faces.numel():
        used[faces.reshape(-1)] = True
    remap = torch.full((vertices.shape[0],), -1, dtype=torch.int64, device=vertices.device)
    remap[used] = torch.arange(int(used.sum()), device=vertices.device)
    out_attrs = [None if a is None else a[used] for a in attrs]
    return vertices[used], remap[faces] if faces.numel() else faces.reshape(0, 3), out_attrs


def connected_components(faces: np.ndarray, num_vertices: int) -> tuple[np.ndarray, int]:
    """Label faces by connected component (faces sharing a vertex are connected). Returns ``[F]`` labels, count."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as cc

    faces = np.asarray(faces, dtype=np.int64)
    if faces.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), 0
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = coo_matrix((np.ones(rows.shape[0], dtype=np.int8), (rows, cols)), shape=(num_vertices, num_vertices))
    n, vlabel = cc(graph, directed=False)
    flabel = vlabel[faces[:, 0]]
    # renumber so labels are dense over the faces only
    uniq, flabel = np.unique(flabel, return_inverse=True)
    return flabel.astype(np.int64), int(uniq.shape[0])
