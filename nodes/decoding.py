"""Stage-2 decoding nodes: multiview feature injection, mesh decoder, Gaussian decoder (+ 3DGS PLY)."""

from __future__ import annotations

import os

import torch
from comfy_api.latest import Types, io

from synchuman_core.errors import InputImageError

from . import comfy_bridge as bridge
from .inputs import image_to_chw
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

MIN_VIEW_SIZE = 64


def check_views(name: str, images: torch.Tensor) -> torch.Tensor:
    """Validate a view batch (IMAGE ``[B, H, W, C]``) and return it as ``[B, 3, H, W]``."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise InputImageError(f"{name} must be an IMAGE batch [B, H, W, 3], got {getattr(images, 'shape', images)}")
    b, h, w, c = images.shape
    if b not in (4, 5):
        raise InputImageError(
            f"{name} holds {b} image(s); it needs 4 body views or 5 with the face close-up. {VIEW_ORDER_HELP}. "
            "Use SyncHuman View Batch to assemble separate images."
        )
    if c not in (3, 4):
        raise InputImageError(f"{name} has {c} channels; give RGB images")
    if h != w:
        raise InputImageError(f"{name} views are {w}x{h}; the views must be square (stage 1 makes 768x768)")
    if h < MIN_VIEW_SIZE:
        raise InputImageError(f"{name} views are {w}x{h}; give at least {MIN_VIEW_SIZE}x{MIN_VIEW_SIZE} (768 is native)")
    return image_to_chw(images)


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
                io.Image.Input("normal_views", tooltip="Normal views, IMAGE batch of 4 or 5, same size and order."),
                io.Boolean.Input("views_mirrored", default=True,
                                 tooltip="On: back and left views are mirrored as stage 1 generates them. Off: they "
                                         "are true photos/renders and are mirrored here."),
            ],
            outputs=[FEATURES.Output(display_name="features", tooltip="Structured latent + multiview features.")],
        )

    @classmethod
    def execute(cls, models: ModelBundle, slat: StructuredLatent, color_views: torch.Tensor,
                normal_views: torch.Tensor, views_mirrored: bool = True) -> io.NodeOutput:
        from .stage2 import multiview_features

        colors = check_views("color_views", color_views)
        normals = check_views("normal_views", normal_views)
        if colors.shape[-1] != normals.shape[-1]:
            raise InputImageError(
                f"color_views are {colors.shape[-1]} px and normal_views {normals.shape[-1]} px; give views of one size"
            )
        if not views_mirrored:
            colors, normals = colors.clone(), normals.clone()
            colors[2:4] = colors[2:4].flip(-1)
            normals[2:4] = normals[2:4].flip(-1)
        with bridge.oom_hint("the feature injector (DINOv2)", "set the Model Loader's dtype to fp16"):
            m = models.load("features")
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

        from .stage2 import decode_mesh

        bar = bridge.step_callback(1)
        with bridge.oom_hint("the mesh decoder", "set the Model Loader's dtype to fp16 and close other models"):
            m = models.load("mesh")
            mesh = decode_mesh(m, features.slat, features.mv_color, features.mv_normal)
        bar(1)
        if mesh.faces.shape[0] == 0:
            raise InputImageError("the mesh decoder produced no surface; try another seed for the samplers")
        dev = bridge.intermediate_device()
        v = mesh.vertices.detach().float().cpu()
        f = mesh.faces.detach().long().cpu()
        attrs = getattr(mesh, "vertex_attrs", None)
        colors = None if attrs is None else attrs.detach().float().cpu()[:, :3].clamp(0.0, 1.0)
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
        from .stage2 import decode_gaussians

        bar = bridge.step_callback(1)
        with bridge.oom_hint("the Gaussian decoder", "set the Model Loader's dtype to fp16 and close other models"):
            m = models.load("gaussians")
            gs = decode_gaussians(m, features.slat, features.mv_color, features.mv_normal)
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
        import folder_paths

        out_dir = folder_paths.get_output_directory()
        full, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, out_dir)
        fname = f"{name}_{counter:05}_.ply"
        gaussians.save_ply(os.path.join(full, fname))
        rel = "/".join(p for p in (subfolder, fname) if p)
        return io.NodeOutput(rel, ui={"ply": [{"filename": fname, "subfolder": subfolder, "type": "output"}]})
