"""Mesh clean-up before UV unwrapping: floaters, decimation, invisible faces, small holes.

Official pipeline (docs/ARCHITECTURE.md §8): pyvista decimation removing 70% of the faces, then removal of inner
faces seen from none of 1000 sphere cameras (min-cut) and pymeshfix filling of holes up to 136 boundary
edges. Here: fast-simplification for the decimation; the official min-cut removal over our rasteriser's
visibility (:mod:`.mincut`, scipy max-flow; ``invisible_method='cull'`` keeps the older cull of face groups
no view sees); a fan filler for small boundary loops. The visibility renders run on ``device``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from .cameras import sphere_cameras
from .mesh import compact_mesh, connected_components
from .raster import rasterize

__all__ = [
    "CleanupSettings",
    "boundary_loops",
    "cleanup_mesh",
    "decimate",
    "fill_small_holes",
    "find_invisible_faces",
    "remove_invisible_faces",
    "remove_small_components",
    "signed_volume",
    "visible_faces",
]

logger = logging.getLogger(__name__)


@dataclass
class CleanupSettings:
    """User-controlled clean-up. Defaults follow the official ``to_glb`` call where one exists."""

    decimate_ratio: float = 0.7  # fraction of faces REMOVED (official simplify=0.7); 0 = off
    target_faces: int | None = None  # absolute face budget; overrides decimate_ratio when set
    remove_floaters: bool = True
    floater_min_fraction: float = 0.005  # components with fewer faces than this × total are dropped
    remove_invisible: bool = True
    invisible_method: str = "mincut"  # official min-cut (geometry.mincut) or "cull" (seen-by-nobody groups)
    visibility_views: int = 1000  # official: 1000 Hammersley cameras (r 2, fov 40°); cull: ortho Fibonacci views
    visibility_resolution: int = 1024
    visibility_dilation: int = 2  # cull only: keep faces within this many vertex rings of a visible face
    max_hole_size: float = 0.04  # mincut only: largest area of a boundary loop a cut may open (official)
    fill_holes: bool = True
    max_hole_edges: int = 136  # official int(250 * sqrt(1 - 0.7))
    weld_tolerance: float = 1e-6  # weld coincident vertices first (world units); 0 = off
    fix_orientation: bool = True  # flip all faces when the mesh is wound inside-out (negative volume)

    def validate(self) -> None:
        if not 0.0 <= self.decimate_ratio < 1.0:
            raise ConfigError(
                f"decimate_ratio must be in [0, 1) (fraction of faces removed), got {self.decimate_ratio}"
            )
        if self.target_faces is not None and self.target_faces < 4:
            raise ConfigError(f"target_faces must be at least 4 (or None), got {self.target_faces}")
        if not 0.0 <= self.floater_min_fraction < 1.0:
            raise ConfigError(f"floater_min_fraction must be in [0, 1), got {self.floater_min_fraction}")
        if self.visibility_views < 1 or self.visibility_resolution < 16:
            raise ConfigError("visibility_views must be >= 1 and visibility_resolution >= 16")
        if self.max_hole_edges < 3:
            raise ConfigError(f"max_hole_edges must be >= 3, got {self.max_hole_edges}")
        if self.invisible_method not in ("mincut", "cull"):
            raise ConfigError(f"invisible_method must be 'mincut' or 'cull', got {self.invisible_method!r}")
        if self.max_hole_size < 0:
            raise ConfigError(f"max_hole_size must be >= 0, got {self.max_hole_size}")
        if self.visibility_dilation < 0 or self.weld_tolerance < 0:
            raise ConfigError("visibility_dilation and weld_tolerance must be >= 0")


# ----------------------------------------------------------------------------------------------------------
# components


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Signed volume enclosed by the triangles (positive when wound counter-clockwise seen from outside)."""
    tri = vertices[faces].astype(np.float64)
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)


def remove_small_components(faces: np.ndarray, num_vertices: int, min_fraction: float) -> np.ndarray:
    """``[F]`` bool keep-mask: drop connected components with fewer than ``min_fraction × F`` faces.

    The largest component is always kept.
    """
    labels, n = connected_components(faces, num_vertices)
    keep = np.ones(faces.shape[0], dtype=bool)
    if n <= 1:
        return keep
    sizes = np.bincount(labels, minlength=n)
    ok = sizes >= min_fraction * faces.shape[0]
    ok[int(np.argmax(sizes))] = True
    return ok[labels]


# ----------------------------------------------------------------------------------------------------------
# decimation


def decimate(
    vertices: np.ndarray, faces: np.ndarray, *, target_faces: int | None = None, ratio: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Quadric decimation with fast-simplification to ``target_faces`` or by removing ``ratio`` of the faces."""
    import fast_simplification

    n = faces.shape[0]
    if target_faces is not None:
        if target_faces >= n:
            return vertices, faces
        kwargs = {"target_count": int(target_faces)}
    else:
        if ratio <= 0.0:
            return vertices, faces
        kwargs = {"target_reduction": float(ratio)}
    v, f = fast_simplification.simplify(
        np.ascontiguousarray(vertices, dtype=np.float64), np.ascontiguousarray(faces, dtype=np.int64), **kwargs
    )
    return v.astype(np.float32), f.astype(np.int64)


def _transfer_vertex_attr(src_v: np.ndarray, src_attr: np.ndarray, dst_v: np.ndarray) -> np.ndarray:
    """Nearest-vertex transfer of a per-vertex attribute (decimation keeps vertex positions close)."""
    from scipy.spatial import cKDTree

    _, idx = cKDTree(src_v).query(dst_v, k=1)
    return src_attr[idx]


# ----------------------------------------------------------------------------------------------------------
# visibility


def visible_faces(
    vertices: torch.Tensor, faces: torch.Tensor, *, views: int = 48, resolution: int = 512
) -> torch.Tensor:
    """``[F]`` bool: faces that own at least one pixel in some orthographic view on the sphere."""
    seen = torch.zeros(faces.shape[0], dtype=torch.bool, device=faces.device)
    for cam in sphere_cameras(views):
        rast = rasterize(
            cam.project(vertices, resolution, resolution), faces, resolution, resolution, cull_backfaces=True
        )
        t = rast.tri_id[rast.tri_id >= 0]
        seen[t] = True
    return seen


def _dilate_faces(face_mask: np.ndarray, faces: np.ndarray, num_vertices: int, rings: int) -> np.ndarray:
    """Grow a face set by ``rings`` vertex-rings (faces sharing a vertex with the set join it)."""
    m = face_mask.copy()
    for _ in range(rings):
        vm = np.zeros(num_vertices, dtype=bool)
        vm[faces[m].reshape(-1)] = True
        m = vm[faces].any(axis=1)
    return m


def _edge_face_pairs(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interior edges as (face_a, face_b) pairs, plus the undirected key and count of every half-edge."""
    f = faces.shape[0]
    he = np.stack([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], axis=1).reshape(-1, 2)
    lo, hi = he.min(axis=1), he.max(axis=1)
    key = lo * (int(faces.max()) + 1) + hi
    face_of = np.repeat(np.arange(f), 3)
    order = np.argsort(key, kind="stable")
    ks = key[order]
    same = ks[1:] == ks[:-1]
    a = face_of[order[:-1][same]]
    b = face_of[order[1:][same]]
    return a, b, key


def find_invisible_faces(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    *,
    views: int = 48,
    resolution: int = 512,
    dilation: int = 2,
    max_boundary_edges: int = 136,
) -> np.ndarray:
    """``[F]`` bool mask of faces that can be removed because nobody sees them.

    Faces seen in no sphere view (after growing the seen set by ``dilation`` rings, which protects
    sub-pixel faces of the outer surface) are grouped by edge connectivity; a group is removable when it
    is closed off from the visible surface (an inner shell) or touches it along at most
    ``max_boundary_edges`` edges (the hole it leaves is small enough for :func:`fill_small_holes`).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as cc

    f_np = faces.cpu().numpy()
    seen = visible_faces(vertices, faces, views=views, resolution=resolution).cpu().numpy()
    seen = _dilate_faces(seen, f_np, vertices.shape[0], dilation)
    hidden = ~seen
    if not hidden.any():
        return hidden
    a, b, _ = _edge_face_pairs(f_np)
    both = hidden[a] & hidden[b]
    n = f_np.shape[0]
    graph = coo_matrix((np.ones(int(both.sum()), dtype=np.int8), (a[both], b[both])), shape=(n, n))
    _, label = cc(graph, directed=False)
    # boundary edges between a hidden group and seen faces
    cross = hidden[a] ^ hidden[b]
    hidden_side = np.where(hidden[a[cross]], a[cross], b[cross])
    border = np.bincount(label[hidden_side], minlength=int(label.max()) + 1)
    removable_group = border <= max_boundary_edges
    return hidden & removable_group[label]


def remove_invisible_faces(vertices: torch.Tensor, faces: torch.Tensor, **kwargs) -> tuple[torch.Tensor, int]:
    """Faces kept after :func:`find_invisible_faces`; returns (faces, number removed)."""
    drop = torch.as_tensor(find_invisible_faces(vertices, faces, **kwargs), device=faces.device)
    return faces[~drop], int(drop.sum())


# ----------------------------------------------------------------------------------------------------------
# holes


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """Closed loops of boundary edges, each oriented so that fan triangles ``(w_i, w_i+1, c)`` match the
    winding of the surrounding faces. Loops through non-manifold vertices that cannot be closed are skipped."""
    if faces.shape[0] == 0:
        return []
    he = np.stack([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], axis=1).reshape(-1, 2)
    lo, hi = he.min(axis=1), he.max(axis=1)
    key = lo * (int(faces.max()) + 1) + hi
    _, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    bnd = he[counts[inv] == 1]
    if bnd.shape[0] == 0:
        return []
    # reversed boundary edges b -> a walk around each hole with the orientation the filling needs
    outgoing: dict[int, list[int]] = {}
    for a, b in bnd.tolist():
        outgoing.setdefault(b, []).append(a)
    loops: list[np.ndarray] = []
    for start in list(outgoing):
        while outgoing.get(start):
            loop = [start]
            cur = outgoing[start].pop()
            closed = False
            for _ in range(bnd.shape[0] + 1):
                if cur == start:
                    closed = True
                    break
                loop.append(cur)
                nxt = outgoing.get(cur)
                if not nxt:
                    break
                cur = nxt.pop()
            if closed and len(loop) >= 3:
                loops.append(np.asarray(loop, dtype=np.int64))
    return loops


def fill_small_holes(
    vertices: np.ndarray,
    faces: np.ndarray,
    *,
    max_edges: int = 136,
    vertex_attr: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """Close boundary loops with at most ``max_edges`` edges.

    Triangles and quads are closed directly; longer loops get a fan around a new vertex at the loop
    centroid (its attribute is the loop mean). Returns vertices, faces, attribute, holes filled.
    """
    loops = [lp for lp in boundary_loops(faces) if len(lp) <= max_edges]
    if not loops:
        return vertices, faces, vertex_attr, 0
    new_v: list[np.ndarray] = []
    new_a: list[np.ndarray] = []
    new_f: list[np.ndarray] = []
    nv = vertices.shape[0]
    for lp in loops:
        if len(lp) == 3:
            new_f.append(lp[None, :])
            continue
        if len(lp) == 4:
            new_f.append(np.array([[lp[0], lp[1], lp[2]], [lp[0], lp[2], lp[3]]], dtype=np.int64))
            continue
        c = nv + len(new_v)
        new_v.append(vertices[lp].mean(axis=0))
        if vertex_attr is not None:
            new_a.append(vertex_attr[lp].mean(axis=0))
        nxt = np.roll(lp, -1)
        new_f.append(np.stack([lp, nxt, np.full_like(lp, c)], axis=1))
    if new_v:
        vertices = np.concatenate([vertices, np.stack(new_v).astype(vertices.dtype)], axis=0)
        if vertex_attr is not None:
            vertex_attr = np.concatenate([vertex_attr, np.stack(new_a).astype(vertex_attr.dtype)], axis=0)
    faces = np.concatenate([faces, *new_f], axis=0)
    return vertices, faces, vertex_attr, len(loops)


# ----------------------------------------------------------------------------------------------------------
# driver


def cleanup_mesh(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    vertex_colors: torch.Tensor | None = None,
    settings: CleanupSettings | None = None,
    *,
    device: torch.device | str | None = None,
    progress=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, dict[str, float]]:
    """Run the clean-up steps in order: weld → floaters → decimate → invisible faces → holes → compact.

    Returns (vertices ``[V',3]`` float32, faces ``[F',3]`` int64, vertex colors or None, stats) on CPU.
    ``device`` only selects where the visibility renders run; ``progress(phase, done, total, unit)``
    reports them. With ``invisible_method='mincut'`` (official) the min-cut runs fill the holes themselves.
    """
    s = settings or CleanupSettings()
    s.validate()
    stats: dict[str, float] = {"faces_in": float(faces.shape[0])}
    v, f = vertices.detach().float().cpu(), faces.detach().long().cpu()
    vc = None if vertex_colors is None else vertex_colors.detach().float().cpu()
    v, f, (vc,) = compact_mesh(v, f, [vc], merge_tolerance=s.weld_tolerance or None)

    v_np, f_np = v.numpy(), f.numpy()
    vc_np = None if vc is None else vc.numpy()
    if s.fix_orientation and f_np.shape[0] and signed_volume(v_np, f_np) < 0:
        # glTF front faces are counter-clockwise; the visibility test culls back faces
        logger.info("mesh is wound inside-out; flipping all faces")
        f_np = np.ascontiguousarray(f_np[:, ::-1])
        stats["flipped_orientation"] = 1.0
    if s.remove_floaters and f_np.shape[0]:
        keep = remove_small_components(f_np, v_np.shape[0], s.floater_min_fraction)
        stats["floater_faces_removed"] = float((~keep).sum())
        f_np = f_np[keep]

    if s.target_faces is not None or s.decimate_ratio > 0:
        v_dec, f_dec = decimate(v_np, f_np, target_faces=s.target_faces, ratio=s.decimate_ratio)
        if vc_np is not None and v_dec is not v_np:
            vc_np = _transfer_vertex_attr(v_np, vc_np, v_dec)
        v_np, f_np = v_dec, f_dec
        stats["faces_decimated"] = float(f_np.shape[0])

    mincut_filled = False
    if s.remove_invisible and f_np.shape[0] and s.invisible_method == "mincut":
        from .mincut import MincutSettings, remove_invisible_mincut

        v_before = v_np
        v_np, f_np, mstats = remove_invisible_mincut(
            v_np, f_np, MincutSettings(views=s.visibility_views, resolution=s.visibility_resolution,
                                       max_hole_size=s.max_hole_size),
            fill=(lambda vv, ff: fill_small_holes(vv, ff, max_edges=s.max_hole_edges)[:2]) if s.fill_holes else None,
            device=device, progress=progress,
        )
        stats.update(mstats)
        mincut_filled = s.fill_holes
        if vc_np is not None:
            vc_np = _transfer_vertex_attr(v_before, vc_np, v_np)
    elif s.remove_invisible and f_np.shape[0]:
        dev = torch.device(device) if device is not None else torch.device("cpu")
        drop = find_invisible_faces(
            torch.from_numpy(v_np).to(dev),
            torch.from_numpy(f_np).to(dev),
            views=s.visibility_views,
            resolution=s.visibility_resolution,
            dilation=s.visibility_dilation,
            max_boundary_edges=s.max_hole_edges,
        )
        stats["invisible_faces_removed"] = float(drop.sum())
        f_np = f_np[~drop]

    if s.fill_holes and f_np.shape[0] and not mincut_filled:
        v_np, f_np, vc_np, n_holes = fill_small_holes(v_np, f_np, max_edges=s.max_hole_edges, vertex_attr=vc_np)
        stats["holes_filled"] = float(n_holes)

    v = torch.from_numpy(np.ascontiguousarray(v_np, dtype=np.float32))
    f = torch.from_numpy(np.ascontiguousarray(f_np, dtype=np.int64))
    vc = None if vc_np is None else torch.from_numpy(np.ascontiguousarray(vc_np, dtype=np.float32))
    v, f, (vc,) = compact_mesh(v, f, [vc])
    stats["faces_out"] = float(f.shape[0])
    stats["vertices_out"] = float(v.shape[0])
    logger.info("mesh clean-up: %s", {k: int(x) for k, x in stats.items()})
    return v, f, vc, stats
