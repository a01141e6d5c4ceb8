"""Typed stage data, the official post-edits of the stage-1 images, and the view split.

Views are ``0 front, 1 right, 2 back (mirrored), 3 left (mirrored), 4 face close-up``. Official stage
outputs reproduced here (``SyncHuman/inference_OneStage.py``): colour view 0 is replaced by the
preprocessed input view, and the face close-up normal is pasted into the front normal's top-centre third.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..attention import fastest_backend
from ..errors import InputImageError
from ..io.registry import COMPONENTS
from ..model_source import ModelSource
from ..sparse.tensor import SparseTensor
from ..stage1.sampling import Stage1Conditioning

__all__ = [
    "BODY_VIEWS",
    "NUM_VIEWS",
    "STAGE_EVENTS",
    "Reconstruction",
    "Stage1Inputs",
    "Stage1Output",
    "Stage2Output",
    "component_attention",
    "face_region",
    "paste_face_normal",
    "replace_front_color",
    "split_views",
]

#: Names passed to ``on_stage_done``: after the conditioning encoders (CLIP, VAE encoder, stage-1
#: DINOv2 are no longer needed), after stage 1 (joint model, VAE, structure decoder can go), after stage 2.
STAGE_EVENTS = ("conditioning", "stage1", "stage2")

NUM_VIEWS = 5  # 4 body views + the face close-up
BODY_VIEWS = 4


@dataclass
class Stage1Inputs:
    """What stage 1 needs besides the models: the conditioning and the images it came from.

    Attributes:
        conditioning: prompt/image embeddings, image latents and DINOv2 tokens (no CFG duplication).
        views: ``[5, 3, S, S]`` float in [0, 1], the preprocessed multiview input (input image ×4 + face
            crop, white background, S = 768 officially); view 0 becomes colour view 0 of the output.
        condition_image: ``[518, 518, 3]`` uint8 tensor, the DINOv2 crop of the input (black background);
            stage 2 encodes it again, as the official stage 2 does.
    """

    conditioning: Stage1Conditioning
    views: torch.Tensor
    condition_image: torch.Tensor


@dataclass
class Stage1Output:
    """Result of stage 1 (everything stage 2 and the texture bake need).

    Attributes:
        color_views: ``[5, 3, S, S]`` float in [0, 1]; view 0 is the preprocessed input (official post-edit).
        normal_views: ``[5, 3, S, S]`` float in [0, 1]; the front view's top-centre third holds the
            bilinearly resized face normal (official post-edit).
        structure_latent: ``[1, 8, 16, 16, 16]`` float32 sparse-structure latent.
        coords: ``[N, 4]`` int32 ``(batch=0, x, y, z)`` occupied voxels of the 64³ grid.
        condition_image: ``[518, 518, 3]`` uint8 DINOv2 crop of the input (for stage 2).
        latents: ``[10, 4, S/8, S/8]`` the sampled multiview latents (normal views, then colour views).
    """

    color_views: torch.Tensor
    normal_views: torch.Tensor
    structure_latent: torch.Tensor
    coords: torch.Tensor
    condition_image: torch.Tensor
    latents: torch.Tensor | None = None


@dataclass
class Stage2Output:
    """Result of stage 2: the structured latent and what the decoders made of it.

    Attributes:
        slat: ``SparseTensor [N, 8]`` de-normalised structured latent on the stage-1 voxels.
        mesh: the mesh decoder's output for the (single) batch item (FlexiCubes mesh), or None if skipped.
        gaussians: the Gaussian decoder's output for the batch item, or None if skipped.
    """

    slat: SparseTensor
    mesh: Any = None
    gaussians: Any = None


@dataclass
class Reconstruction:
    stage1: Stage1Output
    stage2: Stage2Output
    extras: dict[str, Any] = field(default_factory=dict)


def face_region(size: int) -> tuple[slice, slice]:
    """Rows, cols of the face close-up inside a ``size``² front view: the top-centre third
    (official 768 px: rows 0:256, cols 256:512; the face crop box (256, 0, 512, 256))."""
    third = size // 3
    return slice(0, third), slice(third, 2 * third)


def paste_face_normal(normal_views: torch.Tensor) -> torch.Tensor:
    """Official stage-1 post-edit: the face close-up normal (view 4) is bilinearly resized to the face
    region (256² at 768 px, ``align_corners=False``) and replaces that region of the front normal (view 0).
    Returns a new tensor ``[5, 3, S, S]``."""
    out = normal_views.clone()
    rows, cols = face_region(out.shape[-1])
    side = rows.stop - rows.start
    face = F.interpolate(out[4:5].float(), size=(side, side), mode="bilinear", align_corners=False)
    out[0, :, rows, cols] = face[0].to(out.dtype)
    return out


def replace_front_color(color_views: torch.Tensor, input_views: torch.Tensor) -> torch.Tensor:
    """Official stage-1 post-edit: colour view 0 := the preprocessed input view 0 (the generated front
    colour is discarded). Returns a new tensor."""
    out = color_views.clone()
    out[0] = input_views[0].to(device=out.device, dtype=out.dtype)
    return out


def split_views(views: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``[4|5, 3, H, W]`` views -> ``(body views [4, 3, H, W], face close-up [3, H, W] or None)``: the one
    four-views-plus-face split (the export bakes the body views and blends the face in its window)."""
    if views is None:
        return None, None
    if views.ndim != 4 or views.shape[0] not in (BODY_VIEWS, NUM_VIEWS):
        raise InputImageError(f"views must be [4 or 5, 3, H, W] (4 body views + optional face), got {tuple(views.shape)}")
    return views[:BODY_VIEWS], (views[BODY_VIEWS] if views.shape[0] > BODY_VIEWS else None)


def component_attention(models: ModelSource, name: str) -> AbstractContextManager[str]:
    """The fastest exact attention backend for component ``name`` (:func:`~synchuman_core.attention.fastest_backend`):
    its compute device and dtype; the TRELLIS-style models (registry ``half="mixed"``) run their transformer
    torso in fp16, calls in other dtypes fall back to SDPA inside the dispatch. Every stage function enters
    it, so the nodes, the CLI, the batch runner and the benchmarks get the same backend."""
    device, dtype = models.device_dtype(name)
    if COMPONENTS[name].half == "mixed":
        dtype = torch.float16
    return fastest_backend(device, dtype)
