"""Stage 2 as public steps: structured-latent sampling on the stage-1 voxels, multiview DINOv2 features,
the mesh and Gaussian decoders (``SyncHuman/inference_SecondStage.py``, TRELLIS ``TrellisImageTo3DPipeline``:
``sample_slat``, ``decode_slat``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from ..errors import ConfigError, InputImageError
from ..model_source import ModelSource
from ..samplers import Callback, SamplerSettings, make_generator
from ..sparse.tensor import SparseTensor
from ..stage2.sampling import SlatNormalization, sample_slat
from .data import BODY_VIEWS, Stage1Output, Stage2Output, component_attention

__all__ = [
    "decode_gaussians",
    "decode_mesh",
    "multiview_features",
    "run_stage2",
    "sample_structured_latent",
    "stage2_defaults",
]

logger = logging.getLogger(__name__)


def stage2_defaults(models: ModelSource) -> tuple[SamplerSettings, SlatNormalization]:
    """Sampler settings and latent statistics from the checkpoint's ``SecondStage/pipeline.json``
    (official values when the file cannot be read)."""
    try:
        pipeline = models.settings("pipeline_stage2")
    except (ConfigError, FileNotFoundError, KeyError) as e:
        logger.info("stage-2 pipeline.json not readable (%s); using the official values", e)
        return SamplerSettings.stage2(), SlatNormalization()
    return SamplerSettings.from_pipeline_json(pipeline), SlatNormalization.from_pipeline_json(pipeline)


@torch.no_grad()
def sample_structured_latent(
    models: ModelSource,
    stage1: Stage1Output,
    settings: SamplerSettings | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> SparseTensor:
    """The de-normalised structured latent ``SparseTensor [N, 8]`` on the stage-1 voxels, conditioned on
    the DINOv2 encoding of the stage-1 crop (float32, as the official stage 2).

    ``settings`` default: the model folder's ``pipeline.json`` (official: Euler 25, TRELLIS CFG 5 on
    [0.5, 1], rescale 3). ``generator`` default: seed 43 (the official stage 2 is unseeded).
    """
    if stage1.coords.shape[0] == 0:
        raise InputImageError(
            "stage 1 found no occupied voxels, so there is nothing to reconstruct; try another seed or "
            "check that the input shows a full person on a transparent background"
        )
    default, normalization = stage2_defaults(models)
    settings = settings or default
    generator = generator if generator is not None else make_generator(43)
    with component_attention(models, "dinov2"):
        cond = models.get("dinov2").global_condition(stage1.condition_image, out_dtype=torch.float32)
    device, _ = models.device_dtype("slat_flow")
    with component_attention(models, "slat_flow"):
        flow = models.get("slat_flow")
        return sample_slat(flow, stage1.coords.to(device), cond.to(device), settings, generator,
                           normalization=normalization, callback=callback,
                           in_channels=getattr(getattr(flow, "config", None), "in_channels", 8))


@torch.no_grad()
def multiview_features(models: ModelSource, views: torch.Tensor) -> torch.Tensor:
    """``[1, 4, 64, 64, C]`` DINOv2 features of the four body views of ``views [>=4, 3, H, W]`` (the face
    close-up, view 4, is not used by the decoders)."""
    if views.ndim != 4 or views.shape[0] < BODY_VIEWS:
        raise InputImageError(f"multiview features need at least the 4 body views [4, 3, H, W], got {tuple(views.shape)}")
    with component_attention(models, "dinov2"):
        return models.get("dinov2").multiview_features(views[:BODY_VIEWS])[None]


def _decode(models: ModelSource, name: str, slat: SparseTensor, mv_color: torch.Tensor, mv_normal: torch.Tensor) -> Any:
    device, _ = models.device_dtype(name)
    with component_attention(models, name):
        out = models.get(name)(slat if slat.device == device else slat.to(device), mv_color, mv_normal)
    return out[0] if isinstance(out, (list, tuple)) else out  # one result per batch item; batch size 1


@torch.no_grad()
def decode_mesh(models: ModelSource, slat: SparseTensor, mv_color: torch.Tensor, mv_normal: torch.Tensor) -> Any:
    """The mesh decoder's FlexiCubes mesh (``vertices``, ``faces``, ``vertex_attrs``) of the batch item."""
    return _decode(models, "mesh_decoder", slat, mv_color, mv_normal)


@torch.no_grad()
def decode_gaussians(models: ModelSource, slat: SparseTensor, mv_color: torch.Tensor, mv_normal: torch.Tensor) -> Any:
    """The Gaussian decoder's :class:`~synchuman_core.stage2.gaussians.Gaussians` of the batch item."""
    return _decode(models, "gs_decoder", slat, mv_color, mv_normal)


@torch.no_grad()
def run_stage2(
    models: ModelSource,
    stage1: Stage1Output,
    settings: SamplerSettings | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    *,
    decode_mesh: bool = True,
    decode_gaussians: bool = True,
    on_stage_done: Callable[[str], None] | None = None,
) -> Stage2Output:
    """:func:`sample_structured_latent`, :func:`multiview_features` of the colour and normal views, then the
    Gaussian and mesh decoders; ``on_stage_done("stage2")`` afterwards."""
    slat = sample_structured_latent(models, stage1, settings, generator, callback)
    mesh = gaussians = None
    if decode_mesh or decode_gaussians:
        mv_color = multiview_features(models, stage1.color_views)
        mv_normal = multiview_features(models, stage1.normal_views)
        if decode_gaussians:
            gaussians = _decode(models, "gs_decoder", slat, mv_color, mv_normal)
        if decode_mesh:
            mesh = _decode(models, "mesh_decoder", slat, mv_color, mv_normal)
    out = Stage2Output(slat=slat, mesh=mesh, gaussians=gaussians)
    if on_stage_done is not None:
        on_stage_done("stage2")
    return out
