"""Stage 2 in the pieces the nodes expose (SLat sampling, multiview features, each decoder).

``synchuman_core.pipeline.run_stage2`` runs these in one call; the nodes need them one by one. Each function
here is a thin call into the core functions ``run_stage2`` itself uses (``stage2.sampling.sample_slat``,
``DINOv2.global_condition`` / ``multiview_features``, the decoders' ``forward``); nothing is re-implemented.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from synchuman_core.errors import ConfigError
from synchuman_core.samplers import SamplerSettings
from synchuman_core.stage2.sampling import SlatNormalization, sample_slat

log = logging.getLogger(__name__)

BODY_VIEWS = 4


def _device(module: Any) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def stage2_defaults(models: Any) -> tuple[SamplerSettings, SlatNormalization]:
    """Sampler settings and latent statistics from the checkpoint's ``SecondStage/pipeline.json``
    (official values if the file cannot be read)."""
    try:
        pipeline = models.settings("pipeline_stage2")
    except (ConfigError, FileNotFoundError, KeyError) as e:
        log.info("stage-2 pipeline.json not readable (%s); using the official values", e)
        return SamplerSettings.stage2(), SlatNormalization()
    return SamplerSettings.from_pipeline_json(pipeline), SlatNormalization.from_pipeline_json(pipeline)


def dino_condition(models: Any, condition_image: Any) -> torch.Tensor:
    """``[1, L, C]`` float32 global DINOv2 condition of the 518x518 crop (stage 2 encodes it in fp32 output)."""
    return models.dinov2.global_condition(condition_image, out_dtype=torch.float32)


def sample_structured_latent(models: Any, coords: torch.Tensor, cond: torch.Tensor, settings: SamplerSettings,
                             generator: torch.Generator, callback=None, *,
                             normalization: SlatNormalization | None = None):
    """The de-normalised SLat ``SparseTensor [N, 8]`` on ``coords`` (see ``sample_slat``)."""
    flow = models.slat_flow
    dev = _device(flow)
    return sample_slat(flow, coords.to(dev), cond.to(dev), settings, generator, normalization=normalization,
                       callback=callback, in_channels=getattr(getattr(flow, "config", None), "in_channels", 8))


def multiview_features(models: Any, views: torch.Tensor) -> torch.Tensor:
    """``[1, 4, 64, 64, C]`` DINOv2 features of the four body views ``[>=4, 3, H, W]`` (face excluded)."""
    return models.dinov2.multiview_features(views[:BODY_VIEWS])[None]


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, (list, tuple)) else out


def decode_mesh(models: Any, slat: Any, mv_color: torch.Tensor, mv_normal: torch.Tensor) -> Any:
    """The mesh decoder's FlexiCubes mesh (``vertices``, ``faces``, ``vertex_attrs``) of the batch item."""
    dec = models.mesh_decoder
    return _first(dec(slat.to(_device(dec)), mv_color, mv_normal))


def decode_gaussians(models: Any, slat: Any, mv_color: torch.Tensor, mv_normal: torch.Tensor) -> Any:
    """The Gaussian decoder's :class:`~synchuman_core.stage2.gaussians.Gaussians` of the batch item."""
    dec = models.gs_decoder
    return _first(dec(slat.to(_device(dec)), mv_color, mv_normal))
