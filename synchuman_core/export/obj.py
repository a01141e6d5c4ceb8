"""Wavefront OBJ writer: ``name.obj`` + ``name.mtl`` + ``name.png`` (texture) or OBJ vertex colors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..geometry.mesh import TexturedMesh, welded_vertex_normals
from .axes import UpAxis, convert_up_axis
from .glb import encode_png
from .writer import reserve_stem

__all__ = ["OBJ_SUFFIXES", "obj_files", "write_obj"]


def _rows(prefix: str, array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    np.savetxt(buf, array, fmt=f"{prefix} {fmt}")
    return buf.getvalue()


def obj_files(mesh: TexturedMesh, stem: str, *, up_axis: UpAxis = "y", name: str = "synchuman") -> dict[str, bytes]:
    """``{".obj": ..., ".mtl": ..., ".png": ...}`` for files named ``<stem>.obj`` etc. (``.png`` only when
    textured). Y-up by default, like the GLB.

    Textured meshes: ``vt`` holds ``(u, 1 - v)`` (OBJ counts v from the bottom row), the MTL names the PNG
    in ``map_Kd``. Vertex-colored meshes use the common ``v x y z r g b`` extension.
    """
    mesh.validate()
    v = mesh.vertices.detach().float().cpu()
    f = mesh.faces.detach().long().cpu().numpy() + 1
    pos = convert_up_axis(v, up_axis).numpy()
    nrm = convert_up_axis(welded_vertex_normals(v, mesh.faces.cpu()), up_axis).numpy()
    textured = mesh.texture is not None
    parts = [b"# ComfyUI-SyncHuman\n", f"mtllib {stem}.mtl\n".encode()]
    if not textured and mesh.vertex_colors is not None:
        rgb = mesh.vertex_colors.detach().float().clamp(0, 1).cpu().numpy()
        parts.append(_rows("v", np.concatenate([pos, rgb], axis=1), "%.6f %.6f %.6f %.4f %.4f %.4f"))
    else:
        parts.append(_rows("v", pos, "%.6f %.6f %.6f"))
    parts.append(_rows("vn", nrm, "%.5f %.5f %.5f"))
    parts.append(f"o {name}\nusemtl {name}\n".encode())
    if textured:
        uv = mesh.uvs.detach().float().cpu().numpy().copy()
        uv[:, 1] = 1.0 - uv[:, 1]
        parts.insert(3, _rows("vt", uv, "%.6f %.6f"))
        idx = np.repeat(f, 3, axis=1)  # a/a/a b/b/b c/c/c
        parts.append(_rows("f", idx, "%d/%d/%d %d/%d/%d %d/%d/%d"))
    else:
        idx = np.repeat(f, 2, axis=1)
        parts.append(_rows("f", idx, "%d//%d %d//%d %d//%d"))
    out = {".obj": b"".join(parts)}
    mtl = [f"newmtl {name}", "Ka 0 0 0", "Kd 1 1 1", "Ks 0 0 0", "d 1", "illum 1"]
    if textured:
        out[".png"] = encode_png(mesh.texture)
        mtl.append(f"map_Kd {stem}.png")
    out[".mtl"] = ("\n".join(mtl) + "\n").encode("utf-8")
    return out


OBJ_SUFFIXES = (".obj", ".mtl", ".png")


def write_obj(mesh: TexturedMesh, path: str | Path, *, up_axis: UpAxis = "y", name: str = "synchuman") -> list[Path]:
    """Write ``mesh`` as ``<stem>.obj`` + ``.mtl`` (+ ``.png`` texture), numbered together through
    :mod:`.writer` (no file of the three may exist: an existing ``<stem>.png``, e.g. the input photo, moves
    the whole set to ``<stem>_00001``). Returns the written files."""
    p = Path(path)
    with reserve_stem(p.parent, p.name, OBJ_SUFFIXES) as out:
        for suffix, data in obj_files(mesh, out.stem, up_axis=up_axis, name=name).items():
            out.write_bytes(suffix, data)
    return out.paths
