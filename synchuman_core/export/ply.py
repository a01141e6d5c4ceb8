"""Binary PLY writer with per-vertex colors (textures are sampled at the vertices when needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry.mesh import TexturedMesh
from .axes import UpAxis, convert_up_axis
from .writer import write_file

__all__ = ["ply_bytes", "sample_texture_at_vertices", "write_ply"]


def sample_texture_at_vertices(mesh: TexturedMesh) -> torch.Tensor:
    """``[V, 3]`` bilinear texture lookup at each vertex's UV (for formats without textures)."""
    if mesh.texture is None or mesh.uvs is None:
        raise ValueError("mesh has no texture")
    tex = mesh.texture.detach().float().cpu().permute(2, 0, 1)[None]
    grid = (mesh.uvs.detach().float().cpu() * 2 - 1).view(1, 1, -1, 2)
    return F.grid_sample(tex, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0].T


def ply_bytes(mesh: TexturedMesh, *, up_axis: UpAxis = "y") -> bytes:
    """Binary little-endian PLY: float x/y/z, uchar red/green/blue, int32 triangle lists.

    Colors come from ``vertex_colors``, else from the texture sampled at the UVs, else none.
    """
    mesh.validate()
    v = mesh.vertices.detach().float().cpu()
    pos = convert_up_axis(v, up_axis).numpy().astype("<f4")
    colors = mesh.vertex_colors
    if colors is None and mesh.texture is not None:
        colors = sample_texture_at_vertices(mesh)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vert = np.empty(pos.shape[0], dtype=fields)
    vert["x"], vert["y"], vert["z"] = pos[:, 0], pos[:, 1], pos[:, 2]
    if colors is not None:
        rgb = (colors.detach().float().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
        vert["red"], vert["green"], vert["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    f = mesh.faces.detach().cpu().numpy().astype("<i4")
    face = np.empty(f.shape[0], dtype=[("n", "u1"), ("i", "<i4", (3,))])
    face["n"] = 3
    face["i"] = f
    header = ["ply", "format binary_little_endian 1.0", "comment ComfyUI-SyncHuman", f"element vertex {pos.shape[0]}"]
    header += ["property float x", "property float y", "property float z"]
    if colors is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header += [f"element face {f.shape[0]}", "property list uchar int vertex_indices", "end_header"]
    return ("\n".join(header) + "\n").encode("ascii") + vert.tobytes() + face.tobytes()


def write_ply(mesh: TexturedMesh, path: str | Path, *, up_axis: UpAxis = "y") -> Path:
    """Write :func:`ply_bytes` through :mod:`.writer` (never replaces a file, never partial); returns the path."""
    p = Path(path)
    return write_file(p.parent, p.name, ".ply", ply_bytes(mesh, up_axis=up_axis))
