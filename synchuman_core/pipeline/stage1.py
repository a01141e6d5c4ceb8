"""Stage 1 as public steps: input framing, conditioning, joint 2D-3D sampling, decoding with the official
post-edits and the occupancy of the 3D latent (``SyncHuman/inference_OneStage.py``)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, InputImageError
from ..model_source import ModelSource
from ..samplers import Callback, SamplerSettings, make_generator
from ..stage1.sampling import JointLatents, Stage1Conditioning
from ..stage1.sampling import sample_joint as _sample_joint_model
from .data import NUM_VIEWS, Stage1Inputs, Stage1Output, component_attention, paste_face_normal, replace_front_color

__all__ = [
    "decode_joint",
    "fit_to_models",
    "multiview_size",
    "prepare_conditioning",
    "preprocess",
    "run_stage1",
    "sample_joint",
    "view_prompt_embeds",
]

logger = logging.getLogger(__name__)


def multiview_size(models: ModelSource) -> int:
    """Side in pixels of the multiview images the loaded models expect: UNet ``sample_size`` times the
    VAE down-sampling factor (768 for the released checkpoint)."""
    from ..preprocess import MV_SIZE

    joint, vae = models.peek("joint"), models.peek("vae")
    sample_size = getattr(getattr(getattr(joint, "config", None), "unet", None), "sample_size", None)
    channels = getattr(getattr(vae, "config", None), "block_out_channels", None)
    if sample_size is None or channels is None:
        return MV_SIZE
    return int(sample_size) * 2 ** (len(channels) - 1)


def fit_to_models(models: ModelSource, prepared: Any) -> Any:
    """A preprocessing result (:class:`synchuman_core.preprocess.PreparedInput`) framed at the view size
    the models expect: itself at the official 768 px; models built for another latent size (tiny test
    checkpoints) get the same framing at their size, the face box scaled to the top-centre third."""
    from .. import preprocess as pp

    size = multiview_size(models)
    if prepared.mv_views.shape[-1] == size:
        return prepared
    logger.info("re-framing the multiview input at %d px for these models", size)
    third = size // 3
    out = copy.copy(prepared)
    out.mv_views = pp.multiview_input(prepared.rgba, size=size, face_box=(third, 0, 2 * third, third))
    return out


def preprocess(models: ModelSource, image: Any, mask: Any = None, *, mask_is_inverted: bool = False) -> Any:
    """:func:`synchuman_core.preprocess.prepare_input` framed for the loaded models (:func:`fit_to_models`)."""
    from .. import preprocess as pp

    return fit_to_models(models, pp.prepare_input(image, mask, mask_is_inverted=mask_is_inverted))


def view_prompt_embeds(models: ModelSource) -> torch.Tensor:
    """``[10, 77, D]`` view prompts: normal views (front, right, back, left, face), then colour views."""
    src = models.prompt_embeds()
    if isinstance(src, Mapping):
        src = torch.cat([src["normal"], src["color"]], dim=0)
    if not isinstance(src, torch.Tensor) or src.ndim != 3 or src.shape[0] != 2 * NUM_VIEWS:
        raise ConfigError(f"view-prompt embeddings must be [10, 77, D] (normal then colour), got {getattr(src, 'shape', src)}")
    return src


def _views_and_condition_image(prepared: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(views [5, 3, S, S] float, condition_image [518, 518, 3] uint8)`` of a preprocessing result."""
    views = getattr(prepared, "mv_views", None)
    cond_img = getattr(prepared, "dino_image", None)
    if views is None or cond_img is None:
        raise InputImageError(
            "prepare_conditioning needs the result of synchuman_core.preprocess.prepare_input (multiview views "
            f"and the DINOv2 crop); got {type(prepared).__name__}"
        )
    views = torch.as_tensor(views)
    cond_img = torch.as_tensor(np.ascontiguousarray(cond_img)) if isinstance(cond_img, np.ndarray) else cond_img
    if views.ndim != 4 or tuple(views.shape[:2]) != (NUM_VIEWS, 3):
        raise InputImageError(f"preprocessed views must be [5, 3, S, S], got {tuple(views.shape)}")
    return views.float(), cond_img


def _check_view_size(models: ModelSource, size: int) -> None:
    """The sync bridges were trained at one latent size: the views must be ``sample_size * vae factor``."""
    expected = multiview_size(models)
    if size != expected:
        raise InputImageError(
            f"the multiview input is {size}x{size} px but these models need {expected}x{expected}; "
            "frame it with synchuman_core.pipeline.fit_to_models(models, prepared)"
        )


@torch.no_grad()
def prepare_conditioning(
    models: ModelSource,
    prepared: Any,
    *,
    encode_slice_size: int = 2,
    on_stage_done: Callable[[str], None] | None = None,
) -> Stage1Inputs:
    """Encode the preprocessed input for stage 1.

    * prompts: the fixed view-prompt embeddings ``[10, 77, D]``;
    * class labels: CLIP ``image_embeds`` of the 10 views ⊕ noise-level-0 embedding ``[10, 2048]``;
    * image latents: VAE ``mode() * 0.18215`` of the 10 views ``[10, 4, S/8, S/8]``;
    * 3D condition: DINOv2 ``x_prenorm`` + non-affine LN of the 518² crop ``[1, 1374, 1024]``.

    The 10 conditioning images are the 5 views twice (normal half, colour half), as official.
    ``encode_slice_size``: images per VAE encode call (memory vs speed; same result). Each encoder is
    fetched right before it runs and the joint model is not touched (only its device/dtype are read),
    so a residency policy can keep one model at a time on the GPU.
    """
    from ..encoders.clip import ClipImageEmbedder
    from ..encoders.vae import vae_encode

    views, cond_img = _views_and_condition_image(prepared)
    j_device, j_dtype = models.device_dtype("joint")
    images = torch.cat([views, views], dim=0)  # [10, 3, S, S]: normal half, colour half

    _check_view_size(models, views.shape[-1])
    prompts = view_prompt_embeds(models)
    with component_attention(models, "image_encoder"):
        image_embeds = ClipImageEmbedder(models.get("image_encoder"))(images)
    with component_attention(models, "vae"):
        image_latents = vae_encode(models.get("vae"), images, slice_size=encode_slice_size)
    with component_attention(models, "dinov2"):
        structure_cond = models.get("dinov2").global_condition(cond_img, out_dtype=models.device_dtype("dinov2")[1])
    cond = Stage1Conditioning(
        prompt_embeds=prompts,
        image_embeds=image_embeds,
        image_latents=image_latents,
        structure_cond=structure_cond,
    ).to(device=j_device, dtype=j_dtype)
    if on_stage_done is not None:
        on_stage_done("conditioning")
    return Stage1Inputs(conditioning=cond, views=views, condition_image=cond_img)


@torch.no_grad()
def sample_joint(
    models: ModelSource,
    inputs: Stage1Inputs,
    settings: SamplerSettings | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    *,
    cfg_batching: str = "batched",
) -> JointLatents:
    """Joint 2D-3D sampling: the multiview latents ``[10, 4, S/8, S/8]`` and the structure latent
    ``[1, 8, 16, 16, 16]``. ``settings`` default: the official stage 1 (Euler 50, CFG 3); ``generator``
    default: seed 43 (official)."""
    generator = generator if generator is not None else make_generator(43)
    with component_attention(models, "joint"):
        return _sample_joint_model(models.get("joint"), inputs.conditioning, settings or SamplerSettings.stage1(),
                                   generator, callback=callback, cfg_batching=cfg_batching)


@torch.no_grad()
def decode_joint(
    models: ModelSource,
    inputs: Stage1Inputs,
    latents: JointLatents,
    *,
    decode_slice_size: int = 1,
    decode_tile_size: int | None = None,
    output_device: torch.device | str | None = None,
) -> Stage1Output:
    """VAE decode of the views with the official post-edits, occupancy of the 3D latent. ``output_device``
    (default: CPU) receives the images and coordinates."""
    from ..encoders.vae import vae_decode
    from ..stage1.structure_decoder import occupancy_coords

    out_device = torch.device(output_device) if output_device is not None else torch.device("cpu")
    # 2D: decode [normal(5) | colour(5)] -> [10, 3, S, S] in [0, 1]
    with component_attention(models, "vae"):
        images = vae_decode(models.get("vae"), latents.latents, slice_size=decode_slice_size,
                            tile_size=decode_tile_size, out_device=out_device)
    normals, colors = images[:NUM_VIEWS], images[NUM_VIEWS:]
    colors = replace_front_color(colors, inputs.views)
    normals = paste_face_normal(normals)

    # 3D: occupancy of the 64³ grid
    device, _ = models.device_dtype("structure_decoder")
    logits = models.get("structure_decoder")(latents.structure_latent.to(device))
    coords = occupancy_coords(logits).to(out_device)
    if coords.shape[0] == 0:
        logger.warning("stage 1 produced an empty occupancy grid; stage 2 cannot run on it")
    return Stage1Output(
        color_views=colors,
        normal_views=normals,
        structure_latent=latents.structure_latent.to(out_device),
        coords=coords,
        condition_image=inputs.condition_image,
        latents=latents.latents.to(out_device),
    )


@torch.no_grad()
def run_stage1(
    models: ModelSource,
    inputs: Stage1Inputs,
    settings: SamplerSettings | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    *,
    cfg_batching: str = "batched",
    on_stage_done: Callable[[str], None] | None = None,
    decode_slice_size: int = 1,
    decode_tile_size: int | None = None,
    output_device: torch.device | str | None = None,
) -> Stage1Output:
    """:func:`sample_joint` then :func:`decode_joint`; ``on_stage_done("stage1")`` afterwards."""
    lat = sample_joint(models, inputs, settings, generator, callback, cfg_batching=cfg_batching)
    out = decode_joint(models, inputs, lat, decode_slice_size=decode_slice_size, decode_tile_size=decode_tile_size,
                       output_device=output_device)
    if on_stage_done is not None:
        on_stage_done("stage1")
    return out


