"""Export of a reconstruction: the decoder mesh as arrays, the export settings, the view split and the
call into :func:`synchuman_core.export.export_mesh` (clean-up, UV, texture bake, files). The CLI, the batch
runner and the Export node all go through :func:`export_reconstruction`, so they write the same bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .data import split_views

__all__ = ["export_reconstruction", "export_settings", "mesh_arrays"]


def mesh_arrays(mesh: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(vertices [V, 3] float32, faces [F, 3] int64, vertex colours [V, 3] in [0, 1] or None)`` on the CPU
    from the mesh decoder's output (``vertices``, ``faces``, optional ``vertex_attrs`` whose first three
    channels are the colour)."""
    v = mesh.vertices.detach().float().cpu()
    f = mesh.faces.detach().long().cpu()
    attrs = getattr(mesh, "vertex_attrs", None)
    colors = None if attrs is None else attrs.detach().float().cpu()[:, :3].clamp(0.0, 1.0)
    return v, f, colors


def export_settings(fmt: str = "glb", color_mode: str = "texture", texture_size: int = 1024, bake_mode: str = "official",
                    simplify: float = 0.7, fill_holes: bool = True, remove_floaters: bool = True,
                    remove_invisible: bool = True) -> Any:
    """:class:`~synchuman_core.export.ExportSettings` from the user-facing choices (defaults: the official
    ``to_glb``: 70 % of faces removed, holes filled, 1024² texture, optimisation bake), validated.
    ``bake_mode`` is the export recipe: ``official`` or ``fast`` (:data:`synchuman_core.export.api.RECIPES`)."""
    from ..export import ExportSettings

    s = ExportSettings.recipe(bake_mode)
    s.cleanup.decimate_ratio = float(simplify)
    s.cleanup.fill_holes = bool(fill_holes)
    s.cleanup.remove_floaters = bool(remove_floaters)
    s.cleanup.remove_invisible = bool(remove_invisible)
    s.bake.texture_size = int(texture_size)
    s.color_mode = color_mode  # type: ignore[assignment]
    s.formats = (fmt,)
    s.validate()
    return s


def export_reconstruction(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    *,
    vertex_colors: torch.Tensor | None = None,
    color_views: torch.Tensor | None = None,
    normal_views: torch.Tensor | None = None,
    settings: Any = None,
    output: Any = None,
    output_dir: str | Path | None = None,
    filename: str = "synchuman",
    device: torch.device | str | None = None,
    progress: Any = None,
    gaussians: Any = None,
    on_step: Any = None,
) -> Any:
    """Clean, unwrap, bake from the views and write the files of one mesh; returns the
    :class:`~synchuman_core.export.api.ExportResult`. ``color_views`` / ``normal_views``: ``[4|5, 3, H, W]``
    in [0, 1] (views 2/3 mirrored as stage 1 makes them; view 4, the face close-up, optional).
    Files go into ``output`` (a reserved :class:`~synchuman_core.export.writer.OutputSet`, placed when it
    commits) or, without one, ``output_dir/filename.<format>``; neither: nothing is written. ``gaussians``:
    the decoded Gaussians (recipe ``official`` renders them into 95 observations); ``on_step(phase, done,
    total, unit)``: per-phase progress."""
    from ..export import export_mesh

    views, face = split_views(color_views)
    nviews, nface = split_views(normal_views)
    return export_mesh(vertices, faces, vertex_colors=vertex_colors, views=views, face_view=face,
                       normal_views=nviews, face_normal=nface, settings=settings or export_settings(),
                       output=output, output_dir=output_dir, filename=filename, device=device, progress=progress,
                       gaussians=gaussians, on_step=on_step)
