"""Input nodes: the photo (+ mask) to the prepared SyncHuman input, and view images to a view batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from comfy_api.latest import io

from synchuman_core.errors import InputImageError

from . import comfy_bridge as bridge
from .types import CATEGORY, INPUT, VIEW_ORDER_HELP

MASK_LOADIMAGE = "LoadImage alpha (1 = background)"
MASK_PERSON = "person mask (1 = person)"


def image_to_chw(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI ``IMAGE [B, H, W, C]`` -> ``[B, 3, H, W]`` float32 in [0, 1] (alpha dropped)."""
    return images[..., :3].permute(0, 3, 1, 2).float().clamp(0.0, 1.0)


def chw_to_image(views: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` -> ComfyUI ``IMAGE [B, H, W, 3]`` float32 on the intermediate device."""
    return views.detach().permute(0, 2, 3, 1).float().clamp(0.0, 1.0).contiguous().to(bridge.intermediate_device())


def is_loadimage_no_alpha(mask: torch.Tensor) -> bool:
    """Core ``LoadImage`` gives a 64x64 all-zero MASK when the file has no alpha channel."""
    return tuple(mask.shape[-2:]) == (64, 64) and not bool(mask.any())


class SyncHumanPreprocess(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SyncHumanPreprocess",
            display_name="SyncHuman Preprocess",
            category=CATEGORY,
            description="Cuts the person out (alpha or mask), frames it as the official pipeline does and makes "
                        "the five multiview inputs (4 x the framed photo + the face close-up) and the DINOv2 crop.",
            inputs=[
                io.Image.Input("image", tooltip="One photo of a person (batch of 1). Its background must be "
                                                "removed: connect the alpha as MASK (LoadImage's MASK output) "
                                                "or a person mask from a background-removal node."),
                io.Combo.Input("mask_type", options=[MASK_LOADIMAGE, MASK_PERSON], default=MASK_LOADIMAGE,
                               tooltip="How to read the MASK: LoadImage's MASK is 1 - alpha (1 on the background); "
                                       "segmentation / background-removal nodes give 1 on the person."),
                io.Mask.Input("mask", optional=True,
                              tooltip="The person's cut-out. Without it the IMAGE must carry an alpha channel."),
            ],
            outputs=[
                INPUT.Output(display_name="input", tooltip="Prepared input for the SyncHuman samplers."),
                io.Image.Output(display_name="views", tooltip="The five multiview inputs (front x4 + face)."),
                io.Image.Output(display_name="condition", tooltip="The 518x518 DINOv2 crop (black background)."),
            ],
        )

    @classmethod
    def execute(cls, image: torch.Tensor, mask_type: str = MASK_LOADIMAGE, mask: torch.Tensor | None = None
                ) -> io.NodeOutput:
        from synchuman_core.preprocess import prepare_input

        if image.ndim != 4 or image.shape[0] != 1:
            raise InputImageError(
                f"SyncHuman Preprocess takes one image (IMAGE batch of 1), got shape {tuple(image.shape)}; "
                "pick one with an 'Image From Batch' node"
            )
        if mask is not None and mask.ndim == 3 and mask.shape[0] > 1:
            raise InputImageError(f"the MASK holds {mask.shape[0]} masks; connect the mask of this one image")
        if mask is not None and is_loadimage_no_alpha(mask):
            if image.shape[-1] != 4:
                raise InputImageError(
                    "the image has no alpha channel (LoadImage gave an empty 64x64 MASK) and no person mask is "
                    "connected. Load a PNG whose background is transparent, or connect the MASK of a "
                    "background-removal node (and set mask_type to 'person mask')."
                )
            mask = None
        if mask is None and image.shape[-1] != 4:
            raise InputImageError(
                "the image has no alpha channel and no mask is connected: SyncHuman needs the person cut out. "
                "Connect LoadImage's MASK (from a PNG with a transparent background) or the MASK of a "
                "background-removal node."
            )
        prepared = prepare_input(image[0].float().cpu(), None if mask is None else mask.float().cpu(),
                                 mask_is_inverted=(mask is not None and mask_type == MASK_LOADIMAGE))
        cond = torch.as_tensor(prepared.dino_image).float().div(255.0)[None]
        return io.NodeOutput(prepared, chw_to_image(prepared.mv_views), cond.to(bridge.intermediate_device()))


class SyncHumanViewBatch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        tip = " view (IMAGE; the first image of a batch is used)."
        return io.Schema(
            node_id="SyncHumanViewBatch",
            display_name="SyncHuman View Batch",
            category=CATEGORY,
            description="Assembles separately made or edited views into one view batch in the documented order, "
                        "for the Feature Injector. " + VIEW_ORDER_HELP + ".",
            inputs=[
                io.Image.Input("front", tooltip="Front" + tip),
                io.Image.Input("right", tooltip="Right" + tip + " Seen from the subject's right side."),
                io.Image.Input("back", tooltip="Back" + tip),
                io.Image.Input("left", tooltip="Left" + tip),
                io.Boolean.Input("mirror_back_left", default=False,
                                 tooltip="On: back and left are true photos/renders and are mirrored here to the "
                                         "convention stage 1 generates. Off: they are already mirrored (e.g. "
                                         "edited stage-1 outputs)."),
                io.Image.Input("face", optional=True, tooltip="Face close-up" + tip + " Optional; used only "
                                                              "for the texture."),
            ],
            outputs=[io.Image.Output(display_name="views", tooltip=VIEW_ORDER_HELP + ".")],
        )

    @classmethod
    def execute(cls, front, right, back, left, mirror_back_left: bool = False, face=None) -> io.NodeOutput:
        views = [front, right, back, left] + ([face] if face is not None else [])
        size = tuple(front.shape[1:3])
        out = []
        for i, v in enumerate(views):
            v = image_to_chw(v[:1])
            if tuple(v.shape[-2:]) != size:
                v = F.interpolate(v, size=size, mode="bilinear", align_corners=False, antialias=True)
            if mirror_back_left and i in (2, 3):
                v = v.flip(-1)
            out.append(v)
        return io.NodeOutput(chw_to_image(torch.cat(out, dim=0)))
