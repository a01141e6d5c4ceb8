"""Render meshes into the SyncHuman views with our rasteriser (previews, tests, bake checks)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .cameras import NUM_BODY_VIEWS, OrthoCamera, body_view_camera, face_view_camera, true_to_generated_orientation
from .mesh import TexturedMesh, welded_vertex_normals
from .raster import interpolate, rasterize

__all__ = ["RenderedViews", "render_generated_views", "render_mesh"]


def render_mesh(
    mesh: TexturedMesh, camera: OrthoCamera, height: int, width: int, *, background: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render ``mesh`` (texture if present, else vertex colors, else grey) with an orthographic camera.

    Returns ``(color [3, H, W], normal [3, H, W], mask [H, W])``; ``normal`` is the world normal mapped to
    ``n * 0.5 + 0.5`` (a preview / mask source, not the generated normal-map convention).
    Background pixels are ``background`` in both images.
    """
    v, f = mesh.vertices, mesh.faces
    rast = rasterize(camera.project(v, height, width), f, height, width)
    m = rast.mask
    if mesh.texture is not None and mesh.uvs is not None:
        uv = interpolate(mesh.uvs.to(v.device), f, rast)  # [H, W, 2]
        grid = (uv * 2 - 1)[None]
        tex = mesh.texture.to(v.device).permute(2, 0, 1)[None]
        color = F.grid_sample(tex, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    elif mesh.vertex_colors is not None:
        color = interpolate(mesh.vertex_colors.to(v.device), f, rast).permute(2, 0, 1)
    else:
        color = torch.full((3, height, width), 0.7, device=v.device)
    nrm = F.normalize(interpolate(welded_vertex_normals(v, f), f, rast), dim=-1).permute(2, 0, 1) * 0.5 + 0.5
    color = torch.where(m[None], color, torch.full_like(color, background))
    nrm = torch.where(m[None], nrm, torch.full_like(nrm, background))
    return color, nrm, m


@dataclass
class RenderedViews:
    """Views in the *generated* orientation (views 2 and 3 mirrored), like the Stage-1 outputs."""

    colors: torch.Tensor  # [4, 3, H, W]
    normals: torch.Tensor  # [4, 3, H, W] world normals * 0.5 + 0.5, white background
    masks: torch.Tensor  # [4, H, W] bool
    face: torch.Tensor | None = None  # [3, Hf, Wf]
    face_normal: torch.Tensor | None = None
    face_mask: torch.Tensor | None = None


def render_generated_views(
    mesh: TexturedMesh, resolution: int, *, face_resolution: int | None = None, background: float = 1.0
) -> RenderedViews:
    """Render the 4 body views (and the face close-up) exactly as the bake expects to receive them."""
    cols, nrms, masks = [], [], []
    for i in range(NUM_BODY_VIEWS):
        c, n, m = render_mesh(mesh, body_view_camera(i), resolution, resolution, background=background)
        cols.append(c)
        nrms.append(n)
        masks.append(m)
    out = RenderedViews(
        colors=true_to_generated_orientation(torch.stack(cols)),
        normals=true_to_generated_orientation(torch.stack(nrms)),
        masks=true_to_generated_orientation(torch.stack(masks)),
    )
    if face_resolution:
        c, n, m = render_mesh(mesh, face_view_camera(), face_resolution, face_resolution, background=background)
        out.face, out.face_normal, out.face_mask = c, n, m
    return out
