"""FlexiCubes mesh extraction on sparse voxels (Shen et al., SIGGRAPH 2023), inference path.

This is our own implementation of what TRELLIS' ``SparseFeatures2Mesh`` + ``FlexiCubes`` compute for
the SyncHuman mesh decoder, written to run on CPU in memory proportional to the number of active
voxels instead of a dense ``(res+1)^3`` grid.

Input: per-cube features ``[N, 101]`` on active cubes of a ``res^3`` grid, channel layout

    sdf [0:8]  | deform [8:32] (8 x 3) | weights [32:53] (beta 12 | alpha 8 | gamma 1) | color [53:101] (8 x 6)

(per-corner quantities in corner order ``c = x + 2y + 4z``, see :data:`CUBE_CORNERS`).

Semantics reproduced (official inference, ``training=False``):

1. ``sdf += -1/res`` (the official adds it in place on a view of the caller's features; we do not
   mutate the caller's tensor, only reproduce the values).
2. Per-corner attributes ``[sdf, deform, color]`` are averaged over all active cubes sharing a grid
   vertex. Grid vertices touched by no active cube keep ``sdf = 1`` (outside), ``deform = 0``,
   ``color = 0``.
3. Vertex positions ``v/res - 0.5 + (1 - 1e-8)/(2 res) * tanh(deform)``.
4. Every cube of the full ``res^3`` grid takes part; a cube is a surface cube when its corner signs
   (``sdf < 0`` = inside) are mixed. Inactive surface cubes (neighbours of active ones) have weight
   features 0. Weights: ``beta = tanh(w)*s + 1``, ``alpha = tanh(w)*s + 1``,
   ``gamma = sigmoid(w)*s + (1-s)/2`` with ``s = weight_scale = 0.99``.
5. Dual Marching Cubes: each surface cube emits one dual vertex per surface patch (table
   :func:`dmc_tables`); the vertex is the beta-weighted mean of the alpha-weighted edge crossings
   ``(x0*w1 - x1*w0)/(w1 - w0)``, ``w = sdf*alpha``; colours (``sigmoid``) likewise.
6. Every surface-crossing grid edge shared by four cubes (i.e. not on the grid boundary) gives a
   quad of the four cubes' dual vertices, oriented towards positive SDF, split into two triangles
   along the diagonal with the larger product of the cubes' ``gamma``.

``qef_reg_scale`` (1e-3 in the official) only enters FlexiCubes' QEF / gradient path, which the
official inference never takes; it is accepted for completeness and unused.

Vertex and face ORDER differ from the official (which depends on ``torch.unique`` over the dense
grid); the mesh is the same up to a permutation of vertices and faces.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache

import torch

__all__ = [
    "CUBE_CORNERS",
    "CUBE_EDGES",
    "FEATS_LAYOUT",
    "Mesh",
    "dmc_tables",
    "flexicubes_extract",
    "sparse_features_to_mesh",
]

logger = logging.getLogger(__name__)

# Corner c of a cube sits at offset (c & 1, c >> 1 & 1, c >> 2 & 1) = (x, y, z).
CUBE_CORNERS: tuple[tuple[int, int, int], ...] = tuple(((c & 1), (c >> 1) & 1, (c >> 2) & 1) for c in range(8))

# The 12 cube edges as corner pairs, in the official numbering (the 12 ``beta`` channels follow it).
# Edges 0, 2, 4, 6 run along x, 1, 3, 5, 7 along z, 8..11 along y (listed from the +y corner).
CUBE_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 5), (4, 5), (0, 4), (2, 3), (3, 7), (6, 7), (2, 6), (2, 0), (3, 1), (7, 5), (6, 4),
)  # fmt: skip

# Channel slices of the 101 per-cube features written by the mesh decoder's out layer.
FEATS_LAYOUT: dict[str, tuple[int, int]] = {"sdf": (0, 8), "deform": (8, 32), "weights": (32, 53), "color": (53, 101)}


@dataclass
class Mesh:
    """A triangle mesh: ``vertices [V,3]`` float, ``faces [F,3]`` int64, optional ``vertex_attrs [V,C]``."""

    vertices: torch.Tensor
    faces: torch.Tensor
    vertex_attrs: torch.Tensor | None = None
    res: int = 0

    @property
    def success(self) -> bool:
        return self.vertices.shape[0] > 0 and self.faces.shape[0] > 0

    def face_normals(self) -> torch.Tensor:
        """Unit normals ``[F, 3]`` from the winding (right hand)."""
        v = self.vertices[self.faces]  # [F, 3, 3]
        return torch.nn.functional.normalize(torch.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1), dim=-1)


# ---------------------------------------------------------------------------------------------------
# Dual-marching-cubes tables, derived from first principles
# ---------------------------------------------------------------------------------------------------


def _cube_faces() -> list[tuple[tuple[int, int, int], list[int]]]:
    """The 6 cube faces as (outward normal, 4 corners in cyclic order)."""
    faces = []
    for axis in range(3):
        a, b = (d for d in range(3) if d != axis)
        for side in (0, 1):
            ring = []
            for pa, pb in ((0, 0), (1, 0), (1, 1), (0, 1)):
                for c, off in enumerate(CUBE_CORNERS):
                    if off[axis] == side and off[a] == pa and off[b] == pb:
                        ring.append(c)
            normal = [0, 0, 0]
            normal[axis] = 1 if side else -1
            faces.append((tuple(normal), ring))
    return faces


def _patches(case: int) -> tuple[list[list[int]], list[tuple[int, int, int]]]:
    """Surface patches of one corner configuration (bit c set = corner c inside, sdf < 0).

    The iso-contour on each cube face joins the face's crossing edges in pairs; on an ambiguous face
    (inside corners on one diagonal) each inside corner is cut off on its own, i.e. the two outside
    corners are connected across the face. Patches are the cycles of crossing edges linked this way.
    Returns (patches as sorted edge lists, outward normals of the ambiguous faces).
    """
    inside = [(case >> c) & 1 for c in range(8)]
    edge_of = {frozenset(e): k for k, e in enumerate(CUBE_EDGES)}
    links: dict[int, list[int]] = {k: [] for k, (a, b) in enumerate(CUBE_EDGES) if inside[a] != inside[b]}
    ambiguous = []
    for normal, ring in _cube_faces():
        ring_edges = [edge_of[frozenset((ring[i], ring[(i + 1) % 4]))] for i in range(4)]
        crossing = [k for k in ring_edges if k in links]
        if len(crossing) == 2:
            links[crossing[0]].append(crossing[1])
            links[crossing[1]].append(crossing[0])
        elif len(crossing) == 4:
            ambiguous.append(normal)
            for i in range(4):
                if inside[ring[i]]:  # cut off this inside corner: join its two face edges
                    e1, e2 = ring_edges[(i - 1) % 4], ring_edges[i]
                    links[e1].append(e2)
                    links[e2].append(e1)
    seen: set[int] = set()
    patches = []
    for start in links:
        if start in seen:
            continue
        stack, patch = [start], []
        while stack:
            k = stack.pop()
            if k not in seen:
                seen.add(k)
                patch.append(k)
                stack.extend(links[k])
        patches.append(sorted(patch))
    return patches, ambiguous


@cache
def dmc_tables() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(edge_patch [256,12], num_patches [256], check [256,5])`` (int64, CPU).

    * ``edge_patch[case, k]``: index of the dual vertex (patch) that crossing edge ``k`` belongs to,
      -1 where edge ``k`` does not cross the surface.
    * ``num_patches[case]``: dual vertices the cube emits (0..4).
    * ``check[case] = (flag, dx, dy, dz, alt_case)``: FlexiCubes' fix for the ambiguous cases C16/C19
      (supplementary §1.3): a configuration with exactly one ambiguous face whose own grouping is a
      single patch while the complementary configuration splits the same edges into two. If the cube
      across that face (offset ``(dx,dy,dz)``) is flagged too, the case is replaced by ``alt_case =
      255 - case`` (same crossing edges, the other face resolution).

    Equal, as patch sets, to the tables shipped with the official FlexiCubes (checked offline).
    """
    edge_patch = torch.full((256, 12), -1, dtype=torch.long)
    num = torch.zeros(256, dtype=torch.long)
    check = torch.zeros((256, 5), dtype=torch.long)
    for case in range(256):
        patches, ambiguous = _patches(case)
        num[case] = len(patches)
        for p, edges in enumerate(patches):
            edge_patch[case, edges] = p
        if len(ambiguous) == 1 and len(patches) == 1 and len(_patches(255 - case)[0]) == 2:
            check[case] = torch.tensor([1, *ambiguous[0], 255 - case])
    return edge_patch, num, check


# ---------------------------------------------------------------------------------------------------
# Sparse grid helpers
# ---------------------------------------------------------------------------------------------------

_CHUNK = 1 << 18  # rows per chunk for the per-corner passes
# Grids with at most this many cells use one-channel dense maps (an int32 index table of the 257^3
# vertex grid is 68 MB); larger grids use sorting and binary search instead.
_DENSE_MAX_CELLS = 1 << 25


def _corner_offsets(device: torch.device) -> torch.Tensor:
    return torch.tensor(CUBE_CORNERS, dtype=torch.long, device=device)  # [8, 3]


def _key(xyz: torch.Tensor, n: int) -> torch.Tensor:
    """Linear key ``(x*n + y)*n + z`` of integer coordinates ``[..., 3]`` (x-major, as the dense grid)."""
    return (xyz[..., 0] * n + xyz[..., 1]) * n + xyz[..., 2]


def _unkey(key: torch.Tensor, n: int) -> torch.Tensor:
    return torch.stack([key // (n * n), (key // n) % n, key % n], dim=-1)


def _lookup(sorted_keys: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Index of each ``query`` in ``sorted_keys``, -1 where absent."""
    if sorted_keys.numel() == 0:
        return torch.full_like(query, -1)
    pos = torch.searchsorted(sorted_keys, query).clamp_(max=sorted_keys.numel() - 1)
    return torch.where(sorted_keys[pos] == query, pos, torch.full_like(pos, -1))


class _KeySet:
    """Sorted unique integer keys in ``[0, n_cells)`` with a position lookup (-1 when absent): a dense
    int32 table for grids up to ``_DENSE_MAX_CELLS`` cells, binary search above."""

    def __init__(self, keys: torch.Tensor, n_cells: int) -> None:
        self.keys = keys
        self.table: torch.Tensor | None = None
        if n_cells <= _DENSE_MAX_CELLS:
            self.table = torch.full((n_cells,), -1, dtype=torch.int32, device=keys.device)
            self.table[keys] = torch.arange(keys.numel(), dtype=torch.int32, device=keys.device)

    def index(self, query: torch.Tensor) -> torch.Tensor:
        """Position of each in-range ``query`` key, -1 where absent (int64, same shape)."""
        if self.table is not None:
            return self.table[query].long()
        return _lookup(self.keys, query)


def _unique_keys(chunks: list[torch.Tensor], n_cells: int, device: torch.device) -> torch.Tensor:
    """Sorted unique values of all key ``chunks`` (keys in ``[0, n_cells)``)."""
    if n_cells <= _DENSE_MAX_CELLS:
        mark = torch.zeros(n_cells, dtype=torch.bool, device=device)
        for ch in chunks:
            mark[ch] = True
        return mark.nonzero().squeeze(1)
    if not chunks:
        return torch.zeros(0, dtype=torch.long, device=device)
    return torch.unique(torch.cat([torch.unique(ch) for ch in chunks]))


def _interp(w0: torch.Tensor, w1: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Zero crossing of a linear function with values ``w0, w1`` at ``x0, x1``: ``(x0 w1 - x1 w0)/(w1 - w0)``."""
    return (x0 * w1 - x1 * w0) / (w1 - w0)


@dataclass
class _Vertices:
    """Averaged per-grid-vertex attributes of the vertices touched by active cubes (sorted by key)."""

    index: _KeySet  # keys [V] int64 (base res+1) and their lookup
    sdf: torch.Tensor  # [V]
    deform: torch.Tensor  # [V, 3]
    color: torch.Tensor | None  # [V, C] (raw, before sigmoid)


def _average_corners(
    coords: torch.Tensor, res: int, sdf: torch.Tensor, deform: torch.Tensor, color: torch.Tensor | None
) -> _Vertices:
    """Mean of per-corner attributes over the active cubes sharing each grid vertex.

    ``coords [N, 3]`` active cubes; ``sdf [N,8]``, ``deform [N,8,3]``, ``color [N,8,C]`` per corner.
    """
    dev, dt = sdf.device, sdf.dtype
    off = _corner_offsets(dev)
    n_cells = (res + 1) ** 3

    def corner_keys(i: int) -> torch.Tensor:
        return _key(coords[i : i + _CHUNK, None, :] + off[None], res + 1).reshape(-1)  # [n*8]

    starts = range(0, coords.shape[0], _CHUNK)
    index = _KeySet(_unique_keys([corner_keys(i) for i in starts], n_cells, dev), n_cells)
    nv = index.keys.numel()
    count = torch.zeros(nv, dtype=dt, device=dev)
    s = torch.zeros(nv, dtype=dt, device=dev)
    d = torch.zeros(nv, 3, dtype=dt, device=dev)
    c = None if color is None else torch.zeros(nv, color.shape[-1], dtype=dt, device=dev)
    for i in starts:
        idx = index.index(corner_keys(i))
        count.index_add_(0, idx, torch.ones_like(idx, dtype=dt))
        s.index_add_(0, idx, sdf[i : i + _CHUNK].reshape(-1))
        d.index_add_(0, idx, deform[i : i + _CHUNK].reshape(-1, 3))
        if c is not None:
            c.index_add_(0, idx, color[i : i + _CHUNK].reshape(-1, c.shape[-1]))
    s /= count
    d /= count[:, None]
    if c is not None:
        c /= count[:, None]
    return _Vertices(index, s, d, c)


def _grid_position(vxyz: torch.Tensor, deform: torch.Tensor, res: int) -> torch.Tensor:
    """Deformed vertex position ``v/res - 0.5 + (1-1e-8)/(2 res) * tanh(deform)`` (official order of ops)."""
    return vxyz / res - 0.5 + (1 - 1e-8) / (res * 2) * torch.tanh(deform)


def _surface_cubes(verts: _Vertices, res: int) -> torch.Tensor:
    """Sorted keys (base ``res``) of all grid cubes with mixed corner signs.

    Only cubes with at least one inside (sdf < 0) corner can be surface cubes, and those corners are
    touched vertices: count, for every cube around an inside vertex, its inside corners; surface cubes
    have between 1 and 7.
    """
    dev = verts.sdf.device
    off = _corner_offsets(dev)
    inside_keys = verts.index.keys[verts.sdf < 0]

    def cubes_around(i: int) -> torch.Tensor:
        vxyz = _unkey(inside_keys[i : i + _CHUNK], res + 1)  # [n, 3]
        cubes = (vxyz[:, None, :] - off[None]).reshape(-1, 3)  # cubes having this vertex as a corner
        return _key(cubes[((cubes >= 0) & (cubes < res)).all(-1)], res)

    starts = range(0, inside_keys.numel(), _CHUNK)
    if res**3 <= _DENSE_MAX_CELLS:
        count = torch.zeros(res**3, dtype=torch.uint8, device=dev)
        for i in starts:
            k = cubes_around(i)
            count.index_put_((k,), torch.ones(1, dtype=torch.uint8, device=dev).expand(k.numel()), accumulate=True)
        return ((count > 0) & (count < 8)).nonzero().squeeze(1)
    cand = _unique_keys([cubes_around(i) for i in starts], res**3, dev)
    keep = []
    for i in range(0, cand.numel(), _CHUNK):
        ck = cand[i : i + _CHUNK]
        vi = verts.index.index(_key(_unkey(ck, res)[:, None, :] + off[None], res + 1))  # [n, 8]
        inside = torch.where(vi >= 0, verts.sdf[vi.clamp(min=0)] < 0, torch.zeros_like(vi, dtype=torch.bool))
        keep.append(ck[inside.sum(-1) < 8])  # at least one inside corner by construction
    return torch.cat(keep) if keep else cand


def _case_ids(cube_keys: torch.Tensor, occ: torch.Tensor, res: int, cubes: _KeySet | None = None) -> torch.Tensor:
    """Corner-occupancy case of each surface cube, with the C16/C19 ambiguity fix of :func:`dmc_tables`.

    ``cube_keys [S]`` sorted surface-cube keys (``cubes`` their lookup), ``occ [S, 8]`` inside corners."""
    _, _, check = dmc_tables()
    check = check.to(cube_keys.device)
    weights = (2 ** torch.arange(8, device=cube_keys.device)).long()
    case = (occ.long() * weights).sum(-1)  # [S]
    cfg = check[case]  # [S, 5]
    flagged = cfg[:, 0] == 1
    idx = flagged.nonzero().squeeze(1)
    if idx.numel() == 0:
        return case
    adj = _unkey(cube_keys[idx], res) + cfg[idx, 1:4]
    in_range = ((adj >= 0) & (adj < res)).all(-1)
    idx, adj = idx[in_range], adj[in_range]
    j = (cubes or _KeySet(cube_keys, res**3)).index(_key(adj, res))
    both = (j >= 0) & flagged[j.clamp(min=0)]
    case = case.clone()
    case[idx[both]] = cfg[idx[both], 4]
    return case


def flexicubes_extract(
    coords: torch.Tensor,
    sdf: torch.Tensor,
    deform: torch.Tensor,
    weights: torch.Tensor,
    color: torch.Tensor | None,
    res: int,
    *,
    weight_scale: float = 0.99,
    qef_reg_scale: float = 1e-3,
) -> Mesh:
    """FlexiCubes on sparse active cubes.

    Args:
        coords: ``[N, 3]`` int cube coordinates in ``[0, res)``, unique.
        sdf: ``[N, 8]`` per-corner SDF (bias already applied).
        deform: ``[N, 8, 3]`` per-corner raw deformation.
        weights: ``[N, 21]`` raw beta (12) | alpha (8) | gamma (1).
        color: ``[N, 8, C]`` raw per-corner colour, or None.
        res: grid resolution (cubes per side).
        weight_scale: FlexiCubes' weight scale (0.99).
        qef_reg_scale: unused on the inference path (see module docstring).
    """
    del qef_reg_scale
    dev, dt = sdf.device, sdf.dtype
    coords = coords.to(device=dev, dtype=torch.long)
    off = _corner_offsets(dev)
    edge_patch, num_patches, _ = dmc_tables()
    edge_patch, num_patches = edge_patch.to(dev), num_patches.to(dev)
    edges = torch.tensor(CUBE_EDGES, dtype=torch.long, device=dev)  # [12, 2]
    n_col = 0 if color is None else color.shape[-1]

    # 1. per-vertex averages of the active cubes' corner attributes
    verts = _average_corners(coords, res, sdf, deform, color)

    # 2. surface cubes of the full grid (active or not) and their corner attributes
    cube_keys = _surface_cubes(verts, res)  # [S] sorted
    S = cube_keys.numel()
    empty = Mesh(
        torch.zeros(0, 3, dtype=dt, device=dev),
        torch.zeros(0, 3, dtype=torch.long, device=dev),
        None if color is None else torch.zeros(0, n_col, dtype=dt, device=dev),
        res,
    )
    if S == 0:
        return empty
    cxyz = _unkey(cube_keys, res)  # [S, 3]
    corner_xyz = cxyz[:, None, :] + off[None]  # [S, 8, 3]
    vi = verts.index.index(_key(corner_xyz, res + 1))  # [S, 8]
    touched = vi >= 0
    vi0 = vi.clamp(min=0)
    c_sdf = torch.where(touched, verts.sdf[vi0], torch.ones((), dtype=dt, device=dev))  # untouched: outside (1)
    c_def = torch.where(touched[..., None], verts.deform[vi0], torch.zeros((), dtype=dt, device=dev))
    c_pos = _grid_position(corner_xyz, c_def, res)  # [S, 8, 3]
    del c_def
    c_col = None
    if color is not None:
        c_col = torch.where(touched[..., None], verts.color[vi0], torch.zeros((), dtype=dt, device=dev))
        c_col = torch.sigmoid(c_col)  # [S, 8, C]
    occ = c_sdf < 0  # [S, 8]
    del verts, vi, vi0, touched  # frees the vertex lookup table
    cubes = _KeySet(cube_keys, res**3)

    # 3. per-cube weights: active cubes carry their features, inactive surface cubes 0
    act_keys, act_order = torch.sort(_key(coords, res))
    ai = _lookup(act_keys, cube_keys)
    w = torch.zeros(S, 21, dtype=dt, device=dev)
    has = ai >= 0
    w[has] = weights[act_order[ai[has]]].to(dt)
    beta = torch.tanh(w[:, :12]) * weight_scale + 1  # [S, 12]
    alpha = torch.tanh(w[:, 12:20]) * weight_scale + 1  # [S, 8]
    gamma = torch.sigmoid(w[:, 20]) * weight_scale + (1 - weight_scale) / 2  # [S]
    del w

    # 4. dual vertices: one per patch of each cube's case
    case = _case_ids(cube_keys, occ, res, cubes)  # [S]
    n_vd = num_patches[case]  # [S]
    first_vd = torch.cumsum(n_vd, 0) - n_vd  # [S]
    patch = edge_patch[case]  # [S, 12]
    cube_i, edge_k = (patch >= 0).nonzero(as_tuple=True)  # crossing (cube, edge) pairs
    vd_of = first_vd[cube_i] + patch[cube_i, edge_k]  # [E] dual vertex of each pair
    a, b = edges[edge_k, 0], edges[edge_k, 1]
    ws_a = c_sdf[cube_i, a] * alpha[cube_i, a]
    ws_b = c_sdf[cube_i, b] * alpha[cube_i, b]
    ue = _interp(ws_a[:, None], ws_b[:, None], c_pos[cube_i, a], c_pos[cube_i, b])  # [E, 3]
    bw = beta[cube_i, edge_k][:, None]  # [E, 1]
    n_total = int(n_vd.sum())
    beta_sum = torch.zeros(n_total, 1, dtype=dt, device=dev).index_add_(0, vd_of, bw)
    vertices = torch.zeros(n_total, 3, dtype=dt, device=dev).index_add_(0, vd_of, ue * bw) / beta_sum
    v_color = None
    if c_col is not None:
        uc = _interp(ws_a[:, None], ws_b[:, None], c_col[cube_i, a], c_col[cube_i, b])  # [E, C]
        v_color = torch.zeros(n_total, n_col, dtype=dt, device=dev).index_add_(0, vd_of, uc * bw) / beta_sum
    vd_map = torch.full((S, 12), -1, dtype=torch.long, device=dev)
    vd_map[cube_i, edge_k] = vd_of
    vd_gamma = torch.repeat_interleave(gamma, n_vd)  # [n_total]

    faces = _quads_to_triangles(cubes, cxyz, c_sdf, vd_map, vd_gamma, res)
    return Mesh(vertices, faces, v_color, res)


# Per grid-edge axis d: the cube edge running along d from corner 0, the two perpendicular axes
# (increasing), and the corner of the official edge's FIRST endpoint (the one whose sign sets the
# quad orientation; y edges are listed from their +y end).
_AXIS_EDGE = {0: (0, (1, 2), 0), 1: (8, (0, 2), 2), 2: (3, (0, 1), 0)}


def _edge_in_shifted_cube(k: int, axis_a: int, sa: int, axis_b: int, sb: int) -> int:
    """Local index of cube edge ``k`` of a cube, seen from the cube shifted by ``-sa`` along a, ``-sb`` along b."""
    c0, c1 = CUBE_EDGES[k]
    bump = (sa << axis_a) | (sb << axis_b)
    pair = {c0 | bump, c1 | bump}
    return next(i for i, e in enumerate(CUBE_EDGES) if set(e) == pair)


def _quads_to_triangles(
    cubes: _KeySet,
    cxyz: torch.Tensor,
    c_sdf: torch.Tensor,
    vd_map: torch.Tensor,
    vd_gamma: torch.Tensor,
    res: int,
) -> torch.Tensor:
    """Faces ``[F, 3]``: one quad per interior crossing grid edge, split by gamma.

    The grid edge along axis d starting at vertex p is "owned" by cube p (its edge from corner 0);
    its four cubes are, in the official (x-major cube index) order, q0 = p - e_a - e_b,
    q1 = p - e_a, q2 = p - e_b, q3 = p (a < b the perpendicular axes). Quad = (q0, q1, q3, q2) when
    the SDF at the edge's first endpoint is > 0, else (q2, q3, q1, q0); the split uses diagonal
    0-2 (triangles 012, 023) when gamma0*gamma2 > gamma1*gamma3, else 1-3 (013, 312).
    """
    dev = cxyz.device
    out = []
    for k_own, (pa, pb), first_corner in _AXIS_EDGE.values():
        owner_vd = vd_map[:, k_own]
        sel = (owner_vd >= 0) & (cxyz[:, pa] >= 1) & (cxyz[:, pb] >= 1)
        own = sel.nonzero().squeeze(1)
        if own.numel() == 0:
            continue
        ea = torch.zeros(3, dtype=torch.long, device=dev)
        eb = torch.zeros(3, dtype=torch.long, device=dev)
        ea[pa], eb[pb] = 1, 1
        p = cxyz[own]
        q = []
        for sa, sb in ((1, 1), (1, 0), (0, 1), (0, 0)):
            j = cubes.index(_key(p - sa * ea - sb * eb, res))
            if bool((j < 0).any()):  # cannot happen: all four cubes contain the crossing edge
                raise RuntimeError("FlexiCubes: a cube around a crossing edge is not a surface cube")
            q.append(vd_map[j, _edge_in_shifted_cube(k_own, pa, sa, pb, sb)])
        quad = torch.stack(q, dim=1)  # [Q, 4]
        flip = c_sdf[own, first_corner] > 0
        quad = torch.where(flip[:, None], quad[:, [0, 1, 3, 2]], quad[:, [2, 3, 1, 0]])
        g = vd_gamma[quad]  # [Q, 4]
        split02 = (g[:, 0] * g[:, 2]) > (g[:, 1] * g[:, 3])
        tri = torch.where(split02[:, None], quad[:, [0, 1, 2, 0, 2, 3]], quad[:, [0, 1, 3, 3, 1, 2]])
        out.append(tri.reshape(-1, 3))
    if not out:
        return torch.zeros(0, 3, dtype=torch.long, device=dev)
    return torch.cat(out)


def sparse_features_to_mesh(
    coords: torch.Tensor,
    feats: torch.Tensor,
    res: int = 256,
    use_color: bool = True,
    *,
    weight_scale: float = 0.99,
) -> Mesh:
    """Mesh from the mesh decoder's sparse output (TRELLIS ``SparseFeatures2Mesh`` semantics).

    Args:
        coords: ``[N, 3]`` (x, y, z) or ``[N, 4]`` (batch, x, y, z) int cube coordinates of ONE
            mesh, in ``[0, res)``.
        feats: ``[N, 101]`` (or ``[N, 53]`` without colour) laid out as :data:`FEATS_LAYOUT`.
        res: grid resolution (256 for SyncHuman).
        use_color: interpolate the 6 colour channels (``sigmoid``) to the vertices.
    Returns:
        :class:`Mesh` with vertices in ``[-0.5, 0.5]^3``, faces, and ``vertex_attrs [V, 6]`` (or None).
    """
    if coords.ndim != 2 or coords.shape[1] not in (3, 4):
        raise ValueError(f"coords must be [N,3] or [N,4], got {tuple(coords.shape)}")
    if coords.shape[1] == 4:
        if coords.shape[0] and bool((coords[:, 0] != coords[0, 0]).any()):
            raise ValueError("sparse_features_to_mesh takes one mesh: coords hold several batch indices")
        coords = coords[:, 1:]
    need = FEATS_LAYOUT["color"][1] if use_color else FEATS_LAYOUT["weights"][1]
    if feats.ndim != 2 or feats.shape[0] != coords.shape[0] or feats.shape[1] < need:
        raise ValueError(f"feats must be [N, {need}] for coords [N, ...], got {tuple(feats.shape)}")
    n = feats.shape[0]
    sl = {k: slice(*v) for k, v in FEATS_LAYOUT.items()}
    sdf = feats[:, sl["sdf"]] + (-1.0 / res)  # [N, 8] (a new tensor: the caller's feats are untouched)
    deform = feats[:, sl["deform"]].reshape(n, 8, 3)
    weights = feats[:, sl["weights"]]
    color = feats[:, sl["color"]].reshape(n, 8, 6) if use_color else None
    return flexicubes_extract(coords, sdf, deform, weights, color, res, weight_scale=weight_scale)
