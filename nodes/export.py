"""Export node: clean-up, UV unwrap, texture bake, GLB/OBJ/PLY into ComfyUI's output folder."""

from __future__ import annotations

import logging
import os

import torch
from comfy_api.latest import io

from synchuman_core.errors import InputImageError

from . import comfy_bridge as bridge
from .decoding import check_views
from .types import CATEGORY, GAUSSIANS, MESH, DecodedMesh

log = logging.getLogger(__name__)

FORMATS = ("glb", "obj", "ply")
COLOR_MODES = ("texture", "vertex", "none")
BAKE_MODES = ("official", "fast")


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
                io.Combo.Input("bake_mode", options=list(BAKE_MODES), default="official",
                               tooltip="official: the official recipe: hidden faces removed by min-cut over 1000 "
                                       "views, texture optimised (1000 steps) over the 5 views + 95 renders of the "
                                       "Gaussians (connect 'gaussians'; minutes on a GPU). fast: projection of the "
                                       "5 views (seconds; what they do not see is filled in)."),
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
                GAUSSIANS.Input("gaussians", optional=True,
                                tooltip="From SyncHuman Gaussian Decoder; bake_mode 'official' renders them into "
                                        "95 of its 100 texture observations."),
            ],
            outputs=[io.String.Output(display_name="file",
                                      tooltip="Path relative to the output folder, for core Preview3D.")],
        )

    @classmethod
    def execute(cls, synchuman_mesh: DecodedMesh, filename_prefix: str = "synchuman/mesh", format: str = "glb",
                color_mode: str = "texture", texture_size: int = 1024, bake_mode: str = "official",
                simplify: float = 0.7, fill_holes: bool = True, remove_floaters: bool = True,
                remove_invisible: bool = True, color_views: torch.Tensor | None = None,
                normal_views: torch.Tensor | None = None, gaussians=None) -> io.NodeOutput:
        from synchuman_core.export import mesh_suffixes
        from synchuman_core.export.writer import estimate_result_bytes
        from synchuman_core.pipeline import export_reconstruction, export_settings

        from .outputs import relative_name, reserve_output

        mesh = synchuman_mesh
        node = "SyncHuman Export Mesh"  # views of any size/aspect: padded to square, normals resized to the colours
        colors = check_views("color_views", color_views, node=node) if color_views is not None else mesh.color_views
        size = int(colors.shape[-1]) if colors is not None else None
        if normal_views is not None:
            normals = check_views("normal_views", normal_views, size, node=node)
        else:
            normals = mesh.normal_views
            if normals is not None and size is not None and normals.shape[-1] != size:
                normals = torch.nn.functional.interpolate(normals.float(), size=(size, size), mode="bilinear",
                                                          align_corners=False, antialias=True).clamp(0.0, 1.0)
        settings = export_settings(format, color_mode, texture_size, bake_mode, simplify, fill_holes,
                                   remove_floaters, remove_invisible)
        if color_mode == "texture" and settings.observations.gaussian_views > 0 and gaussians is None:
            raise InputImageError(
                f"{node}: bake_mode '{bake_mode}' bakes the texture from the views and renders of the Gaussians; "
                "connect SyncHuman Gaussian Decoder's 'gaussians' output to the 'gaussians' input, or choose "
                "bake_mode 'fast'"
            )
        estimate = estimate_result_bytes(texture_size=texture_size if color_mode == "texture" else 0,
                                         faces=int(mesh.faces.shape[-2]))
        # checked and reserved before the bake; files placed only when all are written, removed on any failure
        out, subfolder = reserve_output(filename_prefix, mesh_suffixes(settings.formats), estimate_bytes=estimate)
        hint = "lower texture_size, use bake_mode 'fast', or color_mode 'vertex'"
        with out, bridge.oom_hint("the mesh export (texture bake)", hint):
            result = export_reconstruction(
                mesh.vertices, mesh.faces, vertex_colors=mesh.vertex_colors, color_views=colors, normal_views=normals,
                settings=settings, output=out, device=bridge.load_device(), progress=bridge.fraction_callback(),
                gaussians=gaussians,
            )
        path = result.files[format][0]
        fname = os.path.basename(str(path))
        rel = relative_name(path, subfolder)
        log.info("SyncHuman export: %s (%d faces)", rel, result.mesh.num_faces)
        return io.NodeOutput(rel, ui={"3d": [{"filename": fname, "subfolder": subfolder, "type": "output"}]})
