"""Input nodes: the photo (+ mask) to the prepared SyncHuman input, and view images to a view batch."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from synchuman_core.errors import InputImageError
from synchuman_core.preprocess.background import DEFAULT_REMBG_MODEL, REMBG_MODELS

from . import comfy_bridge as bridge
from .background import MODEL_TOOLTIP, search_dirs
from .types import CATEGORY, INPUT, VIEW_ORDER_HELP

MASK_LOADIMAGE = "LoadImage alpha (1 = background)"
MASK_PERSON = "person mask (1 = person)"
BACKGROUND_OFF = "off"
BACKGROUND_CHOICES = [*REMBG_MODELS, BACKGROUND_OFF]
#: How the Preprocess node names its inputs in errors.
NODE_WORDS = {
    "where": "SyncHuman Preprocess",
    "image": "the 'image' input",
    "mask": "the 'mask' input",
    "background": "'remove_background'",
    "background_off": "'remove_background' is 'off'",
}


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
            description="Cuts the person out (a connected person MASK wins; else the image's alpha; else, as the "
                        "official pipeline does, background removal with rembg), frames it as the official "
                        "pipeline does and makes the five multiview inputs (4 x the framed photo + the face "
                        "close-up) and the DINOv2 crop.",
            inputs=[
                io.Image.Input("image", tooltip="One photo of a person (batch of 1): a plain photo (its background "
                                                "is removed, see remove_background), a PNG with a transparent "
                                                "background, or any image with a person MASK connected."),
                io.Combo.Input("mask_type", options=[MASK_LOADIMAGE, MASK_PERSON], default=MASK_LOADIMAGE,
                               tooltip="How to read the MASK: LoadImage's MASK is 1 - alpha (1 on the background); "
                                       "segmentation / background-removal nodes give 1 on the person."),
                io.Mask.Input("mask", optional=True,
                              tooltip="The person's cut-out (wins over alpha and background removal). LoadImage's "
                                      "MASK of a photo without transparency counts as no mask."),
                io.Combo.Input("remove_background", options=BACKGROUND_CHOICES, default=DEFAULT_REMBG_MODEL,
                               optional=True,  # saved API prompts without it keep validating (official default)
                               tooltip="When the image has no transparency and no person mask is connected: cut "
                                       "the person out with this rembg model (official: u2net; input downsized to "
                                       "1024 px first). 'off': such an image is an error. " + MODEL_TOOLTIP),
            ],
            outputs=[
                INPUT.Output(display_name="input", tooltip="Prepared input for the SyncHuman samplers."),
                io.Image.Output(display_name="views", tooltip="The five multiview inputs (front x4 + face)."),
                io.Image.Output(display_name="condition", tooltip="The 518x518 DINOv2 crop (black background)."),
            ],
        )

    @classmethod
    def execute(cls, image: torch.Tensor, mask_type: str = MASK_LOADIMAGE, mask: torch.Tensor | None = None,
                remove_background: str = DEFAULT_REMBG_MODEL) -> io.NodeOutput:
        from synchuman_core.validation import check_choice, prepare_photo

        check_choice(remove_background, "SyncHuman Preprocess: 'remove_background'", BACKGROUND_CHOICES)
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[0] != 1:
            raise InputImageError(
                f"SyncHuman Preprocess takes one image (IMAGE batch of 1), got shape "
                f"{tuple(getattr(image, 'shape', ()))}; pick one with an 'Image From Batch' node"
            )
        if mask is not None and mask.ndim == 3 and mask.shape[0] > 1:
            raise InputImageError(f"SyncHuman Preprocess: the 'mask' input holds {mask.shape[0]} masks; connect "
                                  "the mask of this one image")
        if mask is not None and mask_type == MASK_LOADIMAGE and (is_loadimage_no_alpha(mask) or not bool(mask.any())):
            mask = None  # LoadImage of a file without alpha (or with alpha 255 everywhere): the official "no alpha"
        background = None if remove_background == BACKGROUND_OFF else remove_background
        photo = prepare_photo(
            image[0].float().cpu(), None if mask is None else mask.float().cpu(), words=NODE_WORDS,
            mask_is_inverted=(mask is not None and mask_type == MASK_LOADIMAGE), background=background,
            search_dirs=search_dirs() if background is not None else None, surface="comfy",
        )
        prepared = photo.prepared
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
                        "for the Feature Injector. Views may have any size and aspect: each is padded to square on "
                        "its background colour and resized to the front view's size. " + VIEW_ORDER_HELP + ".",
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
        from synchuman_core.validation import fit_views

        views = [front, right, back, left] + ([face] if face is not None else [])
        names = ["front", "right", "back", "left", "face"]
        for n, v in zip(names, views):
            if not isinstance(v, torch.Tensor) or v.ndim != 4 or v.shape[0] < 1:
                raise InputImageError(f"SyncHuman View Batch: '{n}' must be an IMAGE [B, H, W, C], got "
                                      f"{tuple(getattr(v, 'shape', ())) or type(v).__name__}")
        # every view padded to square on its background, then resized to the front view's (square) size
        size = max(int(front.shape[1]), int(front.shape[2]))
        out = fit_views([v[0] for v in views], size, "SyncHuman View Batch", counts=())
        if mirror_back_left:
            out[2:4] = out[2:4].flip(-1)
        return io.NodeOutput(chw_to_image(out))
