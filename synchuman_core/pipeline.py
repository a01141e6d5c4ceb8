"""The whole SyncHuman chain as plain functions with typed stage outputs (tensors in memory, no files).

::

    pre   = preprocess(models, rgba)                                  # synchuman_core.preprocess framing
    inp   = prepare_conditioning(models, pre)                         # CLIP, VAE, DINOv2, view prompts
    out1  = run_stage1(models, inp, settings1, generator, callback)  # joint sampling, VAE decode,
                                                                     # post-edits, occupancy
    out2  = run_stage2(models, out1, settings2, generator, callback) # SLat sampling, MV features,
                                                                     # mesh + Gaussian decoders
    # or all at once: reconstruct(models, rgba, seed=43)

Memory: ``on_stage_done(event)`` is called with "conditioning", "stage1" and "stage2" (:data:`STAGE_EVENTS`)
so callers can drop or offload the models a finished part used (e.g. the joint model before stage 2).

``models`` is anything with the component attributes of :class:`synchuman_core.io.loading.SyncHumanModels`
(``joint``, ``structure_decoder``, ``vae``, ``image_encoder``, ``dinov2``, ``slat_flow``, ``mesh_decoder``,
``gs_decoder``) plus the view-prompt embeddings (``models.prompt_embeds``: a ``[10, 77, D]`` tensor, a
``{"normal", "color"}`` dict, or a method returning one; otherwise they are loaded from ``models.folder``).
A component is only touched by the function that needs it, so callers may load lazily and drop stage-1
models before stage 2 (``on_stage_done``).

Official stage outputs reproduced here (ARCHITECTURE §1.1 step 11-12): colour view 0 is replaced by the
preprocessed input view, and the face close-up normal is pasted into the front normal's top-centre third
(:func:`paste_face_normal`). Views are ``0 front, 1 right, 2 back (mirrored), 3 left (mirrored), 4 face``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .attention import fastest_backend
from .errors import ConfigError, InputImageError
from .samplers import Callback, SamplerSettings, make_generator
from .sparse.tensor import SparseTensor
from .stage1.sampling import JointLatents, Stage1Conditioning, sample_joint
from .stage2.sampling import SlatNormalization, sample_slat

__all__ = [
    "STAGE_EVENTS",
    "Reconstruction",
    "Stage1Inputs",
    "Stage1Output",
    "Stage2Output",
    "multiview_size",
    "paste_face_normal",
    "prepare_conditioning",
    "preprocess",
    "reconstruct",
    "replace_front_color",
    "run_stage1",
    "run_stage2",
]

logger = logging.getLogger(__name__)

#: Names passed to ``on_stage_done``: after the conditioning encoders (CLIP, VAE encoder, stage-1
#: DINOv2 are no longer needed), after stage 1 (joint model, VAE, structure decoder can go), after stage 2.
STAGE_EVENTS = ("conditioning", "stage1", "stage2")

NUM_VIEWS = 5  # 4 body views + the face close-up
BODY_VIEWS = 4


# ---------------------------------------------------------------------------------------------------
# Typed stage data
# ---------------------------------------------------------------------------------------------------


@dataclass
class Stage1Inputs:
    """What stage 1 needs besides the models: the conditioning and the images it came from.

    Attributes:
        conditioning: prompt/image embeddings, image latents and DINOv2 tokens (no CFG duplication).
        views: ``[5, 3, S, S]`` float in [0, 1], the preprocessed multiview input (input image ×4 + face
            crop, white background, S = 768 officially); view 0 becomes colour view 0 of the output.
        condition_image: ``[518, 518, 3]`` uint8 tensor, the DINOv2 crop of the input (black background); stage 2
            encodes it again with its own DINOv2 dtype, as the official stage 2 does.
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


# ---------------------------------------------------------------------------------------------------
# Official post-edits of the stage-1 images (named, because they are kept quirks)
# ---------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------
# Component access (duck-typed on SyncHumanModels)
# ---------------------------------------------------------------------------------------------------


def _component(models: Any, name: str) -> Any:
    try:
        return getattr(models, name)
    except AttributeError:
        raise ConfigError(f"the models object has no component {name!r} needed here") from None


def _peek(models: Any, name: str) -> Any:
    """A component for reading its config or dtype only: ``models.peek(name)`` when the models object
    manages residency (:class:`synchuman_core.memory.ManagedModels`: no move to the GPU), else the
    attribute (None if absent)."""
    peek = getattr(models, "peek", None)
    if callable(peek):
        return peek(name)
    return getattr(models, name, None)


def _target_device_dtype(models: Any, name: str) -> tuple[torch.device, torch.dtype]:
    """``(device, dtype)`` component ``name`` computes with, without placing it on the device when the
    models object can tell (``models.device_dtype(name)``)."""
    fn = getattr(models, "device_dtype", None)
    if callable(fn):
        return fn(name)
    return _module_device_dtype(_component(models, name))


def _module_device_dtype(module: Any, default_dtype: torch.dtype = torch.float32) -> tuple[torch.device, torch.dtype]:
    if isinstance(module, torch.nn.Module):
        for p in module.parameters():
            if p.is_floating_point():
                return p.device, p.dtype
    return torch.device("cpu"), default_dtype


def view_prompt_embeds(models: Any) -> torch.Tensor:
    """``[10, 77, D]`` view prompts: normal views (front, right, back, left, face), then colour views."""
    src = getattr(models, "prompt_embeds", None)
    if callable(src):
        src = src()
    if src is None:
        folder = getattr(models, "folder", None)
        if folder is None:
            raise ConfigError("no view-prompt embeddings: give models.prompt_embeds or a model folder")
        from .io.prompt_cache import load_prompt_embeds

        src = load_prompt_embeds(folder)
    if isinstance(src, Mapping):
        src = torch.cat([src["normal"], src["color"]], dim=0)
    if not isinstance(src, torch.Tensor) or src.ndim != 3 or src.shape[0] != 2 * NUM_VIEWS:
        raise ConfigError(f"view-prompt embeddings must be [10, 77, D] (normal then colour), got {getattr(src, 'shape', src)}")
    return src


def _dino_condition(dinov2: Any, image: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``[1, L, C]`` global DINOv2 condition of the 518² crop."""
    return dinov2.global_condition(image, out_dtype=dtype or torch.float32)


# ---------------------------------------------------------------------------------------------------
# Stage 1
# ---------------------------------------------------------------------------------------------------


def _views_and_condition_image(preprocessed: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(views [5, 3, S, S] float, condition_image [518, 518, 3] uint8)`` of a preprocessing result
    (:class:`synchuman_core.preprocess.PreparedInput`: ``mv_views``, ``dino_image``)."""
    views = getattr(preprocessed, "mv_views", None)
    cond_img = getattr(preprocessed, "dino_image", None)
    if views is None or cond_img is None:
        raise InputImageError(
            "prepare_conditioning needs the result of synchuman_core.preprocess.prepare_input (multiview views "
            f"and the DINOv2 crop); got {type(preprocessed).__name__}"
        )
    views = torch.as_tensor(views)
    cond_img = torch.as_tensor(np.ascontiguousarray(cond_img)) if isinstance(cond_img, np.ndarray) else cond_img
    if views.ndim != 4 or tuple(views.shape[:2]) != (NUM_VIEWS, 3):
        raise InputImageError(f"preprocessed views must be [5, 3, S, S], got {tuple(views.shape)}")
    return views.float(), cond_img


def multiview_size(models: Any) -> int:
    """Side in pixels of the multiview images the loaded models expect: UNet ``sample_size`` times the
    VAE down-sampling factor (768 for the released checkpoint)."""
    from .preprocess import MV_SIZE

    joint, vae = _peek(models, "joint"), _peek(models, "vae")
    sample_size = getattr(getattr(getattr(joint, "config", None), "unet", None), "sample_size", None)
    channels = getattr(getattr(vae, "config", None), "block_out_channels", None)
    if sample_size is None or channels is None:
        return MV_SIZE
    return int(sample_size) * 2 ** (len(channels) - 1)


def preprocess(models: Any, image: Any, mask: Any = None, *, mask_is_inverted: bool = False) -> Any:
    """:func:`synchuman_core.preprocess.prepare_input` framed for the loaded models.

    The released models take 768² views (the official framing, face box (256, 0, 512, 256)); models built
    for another latent size (tiny test checkpoints) get the same framing at their size, the face box
    scaled to the top-centre third.
    """
    from . import preprocess as pp

    size = multiview_size(models)
    prepared = pp.prepare_input(image, mask, mask_is_inverted=mask_is_inverted)
    if size != pp.MV_SIZE:
        third = size // 3
        prepared.mv_views = pp.multiview_input(prepared.rgba, size=size, face_box=(third, 0, 2 * third, third))
    return prepared


@torch.no_grad()
def prepare_conditioning(
    models: Any,
    preprocessed: Any,
    *,
    on_stage_done: Callable[[str], None] | None = None,
    encode_slice_size: int = 2,
) -> Stage1Inputs:
    """Encode the preprocessed input for stage 1 (ARCHITECTURE §1.1 steps 4-6, 8).

    * prompts: the fixed view-prompt embeddings ``[10, 77, D]``;
    * class labels: CLIP ``image_embeds`` of the 10 views ⊕ noise-level-0 embedding ``[10, 2048]``;
    * image latents: VAE ``mode() * 0.18215`` of the 10 views ``[10, 4, S/8, S/8]``;
    * 3D condition: DINOv2 ``x_prenorm`` + non-affine LN of the 518² crop ``[1, 1374, 1024]``.

    The 10 conditioning images are the 5 views twice (normal half, colour half), as official.
    ``encode_slice_size``: images per VAE encode call (memory vs speed; same result).
    Each encoder is fetched right before it runs and the joint model is not touched (only its
    device/dtype are read), so a residency manager can keep one model at a time on the GPU.
    """
    from .encoders.clip import ClipImageEmbedder
    from .encoders.vae import vae_encode

    views, cond_img = _views_and_condition_image(preprocessed)
    j_device, j_dtype = _target_device_dtype(models, "joint")
    images = torch.cat([views, views], dim=0)  # [10, 3, S, S]: normal half, colour half

    _check_view_size(models, views.shape[-1])
    prompts = view_prompt_embeds(models)
    image_embeds = ClipImageEmbedder(_component(models, "image_encoder"))(images)
    image_latents = vae_encode(_component(models, "vae"), images, slice_size=encode_slice_size)
    dino = _component(models, "dinov2")
    structure_cond = _dino_condition(dino, cond_img, _module_device_dtype(dino)[1])
    cond = Stage1Conditioning(
        prompt_embeds=prompts,
        image_embeds=image_embeds,
        image_latents=image_latents,
        structure_cond=structure_cond,
    ).to(device=j_device, dtype=j_dtype)
    if on_stage_done is not None:
        on_stage_done("conditioning")
    return Stage1Inputs(conditioning=cond, views=views, condition_image=cond_img)


def _check_view_size(models: Any, size: int) -> None:
    """The sync bridges were trained at one latent size: the views must be ``sample_size * vae factor``."""
    expected = multiview_size(models)
    if size != expected:
        raise InputImageError(
            f"the multiview input is {size}x{size} px but these models need {expected}x{expected}; "
            "preprocess with synchuman_core.pipeline.preprocess(models, image)"
        )


@torch.no_grad()
def run_stage1(
    models: Any,
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
    """Joint 2D-3D sampling, VAE decode with the official post-edits, occupancy of the 3D latent.

    ``generator`` defaults to the official seed 43. ``output_device`` (default: CPU) receives the
    images and coordinates.
    """
    from .encoders.vae import vae_decode
    from .stage1.structure_decoder import occupancy_coords

    generator = generator if generator is not None else make_generator(43)
    out_device = torch.device(output_device) if output_device is not None else torch.device("cpu")
    joint = _component(models, "joint")
    with fastest_backend(*_module_device_dtype(joint)):
        lat: JointLatents = sample_joint(
            joint, inputs.conditioning, settings or SamplerSettings.stage1(), generator,
            callback=callback, cfg_batching=cfg_batching,
        )
    del joint  # a residency manager may drop it now

    # 2D: decode [normal(5) | colour(5)] -> [10, 3, S, S] in [0, 1]
    images = vae_decode(_component(models, "vae"), lat.latents, slice_size=decode_slice_size,
                        tile_size=decode_tile_size, out_device=out_device)
    normals, colors = images[:NUM_VIEWS], images[NUM_VIEWS:]
    colors = replace_front_color(colors, inputs.views)
    normals = paste_face_normal(normals)

    # 3D: occupancy of the 64³ grid
    decoder = _component(models, "structure_decoder")
    d_device, _ = _module_device_dtype(decoder)
    logits = decoder(lat.structure_latent.to(d_device))
    coords = occupancy_coords(logits).to(out_device)
    if coords.shape[0] == 0:
        logger.warning("stage 1 produced an empty occupancy grid; stage 2 cannot run on it")
    out = Stage1Output(
        color_views=colors,
        normal_views=normals,
        structure_latent=lat.structure_latent.to(out_device),
        coords=coords,
        condition_image=inputs.condition_image,
        latents=lat.latents.to(out_device),
    )
    if on_stage_done is not None:
        on_stage_done("stage1")
    return out


# ---------------------------------------------------------------------------------------------------
# Stage 2
# ---------------------------------------------------------------------------------------------------


def _stage2_settings(models: Any) -> tuple[SamplerSettings, SlatNormalization]:
    """Settings from ``SecondStage/pipeline.json`` when the models object can read it, else official."""
    reader = getattr(models, "settings", None)
    if callable(reader):
        try:
            pipeline = reader("pipeline_stage2")
        except (ConfigError, FileNotFoundError, KeyError) as e:
            logger.info("stage-2 pipeline.json not readable (%s); using the official values", e)
        else:
            return SamplerSettings.from_pipeline_json(pipeline), SlatNormalization.from_pipeline_json(pipeline)
    return SamplerSettings.stage2(), SlatNormalization()


@torch.no_grad()
def run_stage2(
    models: Any,
    stage1: Stage1Output,
    settings: SamplerSettings | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    *,
    decode_mesh: bool = True,
    decode_gaussians: bool = True,
    on_stage_done: Callable[[str], None] | None = None,
) -> Stage2Output:
    """SLat sampling on the stage-1 voxels, multiview DINOv2 features, mesh and Gaussian decoders.

    ``settings`` default: the model folder's ``pipeline.json`` (official: Euler 25, TRELLIS CFG 5 on
    [0.5, 1], rescale 3). ``generator`` default: seed 43 (the official stage 2 is unseeded).
    """
    if stage1.coords.shape[0] == 0:
        raise InputImageError(
            "stage 1 found no occupied voxels, so there is nothing to reconstruct; try another seed or "
            "check that the input shows a full person on a transparent background"
        )
    folder_settings, normalization = _stage2_settings(models)
    settings = settings or folder_settings
    generator = generator if generator is not None else make_generator(43)

    # each component is fetched right before it runs (a residency manager may move the previous one off)
    cond = _dino_condition(_component(models, "dinov2"), stage1.condition_image, torch.float32)
    flow = _component(models, "slat_flow")
    f_device, _ = _module_device_dtype(flow)
    # the TRELLIS-style models run their transformer torso in fp16 on a GPU (official dtypes); calls in
    # other dtypes fall back to SDPA inside the dispatch
    with fastest_backend(f_device, torch.float16):
        slat = sample_slat(flow, stage1.coords.to(f_device), cond.to(f_device), settings, generator,
                           normalization=normalization, callback=callback,
                           in_channels=getattr(getattr(flow, "config", None), "in_channels", 8))

        mesh = gaussians = None
        del flow
        if decode_mesh or decode_gaussians:
            # multiview features of the 4 body views (face excluded): [1, 4, 64, 64, 4096] each
            dino = _component(models, "dinov2")
            mv_color = dino.multiview_features(stage1.color_views[:BODY_VIEWS])[None]
            mv_normal = dino.multiview_features(stage1.normal_views[:BODY_VIEWS])[None]
            if decode_gaussians:
                dec = _component(models, "gs_decoder")
                gaussians = _first(dec(_to_module(slat, dec), mv_color, mv_normal))
                del dec
            if decode_mesh:
                dec = _component(models, "mesh_decoder")
                mesh = _first(dec(_to_module(slat, dec), mv_color, mv_normal))
    out = Stage2Output(slat=slat, mesh=mesh, gaussians=gaussians)
    if on_stage_done is not None:
        on_stage_done("stage2")
    return out


def _to_module(x: SparseTensor, module: Any) -> SparseTensor:
    device, _ = _module_device_dtype(module)
    return x if x.device == device else x.to(device)


def _first(out: Any) -> Any:
    """Decoders return one result per batch item (official: a list); stages run batch size 1."""
    if isinstance(out, (list, tuple)):
        return out[0]
    return out


# ---------------------------------------------------------------------------------------------------
# Everything
# ---------------------------------------------------------------------------------------------------


@torch.no_grad()
def reconstruct(
    models: Any,
    image: Any,
    mask: Any = None,
    *,
    seed: int = 43,
    stage1_settings: SamplerSettings | None = None,
    stage2_settings: SamplerSettings | None = None,
    callback: Callable[[str, int, int], None] | None = None,
    on_stage_done: Callable[[str], None] | None = None,
    decode_mesh: bool = True,
    decode_gaussians: bool = True,
) -> Reconstruction:
    """Input image (RGBA cut-out, or image + person mask) -> both stage outputs.

    One generator seeded with ``seed`` draws the stage-1 noise (3D first, as official) and then the
    stage-2 noise. ``callback(stage, step, total)`` reports sampling progress (``stage`` = "stage1" or
    "stage2") and may raise to interrupt.
    """
    pre = preprocess(models, image, mask)
    gen = make_generator(seed)
    cb1 = (lambda i, n, x: callback("stage1", i, n)) if callback else None
    cb2 = (lambda i, n, x: callback("stage2", i, n)) if callback else None
    inputs = prepare_conditioning(models, pre, on_stage_done=on_stage_done)
    s1 = run_stage1(models, inputs, stage1_settings, gen, cb1, on_stage_done=on_stage_done)
    s2 = run_stage2(models, s1, stage2_settings, gen, cb2, on_stage_done=on_stage_done,
                    decode_mesh=decode_mesh, decode_gaussians=decode_gaussians)
    return Reconstruction(stage1=s1, stage2=s2, extras={"rgba": pre.rgba})
