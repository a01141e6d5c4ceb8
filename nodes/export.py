"""Export node: clean-up, UV unwrap, texture bake, GLB/OBJ/PLY into ComfyUI's output folder."""

from __future__ import annotations

import logging
import os

import torch
from comfy_api.latest import io

from synchuman_core.errors import InputImageError

from . import comfy_bridge as bridge
from .decoding import check_views
from .types import CATEGORY, MESH, DecodedMesh

log = logging.getLogger(__name__)

FORMATS = ("glb", "obj", "ply")
COLOR_MODES = ("texture", "vertex", "none")
BAKE_MODES = ("fast", "opt")


def export_settings(fmt: str, color_mode: str, texture_size: int, bake_mode: str, simplify: float,
                    fill_holes: bool, remove_floaters: bool, remove_invisible: bool):
    from synchuman_core.export import ExportSettings

    s = ExportSettings.official() if bake_mode == "opt" else ExportSettings()
    s.cleanup.decimate_ratio = float(simplify)
    s.cleanup.fill_holes = bool(fill_holes)
    s.cleanup.remove_floaters = bool(remove_floaters)
    s.cleanup.remove_invisible = bool(remove_invisible)
    s.bake.texture_size = int(texture_size)
    s.bake.mode = bake_mode
    s.color_mode = color_mode
    s.formats = (fmt,)
    s.validate()
    return s


class SyncHumanExport(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SyncHumanExport",
            display_name="SyncHuman Export Mesh",
            category=CATEGORY,
            is_output_node=True,
            description="Cleans the mesh (simplify, floaters, hidden faces, holes), unwraps UVs, bakes the texture "
                        "from the views and writes GLB/OBJ/PLY into the output folder. Connect 'file' to core "
                        "Preview3D to look at it.",
            inputs=[
                MESH.Input("synchuman_mesh", tooltip="From SyncHuman Mesh Decoder."),
                io.String.Input("filename_prefix", default="synchuman/mesh",
                                tooltip="File name prefix inside the output folder (sub-folders allowed)."),
                io.Combo.Input("format", options=list(FORMATS), default="glb",
                               tooltip="glb: one file, textured (ComfyUI's 3D viewer shows it). obj: .obj + .mtl + "
                                       "texture png. ply: vertex colours only."),
                io.Combo.Input("color_mode", options=list(COLOR_MODES), default="texture",
                               tooltip="texture: bake a UV texture from the views (best); vertex: per-vertex "
                                       "colours (fast, no UVs); none: geometry only."),
                io.Int.Input("texture_size", default=1024, min=512, max=4096, step=256,
                             tooltip="Texture side in pixels (official 1024). Lower it if the bake runs out of "
                                     "memory."),
                io.Combo.Input("bake_mode", options=list(BAKE_MODES), default="fast",
                               tooltip="fast: weighted projection of the views (seconds). opt: the official "
                                       "optimisation (1000 steps; slower, sharper)."),
                io.Float.Input("simplify", default=0.7, min=0.0, max=0.95, step=0.05,
                               tooltip="Fraction of faces removed by decimation (official 0.7; 0 = keep all)."),
                io.Boolean.Input("fill_holes", default=True, tooltip="Close small holes (official: up to 136 "
                                                                      "edges)."),
                io.Boolean.Input("remove_floaters", default=True,
                                 tooltip="Drop small disconnected pieces (< 1 % of the faces)."),
                io.Boolean.Input("remove_invisible", default=True,
                                 tooltip="Drop faces no outside view can see (inner surfaces)."),
                io.Image.Input("color_views", optional=True,
                               tooltip="Bake from these colour views instead of the ones the mesh was decoded "
                                       "with (4 or 5, documented order)."),
                io.Image.Input("normal_views", optional=True,
                               tooltip="Normal views matching color_views (they mark where the subject is)."),
            ],
            outputs=[io.String.Output(display_name="file",
                                      tooltip="Path relative to the output folder, for core Preview3D.")],
        )

    @classmethod
    def execute(cls, synchuman_mesh: DecodedMesh, filename_prefix: str = "synchuman/mesh", format: str = "glb",
                color_mode: str = "texture", texture_size: int = 1024, bake_mode: str = "fast",
                simplify: float = 0.7, fill_holes: bool = True, remove_floaters: bool = True,
                remove_invisible: bool = True, color_views: torch.Tensor | None = None,
                normal_views: torch.Tensor | None = None) -> io.NodeOutput:
        import folder_paths

        from synchuman_core.export import export_mesh

        mesh = synchuman_mesh
        colors = check_views("color_views", color_views) if color_views is not None else mesh.color_views
        normals = check_views("normal_views", normal_views) if normal_views is not None else mesh.normal_views
        if normals is not None and colors is not None and normals.shape[-1] != colors.shape[-1]:
            raise InputImageError("color_views and normal_views must have the same size")
        settings = export_settings(format, color_mode, texture_size, bake_mode, simplify, fill_holes,
                                   remove_floaters, remove_invisible)
        out_dir = folder_paths.get_output_directory()
        full, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, out_dir)
        views = colors[:4] if colors is not None else None
        face = colors[4] if colors is not None and colors.shape[0] > 4 else None
        nviews = normals[:4] if normals is not None else None
        nface = normals[4] if normals is not None and normals.shape[0] > 4 else None
        hint = "lower texture_size, use bake_mode 'fast', or color_mode 'vertex'"
        with bridge.oom_hint("the mesh export (texture bake)", hint):
            result = export_mesh(
                mesh.vertices, mesh.faces, vertex_colors=mesh.vertex_colors, views=views, face_view=face,
                normal_views=nviews, face_normal=nface, settings=settings, output_dir=full,
                filename=f"{name}_{counter:05}_", device=bridge.load_device(), progress=bridge.fraction_callback(),
            )
        path = result.files[format][0]
        fname = os.path.basename(str(path))
        rel = "/".join(p for p in (subfolder, fname) if p)
        log.info("SyncHuman export: %s (%d faces)", rel, result.mesh.num_faces)
        return io.NodeOutput(rel, ui={"3d": [{"filename": fname, "subfolder": subfolder, "type": "output"}]})
