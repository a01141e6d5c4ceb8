"""The official invisible-face removal (TRELLIS/SyncHuman ``postprocess_mesh`` → ``_fill_holes``).

1. Visibility: the share of ``views`` Hammersley-sphere cameras (r = 2, fov 40°, +z up, no back-face
   culling) in which a face owns at least one pixel of a ``resolution``² rasterisation (ours).
2. Per connected component (faces sharing an edge) the "outer" faces have visibility above
   ``min(max(min(q_cc(ratio), q_all(ratio)), min_outer), 0.5)``; "inner" faces have visibility
   ``<= max_inner``.
3. Min-cut on the face dual graph: dual edges weigh the length of the shared edge, inner faces connect
   to the source and outer faces to the sink with weight 1 (all × 1000). Max-flow: scipy's
   ``maximum_flow`` (integer capacities, so weights are scaled by 1e6 and rounded).
4. Each connected piece of the source side is removed when its median visibility is ``<= min_outer``
   and every loop of new boundary it opens has an area ``<= max_hole_size`` (fan area around the loop's
   centre).
5. Small holes (``<= max_hole_edges`` boundary edges) are closed.

The parameter sets ``(ratio, min_outer, max_inner)`` are tried in order on the same input; the loop
stops as soon as the last run removed more than 15,000 faces or more than 0.8 × the vertex count, and
the last run's output is kept (official behaviour).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .cameras import OFFICIAL_FOV_DEG, OFFICIAL_RADIUS, hammersley_cameras
from .raster import rasterize

__all__ = ["OFFICIAL_PARAMETER_SETS", "MincutSettings", "face_visibility", "mincut_invisible_faces", "remove_invisible_mincut"]

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int, str], None]

#: (min_outer_hole_ratio, min_outer_hole_min, max_inner_hole), in the order the official code tries them.
OFFICIAL_PARAMETER_SETS: tuple[tuple[float, float, float], ...] = ((0.7, 0.15, 0.01), (0.7, 0.15, 0.0), (0.6, 0.08, 0.01))
_CAP_SCALE = 1e6  # integer capacities for scipy: 1000 (official factor) × 1000 (sub-unit edge lengths)


@dataclass
class MincutSettings:
    views: int = 1000
    resolution: int = 1024
    radius: float = OFFICIAL_RADIUS
    fov_deg: float = OFFICIAL_FOV_DEG
    max_hole_size: float = 0.04  # largest area of a boundary loop the cut may open
    parameter_sets: tuple[tuple[float, float, float], ...] = OFFICIAL_PARAMETER_SETS


def face_visibility(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    *,
    views: int = 1000,
    resolution: int = 1024,
    radius: float = OFFICIAL_RADIUS,
    fov_deg: float = OFFICIAL_FOV_DEG,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """``[F]`` float: share of the Hammersley cameras that see each face (at least one pixel)."""
    count = torch.zeros(faces.shape[0], dtype=torch.int32, device=faces.device)
    for i, cam in enumerate(hammersley_cameras(views, radius, fov_deg)):
        rast = rasterize(cam.project(vertices, resolution, resolution), faces, resolution, resolution)
        ids = torch.unique(rast.tri_id[rast.tri_id >= 0])
        count[ids] += 1
        if progress is not None:
            progress("visibility", i + 1, views, "view")
    return (count.float() / max(views, 1)).cpu().numpy()


def _edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique edges ``[E, 2]``, ``face2edge [F, 3]`` and the number of faces of every edge ``[E]``."""
    he = np.sort(np.stack([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], axis=1).reshape(-1, 2), axis=1)
    edges, inv, deg = np.unique(he, axis=0, return_inverse=True, return_counts=True)
    return edges, inv.reshape(-1, 3), deg


def _dual_edges(face2edge: np.ndarray, num_edges: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of faces sharing an edge ``[D, 2]`` and that edge ``[D]`` (consecutive pairs on
    non-manifold edges)."""
    e = face2edge.reshape(-1)
    f = np.repeat(np.arange(face2edge.shape[0]), 3)
    order = np.argsort(e, kind="stable")
    e, f = e[order], f[order]
    same = e[1:] == e[:-1]
    return np.stack([f[:-1][same], f[1:][same]], axis=1), e[1:][same]


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(pairs.shape[0], dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(g, directed=False)[1]


def _min_cut_source_side(n: int, pairs: np.ndarray, weights: np.ndarray, src: np.ndarray, snk: np.ndarray) -> np.ndarray:
    """Nodes (faces) on the source side of the minimum s-t cut (scipy ``maximum_flow``, Dinic)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import breadth_first_order, maximum_flow

    s, t = n, n + 1
    rows = np.concatenate([pairs[:, 0], src, snk])
    cols = np.concatenate([pairs[:, 1], np.full(src.shape, s), np.full(snk.shape, t)])
    cap = np.concatenate([weights, np.ones(src.shape[0] + snk.shape[0])])
    cap = np.maximum(np.rint(cap * _CAP_SCALE), 1).astype(np.int32)
    r2 = np.concatenate([rows, cols])  # undirected: both directions
    c2 = np.concatenate([cols, rows])
    graph = csr_matrix((np.concatenate([cap, cap]), (r2, c2)), shape=(n + 2, n + 2))
    graph.sum_duplicates()
    flow = maximum_flow(graph, s, t).flow
    residual = (graph - flow).tocsr()
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reach = breadth_first_order(residual, s, directed=True, return_predecessors=False)
    return reach[reach < n]


def _loop_areas(vertices: np.ndarray, loop_edges: np.ndarray) -> list[float]:
    """Area of every edge-connected group of boundary edges: Σ ½|(a-c)×(b-c)|, c = mean edge midpoint."""
    if loop_edges.shape[0] == 0:
        return []
    verts = np.unique(loop_edges)
    remap = np.searchsorted(verts, loop_edges)
    label = _components(verts.shape[0], remap)[remap[:, 0]]
    out = []
    for lab in np.unique(label):
        e = loop_edges[label == lab]
        a, b = vertices[e[:, 0]].astype(np.float64), vertices[e[:, 1]].astype(np.float64)
        c = ((a + b) * 0.5).mean(axis=0)
        out.append(float(0.5 * np.linalg.norm(np.cross(a - c, b - c), axis=1).sum()))
    return out


def mincut_invisible_faces(
    vertices: np.ndarray,
    faces: np.ndarray,
    visibility: np.ndarray,
    *,
    ratio: float,
    min_outer: float,
    max_inner: float,
    max_hole_size: float = 0.04,
) -> np.ndarray:
    """``[F]`` bool: faces one official min-cut run removes (see the module docstring)."""
    n = faces.shape[0]
    remove = np.zeros(n, dtype=bool)
    inner = np.nonzero(visibility <= max_inner)[0]
    if inner.shape[0] == 0:
        return remove
    edges, face2edge, deg = _edges(faces)
    pairs, shared = _dual_edges(face2edge, edges.shape[0])
    cc = _components(n, pairs)
    q_all = float(np.quantile(visibility, ratio))
    outer_mask = np.zeros(n, dtype=bool)
    for lab in np.unique(cc):
        m = cc == lab
        thr = min(max(min(float(np.quantile(visibility[m], ratio)), q_all), min_outer), 0.5)
        outer_mask[m] = visibility[m] > thr
    outer = np.nonzero(outer_mask)[0]
    length = np.linalg.norm(vertices[edges[shared, 0]] - vertices[edges[shared, 1]], axis=1)
    cut = _min_cut_source_side(n, pairs, length, inner, outer)
    if cut.shape[0] == 0:
        return remove
    cut = np.sort(cut)
    in_cut = np.zeros(n, dtype=bool)
    in_cut[cut] = True
    sub = pairs[in_cut[pairs[:, 0]] & in_cut[pairs[:, 1]]]
    lab = _components(n, sub)[cut]
    for piece in np.unique(lab):
        fids = cut[lab == piece]
        vis = np.sort(visibility[fids])
        if vis[(vis.shape[0] - 1) // 2] > min_outer:  # torch.median = lower median
            continue
        e_ids, e_cnt = np.unique(face2edge[fids].reshape(-1), return_counts=True)
        new_boundary = e_ids[(e_cnt == 1) & (deg[e_ids] != 1)]
        if any(a > max_hole_size for a in _loop_areas(vertices, edges[new_boundary])):
            continue
        remove[fids] = True
    return remove


def remove_invisible_mincut(
    vertices: np.ndarray,
    faces: np.ndarray,
    settings: MincutSettings | None = None,
    *,
    fill: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
    device: torch.device | str | None = None,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Run the official parameter sets (module docstring); ``fill(vertices, faces)`` closes the holes after
    each run (the clean-up passes its small-hole filler). Returns vertices, faces, stats. ``device`` selects
    where the visibility renders run."""
    from .mesh import compact_mesh

    s = settings or MincutSettings()
    dev = torch.device(device) if device is not None else torch.device("cpu")
    vis = face_visibility(
        torch.from_numpy(np.ascontiguousarray(vertices, dtype=np.float32)).to(dev),
        torch.from_numpy(np.ascontiguousarray(faces, dtype=np.int64)).to(dev),
        views=s.views, resolution=s.resolution, radius=s.radius, fov_deg=s.fov_deg, progress=progress,
    )
    orig_faces, v_num = faces.shape[0], vertices.shape[0]
    result = (vertices, faces)
    stats: dict[str, float] = {"invisible_faces_removed": 0.0, "mincut_runs": 0.0}
    for k, (ratio, min_outer, max_inner) in enumerate(s.parameter_sets):
        drop = mincut_invisible_faces(
            vertices, faces, vis, ratio=ratio, min_outer=min_outer, max_inner=max_inner, max_hole_size=s.max_hole_size
        )
        v_t, f_t, _ = compact_mesh(torch.from_numpy(vertices), torch.from_numpy(faces[~drop]))
        v_k, f_k = v_t.numpy(), f_t.numpy()
        if fill is not None and f_k.shape[0]:
            v_k, f_k = fill(v_k, f_k)
        result = (v_k, f_k)
        removed = orig_faces - f_k.shape[0]
        stats.update({"invisible_faces_removed": float(drop.sum()), "mincut_runs": float(k + 1)})
        logger.info("min-cut run %d (%s, %s, %s): removed %d faces", k + 1, ratio, min_outer, max_inner, drop.sum())
        if removed > 15000 or removed > v_num * 0.8:
            break
    return result[0], result[1], stats
