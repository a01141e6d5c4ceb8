"""Parity runner for ``h_flexicubes``: TRELLIS ``SparseFeatures2Mesh`` + FlexiCubes on a sparse grid.

The official vertex/face order comes from ``torch.unique`` over the dense grid; ours differs, so the
meshes are compared order-independently with :func:`compare_meshes`.
"""

from __future__ import annotations

from collections import Counter

import torch

from ...errors import ParityError
from ...geometry.flexicubes import sparse_features_to_mesh
from .. import Comparison, Fixture

__all__ = ["compare_meshes", "run"]


def _canonical_faces(faces: torch.Tensor, rep: torch.Tensor) -> Counter:
    """Multiset of faces after mapping vertex ids through ``rep``, each rotated to start at its smallest id
    (rotation keeps the winding)."""
    out: Counter = Counter()
    for tri in rep[faces].tolist():
        i = tri.index(min(tri))
        out[tuple(tri[i:] + tri[:i])] += 1
    return out


def compare_meshes(
    ours_v: torch.Tensor,
    ours_f: torch.Tensor,
    ref_v: torch.Tensor,
    ref_f: torch.Tensor,
    ours_attr: torch.Tensor | None = None,
    ref_attr: torch.Tensor | None = None,
    *,
    merge_tol: float = 1e-6,
) -> dict[str, float]:
    """Order-independent mesh comparison.

    Each of our vertices is matched to its nearest reference vertex (and vice versa for the error).
    Reference vertices closer than ``merge_tol`` to each other (coincident dual vertices happen when
    the SDF is exactly 0 at a grid vertex) are merged into one representative before the faces are
    compared as multisets of oriented vertex triples.

    Returns ``vertex_error`` (max symmetric nearest-neighbour distance), ``attr_error`` (max abs
    difference of matched attributes, 0 without attributes), ``face_mismatches`` (faces in one
    multiset but not the other; 0 = same connectivity and winding), ``count_mismatch`` (|dV| + |dF|).
    """
    res = {"count_mismatch": float(abs(ours_v.shape[0] - ref_v.shape[0]) + abs(ours_f.shape[0] - ref_f.shape[0]))}
    if ours_v.shape[0] == 0 or ref_v.shape[0] == 0:
        res.update(vertex_error=0.0 if ours_v.shape[0] == ref_v.shape[0] else float("inf"), attr_error=0.0)
        res["face_mismatches"] = float(ours_f.shape[0] + ref_f.shape[0])
        return res
    a, b = ours_v.double(), ref_v.double()
    d_ab, nn = torch.cdist(a, b).min(1)
    d_ba = torch.cdist(b, a).min(1).values
    res["vertex_error"] = float(max(d_ab.max(), d_ba.max()))
    res["attr_error"] = 0.0
    if ours_attr is not None and ref_attr is not None:
        res["attr_error"] = float((ours_attr.double() - ref_attr.double()[nn]).abs().max())
    # representative of each reference vertex: the smallest index among coincident ones
    close = torch.cdist(b, b) <= merge_tol  # [Vr, Vr]
    rep = close.float().argmax(1)  # first True per row = smallest coincident index
    ref_faces = _canonical_faces(ref_f, rep)
    our_faces = _canonical_faces(ours_f, rep[nn])
    res["face_mismatches"] = float(sum(((ref_faces - our_faces) + (our_faces - ref_faces)).values()))
    return res


def run(fx: Fixture) -> list[Comparison]:
    args = fx.config.get("args", {})
    res = args.get("res", fx.meta.get("res"))
    if res is None:
        raise ParityError(f"fixture {fx.path.name}: neither config.json args nor meta.json give the grid 'res'")
    res = int(res)
    use_color = bool(args.get("use_color", True))
    coords, feats = fx.inputs["coords"], fx.inputs["feats"]
    feats_before = feats.clone()
    mesh = sparse_features_to_mesh(coords, feats, res=res, use_color=use_color)
    out = fx.outputs
    r = compare_meshes(
        mesh.vertices, mesh.faces, out["vertices"], out["faces"], mesh.vertex_attrs, out.get("vertex_attrs")
    )
    scale = float(out["vertices"].abs().max()) if out["vertices"].numel() else 1.0
    comps = [
        Comparison("vertices (nearest neighbour)", None, None, fx.tol, error=r["vertex_error"] / scale),
        Comparison(
            "faces (oriented, order-independent)",
            None,
            None,
            0.0,
            error=r["face_mismatches"] + r["count_mismatch"],
            note="number of faces not matched",
        ),
        Comparison("caller feats untouched", None, None, 0.0, error=float((feats - feats_before).abs().max())),
    ]
    if use_color and "vertex_attrs" in out:
        ascale = max(float(out["vertex_attrs"].abs().max()), 1e-12)
        comps.append(Comparison("vertex_attrs (matched)", None, None, fx.tol, error=r["attr_error"] / ascale))
    return comps
