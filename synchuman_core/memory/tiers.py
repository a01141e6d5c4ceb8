"""Memory tiers: one user-facing setting for how much GPU memory a SyncHuman run may use, and the ONE
dtype plan (which dtype each component is built in for a precision).

A :class:`MemoryTier` bundles every memory/speed trade-off of the pipeline:

* ``precision``: ``auto`` (fp16 on CUDA, fp32 elsewhere), ``fp16``, ``bf16`` or ``fp32``; what it means
  per component is :func:`dtype_plan`, read from the component table (``ComponentSpec.half``);
* ``cfg_batching``: the stage-1 CFG halves in one UNet batch of 20 (``"batched"``) or as two calls of
  10 (``"sequential"``: same result, about half the activation memory). The two *domains* (normal,
  colour) and the five views can NOT be split further: ``attn1`` attends jointly over the normal and
  colour tokens of the same view, ``attn_mv`` over the four body views, the face close-up is blended
  into the front view, and the sync bridges read all views (see :mod:`synchuman_core.stage1.joint`).
  10 images is the smallest valid stage-1 batch;
* VAE slicing (``vae_encode_slice``/``vae_decode_slice`` images per call) and tiling
  (``vae_tile_size`` pixels; slightly different pixels at tile seams);
* ``attention_query_chunk``: query tokens per attention kernel call
  (:func:`synchuman_core.attention.query_chunk`). With SDPA's flash / memory-efficient kernels (CUDA,
  fp16/bf16) attention memory is already linear in the sequence length and chunking only costs a
  little speed; it matters where a backend materialises the scores (math fallback, MPS, old GPUs):
  stage-1 ``attn1`` at 96² pairs 18,432 tokens, i.e. 34 GB of scores per CFG half;
* ``residency``: which models sit on the GPU (:mod:`.residency`). ``"resident"``: all, loaded once and
  kept (fastest for queued prompts); ``"offload"``: each component leaves the GPU after the stage events
  its registry entry names (``offload_after``); ``"sequential"``: one model on the GPU at a time
  (``drop_after_use``: freed entirely and re-read from disk next time, for hosts short of RAM).

Presets (:data:`TIERS`): ``"high"`` (half precision, batched CFG, everything resident),
``"balanced"`` (half precision, sequential CFG, sliced VAE, offload between stages), ``"low"``
(``balanced`` + chunked attention, tiled VAE decode, one model on the GPU at a time).
The pipeline's stage functions take the tier's values as keyword arguments: :func:`stage_kwargs`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from ..errors import ConfigError
from ..io.registry import COMPONENTS, RUN_COMPONENTS, model_names

__all__ = [
    "ALL_COMPONENTS",
    "HALF_COMPONENTS",
    "PRECISIONS",
    "RESIDENCIES",
    "TIERS",
    "MemoryTier",
    "dtype_plan",
    "get_tier",
    "resolve_precision",
    "stage_kwargs",
]

#: Components a reconstruction uses (the text encoder is only loaded to recompute prompt embeddings).
ALL_COMPONENTS = RUN_COMPONENTS
#: Components that run entirely in the run's half precision (registry ``half="cast"``).
HALF_COMPONENTS = tuple(n for n in model_names() if COMPONENTS[n].half == "cast")

PRECISIONS = ("auto", "fp16", "bf16", "fp32")
RESIDENCIES = ("resident", "offload", "sequential")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass(frozen=True)
class MemoryTier:
    """One memory/speed setting of a whole run (see the module docstring for each field)."""

    name: str
    precision: str = "auto"
    cfg_batching: str = "batched"
    vae_encode_slice: int = 2
    vae_decode_slice: int = 1
    vae_tile_size: int | None = None
    attention_query_chunk: int | None = None
    residency: str = "resident"
    drop_after_use: bool = False
    compile: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.cfg_batching not in ("batched", "sequential"):
            raise ConfigError(f"cfg_batching must be 'batched' or 'sequential', got {self.cfg_batching!r}")
        if self.residency not in RESIDENCIES:
            raise ConfigError(f"residency must be one of {RESIDENCIES}, got {self.residency!r}")
        if self.vae_encode_slice < 1 or self.vae_decode_slice < 1:
            raise ConfigError("VAE slice sizes must be at least 1 image")
        if self.vae_tile_size is not None and (self.vae_tile_size < 64 or self.vae_tile_size % 64):
            raise ConfigError(f"vae_tile_size must be a multiple of 64 pixels, got {self.vae_tile_size}")
        if self.attention_query_chunk is not None and self.attention_query_chunk < 1:
            raise ConfigError("attention_query_chunk must be a positive number of tokens or None")

    def with_(self, **changes: Any) -> MemoryTier:
        """A copy with some fields changed (e.g. ``get_tier("low").with_(precision="bf16")``)."""
        return replace(self, **changes)


TIERS: dict[str, MemoryTier] = {
    "high": MemoryTier(
        "high", cfg_batching="batched", vae_encode_slice=2, vae_decode_slice=2, residency="resident",
        description="half precision, CFG in one batch of 20, every model stays on the GPU (fastest)",
    ),
    "balanced": MemoryTier(
        "balanced", cfg_batching="sequential", vae_encode_slice=2, vae_decode_slice=1, residency="offload",
        description="half precision, CFG halves in sequence, sliced VAE, encoders and stage-1 models "
                    "offloaded before the stage that does not need them",
    ),
    "low": MemoryTier(
        "low", cfg_batching="sequential", vae_encode_slice=1, vae_decode_slice=1, vae_tile_size=512,
        attention_query_chunk=1024, residency="sequential",
        description="balanced + chunked attention, tiled VAE decode, one model on the GPU at a time",
    ),
}


def get_tier(tier: str | MemoryTier, **changes: Any) -> MemoryTier:
    """The preset named ``tier`` (or ``tier`` itself), with ``changes`` applied."""
    if isinstance(tier, MemoryTier):
        t = tier
    else:
        try:
            t = TIERS[str(tier)]
        except KeyError:
            raise ConfigError(f"unknown memory tier {tier!r}; choose one of {', '.join(TIERS)}") from None
    return t.with_(**changes) if changes else t


def stage_kwargs(tier: str | MemoryTier, stage: str) -> dict[str, Any]:
    """The keyword arguments of the pipeline function ``stage`` for ``tier``: ``"conditioning"``
    (:func:`~synchuman_core.pipeline.prepare_conditioning`), ``"stage1"``
    (:func:`~synchuman_core.pipeline.run_stage1`), ``"stage2"`` (none today). The one place a tier turns
    into call arguments (the CLI, the nodes and the benchmarks all go through it)."""
    t = get_tier(tier)
    if stage == "conditioning":
        return {"encode_slice_size": t.vae_encode_slice}
    if stage == "stage1":
        return {"cfg_batching": t.cfg_batching, "decode_slice_size": t.vae_decode_slice,
                "decode_tile_size": t.vae_tile_size}
    if stage == "stage2":
        return {}
    raise ConfigError(f"unknown pipeline stage {stage!r}; known: conditioning, stage1, stage2")


def resolve_precision(precision: str, device: torch.device | str | None) -> str:
    """``"auto"``: fp16 on CUDA, fp32 elsewhere (CPU half-precision convolutions are very slow)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return "fp16" if dev.type == "cuda" else "fp32"


def dtype_plan(precision: str, device: torch.device | str | None = None) -> dict[str, torch.dtype | None]:
    """Constructor dtype of every model component for a precision (``auto`` resolved for ``device``).

    fp32: everything fp32. fp16/bf16: components with ``half="cast"`` in that dtype (joint model, VAE,
    CLIP, DINOv2: as the official stage 1 runs them); ``half="mixed"`` ones ``None`` = the official
    per-parameter dtypes (fp16 torso, fp32 norms; TRELLIS ``use_fp16``). The nodes, the CLI, the batch
    runner and the benchmarks all build their models with this plan.
    """
    p = resolve_precision(precision, device)
    names = model_names()
    if p == "fp32":
        return dict.fromkeys(names, torch.float32)
    dt = _DTYPES[p]
    return {n: (dt if COMPONENTS[n].half == "cast" else None) for n in names}
