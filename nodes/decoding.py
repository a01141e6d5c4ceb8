"""Stage-2 decoding nodes: multiview feature injection, mesh decoder, Gaussian decoder (+ 3DGS PLY)."""

from __future__ import annotations

import os
from typing import Any

import torch
from comfy_api.latest import Types, io

from synchuman_core.errors import InputImageError

from . import comfy_bridge as bridge
from .models import ModelBundle
from .types import (
    CATEGORY,
    FEATURES,
    GAUSSIANS,
    MESH,
    MODELS,
    SLAT,
    VIEW_ORDER_HELP,
    DecodedMesh,
    InjectedFeatures,
    StructuredLatent,
)

#: Stage-1 view size of the released models (used when the structured latent does not carry its views).
STAGE1_VIEW_SIZE = 768


def stage1_view_size(slat: Any) -> int:
    """The view size stage 1 made for this structured latent (its colour views), else 768."""
    views = getattr(getattr(slat, "structure", None), "color_views", None)
    if isinstance(views, torch.Tensor) and views.ndim == 4:
        return int(views.shape[-1])
    return STAGE1_VIEW_SIZE


def check_views(name: str, images: torch.Tensor, size: int | None = None,
                node: str = "SyncHuman Feature Injector") -> torch.Tensor:
    """A view batch (IMAGE ``[B, H, W, C]``, any size and aspect) -> ``[B, 3, S, S]``.

    4 body views or 5 with the face close-up; non-square views are padded to square on their background
    colour, then resized to ``size`` (default: their own longer side) by
    :func:`synchuman_core.validation.fit_views`. Errors name ``node`` and its input ``name``.
    """
    from synchuman_core.validation import fit_views

    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise InputImageError(f"{node}: '{name}' must be an IMAGE batch [B, H, W, 3], got "
                              f"{tuple(getattr(images, 'shape', ())) or type(images).__name__}")
    b, h, w, c = images.shape
    if b not in (4, 5):
        raise InputImageError(
            f"{node}: '{name}' holds {b} image(s); it needs 4 body views or 5 with the face close-up. "
            f"{VIEW_ORDER_HELP}. Use SyncHuman View Batch to assemble separate images."
        )
    if c not in (1, 3, 4):
        raise InputImageError(f"{node}: '{name}' has {c} channels; give RGB images")
    return fit_views(images, int(size) if size else max(int(h), int(w)), f"{node}: '{name}'")


class SyncHumanFeatureInjector(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SyncHumanFeatureInjector",
            display_name="SyncHuman Feature Injector",
            category=CATEGORY,
            description="Encodes colour and normal views with DINOv2 for the decoders, which project them onto the "
                        "voxels. Any views work (stage-1 outputs, edited or external images). " + VIEW_ORDER_HELP
                        + "; the face view only helps the texture.",
            inputs=[
                MODELS.Input("models", tooltip="From SyncHuman Model Loader."),
                SLAT.Input("slat", tooltip="From the Structured Latent Sampler."),
                io.Image.Input("color_views", tooltip="Colour views, IMAGE batch of 4 or 5. " + VIEW_ORDER_HELP + "."),
                io.Image.Input("normal_views", tooltip="Normal views, IMAGE batch of 4 or 5, same order. Views of any "
                                                        "size or aspect are padded to square on their background "
                                                        "and resized to the stage-1 view size."),
                io.Boolean.Input("views_mirrored", default=True,
                                 tooltip="On: back and left views are mirrored as stage 1 generates them. Off: they "
                                         "are true photos/renders and are mirrored here."),
            ],
            outputs=[FEATURES.Output(display_name="features", tooltip="Structured latent + multiview features.")],
        )

    @classmethod
    def execute(cls, models: ModelBundle, slat: StructuredLatent, color_views: torch.Tensor,
                normal_views: torch.Tensor, views_mirrored: bool = True) -> io.NodeOutput:
        from synchuman_core.pipeline import multiview_features

        size = stage1_view_size(slat)
        colors = check_views("color_views", color_views, size)  # any size/aspect -> the stage-1 view size
        normals = check_views("normal_views", normal_views, size)
        if not views_mirrored:
            colors, normals = colors.clone(), normals.clone()
            colors[2:4] = colors[2:4].flip(-1)
            normals[2:4] = normals[2:4].flip(-1)
        with bridge.oom_hint("the feature injector (DINOv2)", "set the Model Loader's dtype to fp16"):
            m = models.load("stage2_features")
            bar = bridge.step_callback(2)
            mv_color = multiview_features(m, colors)
            bar(1)
            mv_normal = multiview_features(m, normals)
            bar(2)
        dev = bridge.intermediate_device()
        return io.NodeOutput(InjectedFeatures(slat=slat.slat, mv_color=mv_color.to(dev), mv_normal=mv_normal.to(dev),
                                              color_views=colors, normal_views=normals))


class SyncHumanMeshDecoder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SyncHumanMeshDecoder",
            display_name="SyncHuman Mesh Decoder",
            category=CATEGORY,
            description="Decodes the structured latent and multiview features into a FlexiCubes mesh (256^3). "
                        "mesh: geometry for core nodes (SaveGLB). synchuman_mesh: with colours and views, for "
                        "SyncHuman Export.",
            inputs=[
                MODELS.Input("models", tooltip="From SyncHuman Model Loader."),
                FEATURES.Input("features", tooltip="From SyncHuman Feature Injector."),
            ],
            outputs=[
                io.Mesh.Output(display_name="mesh", tooltip="Geometry only (y up), for core SaveGLB."),
                MESH.Output(display_name="synchuman_mesh", tooltip="Mesh with vertex colours and views, for Export."),
            ],
        )

    @classmethod
    def execute(cls, models: ModelBundle, features: InjectedFeatures) -> io.NodeOutput:
        from synchuman_core.export import zup_to_yup
        from synchuman_core.pipeline import decode_mesh, mesh_arrays

        bar = bridge.step_callback(1)
        with bridge.oom_hint("the mesh decoder", "set the Model Loader's dtype to fp16 and close other models"):
            mesh = decode_mesh(models.load("stage2_mesh"), features.slat, features.mv_color, features.mv_normal)
        bar(1)
        if mesh.faces.shape[0] == 0:
            raise InputImageError("the mesh decoder produced no surface; try another seed for the samplers")
        dev = bridge.intermediate_device()
        v, f, colors = mesh_arrays(mesh)
        native = Types.MESH(zup_to_yup(v)[None].to(dev), f[None].to(dev))
        rich = DecodedMesh(vertices=v, faces=f, vertex_colors=colors, color_views=features.color_views.cpu(),
                           normal_views=features.normal_views.cpu())
        return io.NodeOutput(native, rich)


class SyncHumanGaussianDecoder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SyncHumanGaussianDecoder",
            display_name="SyncHuman Gaussian Decoder",
            category=CATEGORY,
            description="Decodes the structured latent and multiview features into 3D Gaussians (32 per voxel).",
            inputs=[
                MODELS.Input("models", tooltip="From SyncHuman Model Loader."),
                FEATURES.Input("features", tooltip="From SyncHuman Feature Injector."),
            ],
            outputs=[GAUSSIANS.Output(display_name="gaussians")],
        )

    @classmethod
    def execute(cls, models: ModelBundle, features: InjectedFeatures) -> io.NodeOutput:
        from synchuman_core.pipeline import decode_gaussians

        bar = bridge.step_callback(1)
        with bridge.oom_hint("the Gaussian decoder", "set the Model Loader's dtype to fp16 and close other models"):
            gs = decode_gaussians(models.load("stage2_gaussians"), features.slat, features.mv_color, features.mv_normal)
        bar(1)
        return io.NodeOutput(gs.to(bridge.intermediate_device()))


class SyncHumanSaveGaussians(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SyncHumanSaveGaussians",
            display_name="SyncHuman Save Gaussians (PLY)",
            category=CATEGORY,
            is_output_node=True,
            description="Writes the Gaussians as a standard 3D Gaussian Splatting PLY into the output folder "
                        "(open it in a splat viewer; the ComfyUI 3D viewer does not read PLY).",
            inputs=[
                GAUSSIANS.Input("gaussians", tooltip="From SyncHuman Gaussian Decoder."),
                io.String.Input("filename_prefix", default="synchuman/gaussians",
                                tooltip="File name prefix inside the output folder (sub-folders allowed)."),
            ],
            outputs=[io.String.Output(display_name="file", tooltip="PLY path relative to the output folder.")],
        )

    @classmethod
    def execute(cls, gaussians, filename_prefix: str = "synchuman/gaussians") -> io.NodeOutput:
        from synchuman_core.stage2.gaussians import gaussians_ply_bytes

        from .outputs import relative_name, reserve_output

        data = gaussians_ply_bytes(gaussians)
        out, subfolder = reserve_output(filename_prefix, (".ply",), estimate_bytes=len(data))
        with out:  # placed only when complete; nothing left behind on failure
            path = out.write_bytes(".ply", data)
        fname = os.path.basename(str(path))
        return io.NodeOutput(relative_name(path, subfolder),
                             ui={"ply": [{"filename": fname, "subfolder": subfolder, "type": "output"}]})
