"""Background removal in ComfyUI: the ``SyncHuman Remove Background`` node and the helpers the Preprocess node
shares with it (model choice, model folder ``models/synchuman/rembg/``, errors in node words)."""

from __future__ import annotations

import numpy as np
import torch
from comfy_api.latest import io
from PIL import Image

from synchuman_core.errors import InputImageError
from synchuman_core.preprocess.background import (
    DEFAULT_REMBG_MODEL,
    REMBG_MODELS,
    BackgroundRemover,
    rembg_search_dirs,
)
from synchuman_core.preprocess.background import (
    official_downsize as downsize_official,
)

from . import comfy_bridge as bridge
from .types import CATEGORY

MODEL_TOOLTIP = (
    "rembg model. u2net: the official SyncHuman choice. u2net_human_seg: trained on people. "
    "birefnet-portrait: finest hair edges, slowest. isnet-general-use: general objects. Files are read from "
    "models/synchuman/rembg/<model>.onnx (or rembg's own ~/.u2net); nothing is downloaded unless asked."
)


def search_dirs() -> list:
    """``models/synchuman/rembg`` for every registered SyncHuman model root, then rembg's own home."""
    bridge.register_model_folder()
    return rembg_search_dirs(bridge.model_roots())


def make_remover(model: str, download: bool = False) -> BackgroundRemover:
    return BackgroundRemover(model, search_dirs(), download=download, surface="comfy")


def _to_pil_rgb(image: torch.Tensor) -> Image.Image:
    """One ComfyUI image ``[H, W, C]`` (float 0..1) -> PIL RGB (alpha dropped, as the official ``convert('RGB')``)."""
    x = image[..., :3].detach().float().cpu().clamp(0.0, 1.0)
    if x.shape[-1] == 1:
        x = x.expand(*x.shape[:2], 3)
    return Image.fromarray(np.round(x.numpy() * 255.0).astype(np.uint8), "RGB")


class SyncHumanRemoveBackground(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SyncHumanRemoveBackground",
            display_name="SyncHuman Remove Background",
            category=CATEGORY,
            description="Cuts the person out with rembg, as the official SyncHuman pipeline does (u2net, input "
                        "downsized to 1024 px on the longer side first). Outputs the image on a transparent "
                        "background and the person MASK (1 = person) for SyncHuman Preprocess (mask_type "
                        "'person mask').",
            inputs=[
                io.Image.Input("image", tooltip="Photos of people (each image of the batch is cut out)."),
                io.Combo.Input("model", options=list(REMBG_MODELS), default=DEFAULT_REMBG_MODEL,
                               tooltip=MODEL_TOOLTIP),
                io.Boolean.Input("official_downsize", default=True,
                                 tooltip="On: shrink images whose longer side exceeds 1024 px before cutting out "
                                         "(official). Off: keep the full size (slower, sharper cut-out edges)."),
                io.Boolean.Input("download_missing", default=False,
                                 tooltip="Download the model file into models/synchuman/rembg/ if it is missing "
                                         "(from rembg's GitHub release, checksum verified). Off: a missing file "
                                         "is an error that names the file and folder."),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip="RGBA image: the person on a transparent background."),
                io.Mask.Output(display_name="mask", tooltip="Person mask, 1 = person (connect with mask_type "
                                                            "'person mask (1 = person)')."),
            ],
        )

    @classmethod
    def execute(cls, image: torch.Tensor, model: str = DEFAULT_REMBG_MODEL, official_downsize: bool = True,
                download_missing: bool = False) -> io.NodeOutput:
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[0] < 1:
            raise InputImageError(f"SyncHuman Remove Background: 'image' must be an IMAGE batch [B, H, W, C], "
                                  f"got {getattr(image, 'shape', type(image).__name__)}")
        remover = make_remover(model, download_missing)
        bar = bridge.step_callback(int(image.shape[0]))
        images, masks = [], []
        sizes = set()
        for i in range(image.shape[0]):
            bridge.throw_if_interrupted()
            rgb = _to_pil_rgb(image[i])
            if official_downsize:
                rgb = downsize_official(rgb)
            cut = np.asarray(remover(rgb)).astype(np.float32) / 255.0
            sizes.add(cut.shape[:2])
            images.append(torch.from_numpy(cut))
            masks.append(torch.from_numpy(cut[..., 3].copy()))
            bar(i + 1)
        if len(sizes) > 1:  # pragma: no cover - one batch has one size; defensive
            raise InputImageError("SyncHuman Remove Background: the images of the batch came out in different sizes")
        dev = bridge.intermediate_device()
        return io.NodeOutput(torch.stack(images).to(dev), torch.stack(masks).to(dev))
