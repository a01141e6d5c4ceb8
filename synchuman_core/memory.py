"""Memory tiers: one user-facing setting for how much GPU memory a SyncHuman run may use.

A :class:`MemoryTier` bundles every memory/speed trade-off of the pipeline:

* ``precision``: weights and compute of the joint model, VAE, CLIP and DINOv2 in fp16/bf16/fp32
  (the TRELLIS-style models keep their official fp16-torso/fp32-norm mix in half precision tiers);
* ``cfg_batching``: the stage-1 CFG halves in one UNet batch of 20 (``"batched"``) or as two calls of
  10 (``"sequential"``: same result, about half the activation memory). The two *domains* (normal,
  colour) and the five views can NOT be split further: ``attn1`` attends jointly over the normal and
  colour tokens of the same view, ``attn_mv`` over the four body views, the face close-up is blended
  into the front view, and the sync bridges read all views (see :mod:`synchuman_core.stage1.joint`).
  10 images is the smallest valid stage-1 batch;
* VAE slicing (``vae_encode_slice``/``vae_decode_slice`` images per call) and tiling
  (``vae_tile_size`` pixels; slightly different pixels at tile seams);
* ``attention_query_chunk``: query tokens per attention kernel call
  (:func:`synchuman_core.attention.set_query_chunk_size`). With SDPA's flash / memory-efficient
  kernels (CUDA, fp16/bf16) attention memory is already linear in the sequence length and chunking
  only costs a little speed; it matters where a backend materialises the scores (math fallback,
  MPS, old GPUs): stage-1 ``attn1`` at 96² pairs 18,432 tokens, i.e. 34 GB of scores per CFG half;
* ``residency``: which models sit on the GPU. ``"resident"``: all, loaded once and kept (fastest for
  queued prompts); ``"offload"``: the conditioning encoders leave the GPU after conditioning, the
  stage-1 models before stage 2, the stage-2 models after it (they return for the next prompt);
  ``"sequential"``: one model on the GPU at a time, moved there right before it runs and moved back
  (``drop_after_use``: freed entirely and re-read from disk next time, for hosts short of RAM).

Presets (:data:`TIERS`): ``"high"`` (half precision, batched CFG, everything resident),
``"balanced"`` (half precision, sequential CFG, sliced VAE, offload between stages), ``"low"``
(``balanced`` + chunked attention, tiled VAE decode, one model on the GPU at a time).

Apply a tier to a run with :func:`apply_tier`; it returns a :class:`TierRun` holding the pipeline
keyword arguments, the models wrapped in :class:`ManagedModels` (the residency policy), and a
context manager for the process-wide attention settings::

    run = apply_tier("low", "/models/synchuman", device="cuda")
    with run.active():
        rec = run.reconstruct(rgba, seed=43)

:func:`estimate_peak_memory` estimates the peak GPU memory of every stage of a tier at real size
from the model shapes (parameter counts of the official manifests, activation formulas below);
``docs/PERFORMANCE.md`` tabulates it next to measurements.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .attention import best_backend
from .errors import ConfigError

__all__ = [
    "ALL_COMPONENTS",
    "HALF_COMPONENTS",
    "PRECISIONS",
    "REAL_COMPONENT_SIZES",
    "REAL_SHAPES",
    "RESIDENCIES",
    "STAGES",
    "TIERS",
    "ComponentSize",
    "ManagedModels",
    "MemoryTier",
    "PipelineShapes",
    "TierRun",
    "apply_tier",
    "HostSyncCounter",
    "best_attention_backend",
    "compile_heavy_modules",
    "dtype_plan",
    "estimate_peak_memory",
    "format_estimate_table",
    "get_tier",
    "memory_breakdown",
    "resolve_precision",
    "weight_bytes",
]

logger = logging.getLogger(__name__)

GB = 1024**3

#: Components a reconstruction uses (the text encoder is only loaded to recompute prompt embeddings).
ALL_COMPONENTS = ("image_encoder", "vae", "dinov2", "joint", "structure_decoder", "slat_flow", "gs_decoder",
                  "mesh_decoder")
#: Components that run entirely in the tier's half precision (as the official stage 1 casts them).
HALF_COMPONENTS = ("joint", "vae", "image_encoder", "dinov2", "text_encoder")
#: TRELLIS-style components with an official fp16 torso / fp32 norms and I/O layers (``use_fp16``).
MIXED_COMPONENTS = ("structure_decoder", "slat_flow", "mesh_decoder", "gs_decoder")

PRECISIONS = ("auto", "fp16", "bf16", "fp32")
RESIDENCIES = ("resident", "offload", "sequential")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

#: Which components each ``on_stage_done`` event (see :data:`synchuman_core.pipeline.STAGE_EVENTS`)
#: releases from the GPU under the ``offload`` residency.
OFFLOAD_AFTER = {
    "conditioning": ("image_encoder", "dinov2"),
    "stage1": ("joint", "vae", "structure_decoder"),
    "stage2": ("dinov2", "slat_flow", "gs_decoder", "mesh_decoder"),
}


# ---------------------------------------------------------------------------------------------------
# Tiers
# ---------------------------------------------------------------------------------------------------


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


def resolve_precision(precision: str, device: torch.device | str | None) -> str:
    """``"auto"``: fp16 on CUDA, fp32 elsewhere (CPU half-precision convolutions are very slow)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return "fp16" if dev.type == "cuda" else "fp32"


def dtype_plan(precision: str, device: torch.device | str | None = None) -> dict[str, torch.dtype | None]:
    """Constructor dtype per component for a precision (``None`` = the official per-parameter dtypes:
    fp16 torso, fp32 norms for the TRELLIS-style models)."""
    p = resolve_precision(precision, device)
    if p == "fp32":
        return dict.fromkeys((*ALL_COMPONENTS, "text_encoder"), torch.float32)
    dt = _DTYPES[p]
    return {n: (dt if n in HALF_COMPONENTS else None) for n in (*ALL_COMPONENTS, "text_encoder")}


#: The fastest exact attention backend for a device/dtype (:func:`synchuman_core.attention.best_backend`).
best_attention_backend = best_backend


# ---------------------------------------------------------------------------------------------------
# Residency: which models are on the compute device
# ---------------------------------------------------------------------------------------------------


def _first_float(module: Any) -> torch.Tensor | None:
    if isinstance(module, nn.Module):
        for p in module.parameters():
            if p.is_floating_point():
                return p
    return None


class ManagedModels:
    """Wraps a models object (``SyncHumanModels`` or anything with the component attributes) and
    applies a residency policy when the pipeline reaches for a component.

    ``models.<component>`` moves that component to ``device`` (under ``"sequential"`` after moving
    every other component off it) and returns it; ``peek(name)`` and ``device_dtype(name)`` read a
    component without moving it (the pipeline uses them for configs and dtypes);
    :meth:`on_stage_done` is the ``on_stage_done`` hook of the pipeline functions. Other attributes
    (``prompt_embeds``, ``folder``, ``settings``) are forwarded. ``events`` logs
    ``("use"|"offload"|"drop", name)`` for tests and benchmarks.
    """

    COMPONENTS = (*ALL_COMPONENTS, "text_encoder")

    def __init__(
        self,
        models: Any,
        device: torch.device | str | None = None,
        *,
        residency: str = "resident",
        offload_device: torch.device | str = "cpu",
        drop_after_use: bool = False,
    ) -> None:
        if residency not in RESIDENCIES:
            raise ConfigError(f"residency must be one of {RESIDENCIES}, got {residency!r}")
        self._models = models
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.offload_device = torch.device(offload_device)
        self.residency = residency
        self.drop_after_use = drop_after_use
        self._on_device: list[str] = []
        self.events: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in type(self).COMPONENTS:
            return self.use(name)
        return getattr(self._models, name)

    @property
    def wrapped(self) -> Any:
        return self._models

    @property
    def on_device(self) -> list[str]:
        """Components currently placed on the compute device by this wrapper."""
        return list(self._on_device)

    def _fetch(self, name: str) -> Any:
        try:
            return getattr(self._models, name)
        except AttributeError:
            raise ConfigError(f"the models object has no component {name!r}") from None

    def peek(self, name: str) -> Any:
        """The component wherever it is (loaded if needed), without changing residency."""
        return self._fetch(name)

    def device_dtype(self, name: str) -> tuple[torch.device, torch.dtype]:
        """``(compute device, parameter dtype)`` the component runs with, without moving it."""
        p = _first_float(self._fetch(name))
        return self.device, (p.dtype if p is not None else torch.float32)

    def use(self, name: str) -> Any:
        """Place ``name`` on the compute device (evicting the others under ``"sequential"``)."""
        if self.residency == "sequential":
            self.release(*[n for n in self._on_device if n != name])
        module = self._fetch(name)
        if isinstance(module, nn.Module):
            p = _first_float(module)
            if p is not None and p.device != self.device:
                module.to(self.device)
        if name not in self._on_device:
            self._on_device.append(name)
            self.events.append(("use", name))
        return module

    def release(self, *names: str) -> None:
        """Move components off the compute device (or drop them with ``drop_after_use``)."""
        freed = False
        for name in names:
            if name not in self._on_device:
                continue
            self._on_device.remove(name)
            unload = getattr(self._models, "unload", None)
            if self.drop_after_use and callable(unload):
                unload(name)
                self.events.append(("drop", name))
            else:
                module = self._fetch(name)
                if isinstance(module, nn.Module) and self.offload_device != self.device:
                    module.to(self.offload_device)
                self.events.append(("offload", name))
            freed = True
        if freed and self.device.type == "cuda":
            torch.cuda.empty_cache()

    def on_stage_done(self, event: str) -> None:
        """Pipeline hook: release what the finished stage no longer needs (per residency)."""
        if self.residency == "resident":
            return
        if self.residency == "sequential":
            self.release(*self._on_device)
            return
        self.release(*OFFLOAD_AFTER.get(event, ()))

    def __repr__(self) -> str:
        return f"ManagedModels({self._models!r}, device={self.device}, residency={self.residency}, on_device={self._on_device})"


# ---------------------------------------------------------------------------------------------------
# Applying a tier
# ---------------------------------------------------------------------------------------------------


_COMPILED_ATTR = "_synchuman_compiled"


def compile_heavy_modules(models: Any, **compile_kwargs: Any) -> list[str]:
    """``torch.compile`` the blocks of the joint model in place (``nn.Module.compile``: state-dict keys
    unchanged): every UNet down/mid/up block and every 3D transformer block, compiled one region at
    a time (faster to compile than the whole forward, no graph break at the NaN check). The joint
    model does ~97% of the stage-1 work (50 steps x 1-2 calls); one-shot encoders and the sparse
    stage-2 models (data-dependent shapes) are left eager. Returns the compiled module names."""
    joint = getattr(models, "peek", None)
    joint = joint("joint") if callable(joint) else models.joint
    if getattr(joint, _COMPILED_ATTR, False):
        return []
    names = []
    for attr in ("down_blocks", "up_blocks", "blocks"):
        for i, blk in enumerate(getattr(joint, attr, ())):
            blk.compile(**compile_kwargs)
            names.append(f"{attr}.{i}")
    mid = getattr(joint, "mid_block", None)
    if isinstance(mid, nn.Module):
        mid.compile(**compile_kwargs)
        names.append("mid_block")
    setattr(joint, _COMPILED_ATTR, True)
    return names


@dataclass
class TierRun:
    """A tier applied to one set of models: pipeline keyword arguments, the wrapped models and the
    process-wide settings (:meth:`active`)."""

    tier: MemoryTier
    device: torch.device
    precision: str
    models: Any
    dtypes: dict[str, torch.dtype | None] = field(default_factory=dict)

    @property
    def on_stage_done(self) -> Callable[[str], None] | None:
        hook = getattr(self.models, "on_stage_done", None)
        return hook if isinstance(self.models, ManagedModels) else None

    def conditioning_kwargs(self) -> dict[str, Any]:
        return {"encode_slice_size": self.tier.vae_encode_slice, "on_stage_done": self.on_stage_done}

    def stage1_kwargs(self) -> dict[str, Any]:
        return {
            "cfg_batching": self.tier.cfg_batching,
            "decode_slice_size": self.tier.vae_decode_slice,
            "decode_tile_size": self.tier.vae_tile_size,
            "on_stage_done": self.on_stage_done,
        }

    def stage2_kwargs(self) -> dict[str, Any]:
        return {"on_stage_done": self.on_stage_done}

    @contextlib.contextmanager
    def active(self) -> Iterator[TierRun]:
        """Set the attention query chunk for the enclosed code (restored afterwards; process-wide,
        so do not run two tiers concurrently in one process)."""
        from .attention import dispatch

        saved = dispatch._query_chunk  # the value set_query_chunk_size() last stored (None: env/off)
        dispatch.set_query_chunk_size(self.tier.attention_query_chunk)
        try:
            yield self
        finally:
            dispatch._query_chunk = saved

    def reconstruct(self, image: Any, mask: Any = None, *, seed: int = 43, stage1_settings=None,
                    stage2_settings=None, callback=None, decode_mesh: bool = True,
                    decode_gaussians: bool = True):
        """:func:`synchuman_core.pipeline.reconstruct` with this tier's settings (call inside
        :meth:`active`)."""
        from . import pipeline
        from .samplers import make_generator

        pre = pipeline.preprocess(self.models, image, mask)
        gen = make_generator(seed)
        cb1 = (lambda i, n, x: callback("stage1", i, n)) if callback else None
        cb2 = (lambda i, n, x: callback("stage2", i, n)) if callback else None
        inputs = pipeline.prepare_conditioning(self.models, pre, **self.conditioning_kwargs())
        s1 = pipeline.run_stage1(self.models, inputs, stage1_settings, gen, cb1, **self.stage1_kwargs())
        s2 = pipeline.run_stage2(self.models, s1, stage2_settings, gen, cb2, decode_mesh=decode_mesh,
                                 decode_gaussians=decode_gaussians, **self.stage2_kwargs())
        return pipeline.Reconstruction(stage1=s1, stage2=s2, extras={"rgba": pre.rgba, "tier": self.tier.name})


def apply_tier(
    tier: str | MemoryTier,
    models: Any,
    *,
    device: torch.device | str | None = None,
    offload_device: torch.device | str = "cpu",
    cast: bool = True,
) -> TierRun:
    """Apply ``tier`` to ``models``: a model folder (path; a ``SyncHumanModels`` is created with the
    tier's dtypes), a ``SyncHumanModels`` or any object with the component attributes.

    * dtypes: a new ``SyncHumanModels`` is built with :func:`dtype_plan`; for an existing object,
      components not yet loaded get the plan (``SyncHumanModels.dtypes``) and, with ``cast``, loaded
      half-precision components are cast (``module.to(dtype)``);
    * residency: the models are wrapped in :class:`ManagedModels` (its ``on_stage_done`` goes to the
      pipeline); under ``"offload"``/``"sequential"`` a new ``SyncHumanModels`` loads onto
      ``offload_device`` and components move to ``device`` when used;
    * ``compile``: :func:`compile_heavy_modules`.

    ``device`` defaults to CUDA when available, else CPU.
    """
    t = get_tier(tier)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(t.precision, dev)
    plan = dtype_plan(precision, dev)
    if isinstance(models, (str, os.PathLike)):
        from .io.loading import SyncHumanModels

        load_dev = dev if t.residency == "resident" else torch.device(offload_device)
        models = SyncHumanModels(models, device=load_dev, dtypes=plan)
    else:
        if isinstance(models, ManagedModels):
            models = models.wrapped
        if hasattr(models, "dtypes") and isinstance(models.dtypes, dict):
            models.dtypes.update(plan)
        if cast:
            _cast_loaded(models, plan)
    managed = ManagedModels(models, dev, residency=t.residency, offload_device=offload_device,
                            drop_after_use=t.drop_after_use)
    if t.compile:
        compile_heavy_modules(managed)
    return TierRun(tier=t, device=dev, precision=precision, models=managed, dtypes=plan)


def _loaded_components(models: Any) -> Iterable[str]:
    loaded = getattr(models, "loaded", None)
    if isinstance(loaded, list):
        return loaded
    return [n for n in ManagedModels.COMPONENTS if n in getattr(models, "__dict__", {})]


def _cast_loaded(models: Any, plan: Mapping[str, torch.dtype | None]) -> None:
    for name in _loaded_components(models):
        dt = plan.get(name)
        module = getattr(models, name, None)
        p = _first_float(module)
        if dt is not None and p is not None and p.dtype != dt:
            module.to(dtype=dt)


# ---------------------------------------------------------------------------------------------------
# Parameter memory (counts from the official manifests, /work/shared/reference/manifests, and
# ARCHITECTURE.md §2.0 for DINOv2)
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentSize:
    """Parameter elements of one component: ``params`` in total, of which ``half_params`` are fp16
    in the official constructor (TRELLIS ``use_fp16``), plus ``buffers`` elements of persistent
    buffers (they follow the module dtype)."""

    params: int
    half_params: int = 0
    buffers: int = 0


REAL_COMPONENT_SIZES: dict[str, ComponentSize] = {
    "joint": ComponentSize(1_699_469_580, 0, 4_194_304),  # + pos_emb buffer [4096, 1024]
    "structure_decoder": ComponentSize(73_671_201, 73_549_696),
    "vae": ComponentSize(83_653_863),
    "image_encoder": ComponentSize(632_076_800),
    "text_encoder": ComponentSize(340_387_840),
    "dinov2": ComponentSize(304_372_736),
    "slat_flow": ComponentSize(600_432_520, 599_014_144),
    "mesh_decoder": ComponentSize(457_976_421, 449_566_560),
    "gs_decoder": ComponentSize(452_418_752, 443_676_672, 96),  # + offset_perturbation [32, 3]
}


def weight_bytes(size: ComponentSize, dtype: torch.dtype | None) -> int:
    """Bytes of a component's parameters and buffers when built with constructor ``dtype``
    (``None``: the official per-parameter dtypes)."""
    n = size.params + size.buffers
    if dtype is None:
        return 2 * size.half_params + 4 * (n - size.half_params)
    return n * torch.empty((), dtype=dtype).element_size()


# ---------------------------------------------------------------------------------------------------
# Activation memory from the shapes
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineShapes:
    """The shapes the activation estimates need (defaults: the released models, :data:`REAL_SHAPES`)."""

    sizes: Mapping[str, ComponentSize] = field(default_factory=lambda: dict(REAL_COMPONENT_SIZES))
    # stage-1 UNet (ARCHITECTURE §2.1)
    latent: int = 96
    unet_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    unet_heads: tuple[int, ...] = (5, 10, 20, 20)
    unet_attention: tuple[bool, ...] = (True, True, True, False)
    unet_layers: int = 2
    num_views: int = 5
    prompt_tokens: int = 77
    # 3D branch of the joint model (§2.1.3)
    structure_tokens: int = 4096
    structure_channels: int = 1024
    structure_heads: int = 16
    structure_mlp: float = 4.0
    cond_tokens: int = 1374
    cond_channels: int = 1024
    # VAE (§6.5), CLIP (§6.4), DINOv2 (§6.1, 6.3)
    vae_channels: tuple[int, ...] = (128, 256, 512, 512)
    clip_tokens: int = 257
    clip_width: int = 1280
    clip_mlp: int = 5120
    dino_width: int = 1024
    dino_mlp: int = 4096
    dino_heads: int = 16
    dino_mv_tokens: int = 4101  # 64*64 patches + class + 4 registers at 896 px
    dino_mv_layers: int = 4
    # stage 2 (§2.3, §7)
    slat_io_channels: int = 128
    slat_channels: int = 1024
    slat_heads: int = 16
    slat_mlp: float = 4.0
    decoder_channels: int = 768
    decoder_mlp: float = 4.0
    decoder_mv_in: int = 4096  # DINOv2 feature channels per pixel (4 layers x 1024)
    decoder_mv_dim: int = 1024
    decoder_window: int = 8
    mesh_channels: tuple[int, ...] = (192, 96)
    mesh_out_channels: int = 101
    gaussians_per_voxel: int = 32
    gs_out_channels: int = 448


REAL_SHAPES = PipelineShapes()

# Calibration of the activation formulas (live tensors per "unit" of the named shape; measured on CPU
# at real widths, see docs/PERFORMANCE.md "Calibration"):
_K_TRANSFORMER = 8.0  # UNet transformer block: x, GN/proj copies, norm, q, k, v, paired q/k/v, out
_K_RESNET = 3.0  # ResnetBlock2D on its input channels
_K_VAE_DECODE = 4.5  # per image: live [c1, P, P] tensors at full resolution (upsampler + first resnet)
_K_VAE_ENCODE = 5.0  # per image: live [c0, P, P] tensors at full resolution
_K_DIT = 1.0  # 3D DiT block: tokens x (6C + mlp C) elements
_GEGLU_ROWS_ELEMENTS = 1 << 25  # map_rows budget of the GEGLU feed-forward (unet_layers._ROW_CHUNK_ELEMENTS)
_SPARSE_CONV_CHUNK = 1 << 23  # gathered elements per sparse-conv GEMM chunk (sparse/conv.py)
_COARSE_RATIO = 3.3  # fine (64³) / coarse (32³) voxels of a body surface (SLat flow down-sampling)
_FLEXICUBES_BYTES_PER_VOXEL = 650  # FlexiCubes at 256³ per fine voxel, inputs excluded (bench_flexicubes --decoder-like)
_CONTEXT_BYTES = int(0.5 * GB)  # CUDA context + kernels (outside the PyTorch allocator)
_FRAGMENTATION = 0.10  # caching-allocator slack on activations


def _scores_bytes(batch_heads: int, q_len: int, k_len: int, chunk: int | None, efficient: bool) -> int:
    """Attention scores held at once when a backend materialises them (2 copies: scores + softmax,
    fp32); 0 with flash / memory-efficient kernels."""
    if efficient:
        return 0
    q = min(q_len, chunk) if chunk else q_len
    return 2 * 4 * batch_heads * q * k_len


def unet_activation_bytes(sh: PipelineShapes, groups: int, b: int, *, chunk: int | None = None,
                          efficient: bool = True) -> int:
    """One joint-model call with ``groups`` CFG groups (batch ``2 * groups * views`` images):
    UNet skip tensors + the largest per-level working set + the 3D branch."""
    batch = 2 * groups * sh.num_views
    s = sh.latent
    skips = sh.unet_channels[0] * s * s  # conv_in
    sizes = []
    for i, c in enumerate(sh.unet_channels):
        sizes.append(s)
        skips += sh.unet_layers * c * s * s
        if i < len(sh.unet_channels) - 1:
            s //= 2
            skips += c * s * s
    work = 0
    rev = list(reversed(sh.unet_channels))
    for i, (c, s) in enumerate(zip(sh.unet_channels, sizes, strict=True)):
        n = s * s
        # up path: resnet on [main ⊕ skip] channels at this level
        up_in = (rev[len(rev) - 2 - i] if i < len(rev) - 1 else c) + c
        level = _K_RESNET * batch * n * up_in * b
        if sh.unet_attention[i]:
            rows = batch * n
            geglu = min(rows, _GEGLU_ROWS_ELEMENTS // (8 * c)) * 8 * c * 2 * b
            level = max(level, _K_TRANSFORMER * batch * n * c * b + geglu)
            level += _scores_bytes(batch // 2 * sh.unet_heads[i], 2 * n, 2 * n, chunk, efficient)  # attn1
        work = max(work, int(level))
    t, cs = sh.structure_tokens, sh.structure_channels
    structure = groups * t * cs * b * 3 + int(_K_DIT * groups * t * (6 + sh.structure_mlp) * cs * b)
    structure += _scores_bytes(groups * sh.structure_heads, t, t, chunk, efficient)
    return skips * batch * b + work + structure


def vae_decode_bytes(sh: PipelineShapes, images: int, b: int, tile: int | None = None) -> int:
    """VAE decode of ``images`` latents at once (optionally in ``tile``-pixel tiles)."""
    p = sh.latent * 2 ** (len(sh.vae_channels) - 1)
    side = min(tile, p) if tile else p
    work = int(_K_VAE_DECODE * images * sh.vae_channels[1] * side * side * b)
    out = images * 3 * p * p * 4 * (2 if tile else 1)  # decoded images (fp32; tiles + blended copy)
    return work + out


def vae_encode_bytes(sh: PipelineShapes, images: int, b: int) -> int:
    p = sh.latent * 2 ** (len(sh.vae_channels) - 1)
    return int(_K_VAE_ENCODE * images * sh.vae_channels[0] * p * p * b)


def conditioning_bytes(sh: PipelineShapes, tier: MemoryTier, b: int) -> int:
    """Largest of CLIP (10 images), VAE encode (one slice) and the DINOv2 condition, plus the 10
    input views (fp32)."""
    p = sh.latent * 2 ** (len(sh.vae_channels) - 1)
    views = 10 * 3 * p * p * 4
    clip = 10 * sh.clip_tokens * (sh.clip_mlp + 4 * sh.clip_width) * b
    dino = 3 * sh.cond_tokens * (sh.dino_mlp + 4 * sh.dino_width) * b  # x3: measured at real size
    return views + max(clip, vae_encode_bytes(sh, tier.vae_encode_slice, b), dino)


def stage2_bytes(sh: PipelineShapes, voxels: int, b: int, *, chunk: int | None, efficient: bool) -> dict[str, int]:
    """Activations of the stage-2 steps for ``voxels`` occupied 64³ voxels (batch of one)."""
    n = voxels
    m = int(n / _COARSE_RATIO)
    fine = 6 * n * sh.slat_io_channels * b + 2 * _SPARSE_CONV_CHUNK * b
    coarse = m * (3 * sh.slat_channels + int(sh.slat_mlp * sh.slat_channels) + 4 * sh.slat_channels) * b
    slat = fine + coarse + n * sh.slat_io_channels * b * 2  # + skips
    slat += _scores_bytes(sh.slat_heads, m, m, None, efficient)  # varlen attention: never query-chunked
    # DINOv2 features of 4 views x 2 domains kept for the decoders + one 2-view slice in flight
    maps = 2 * 4 * 4096 * sh.decoder_mv_in * b
    feat_slice = 2 * sh.dino_mv_tokens * (sh.dino_mlp + (3 + sh.dino_mv_layers) * sh.dino_width) * b
    features = maps + feat_slice
    c = sh.decoder_channels
    mv = 2 * 4 * sh.decoder_mv_dim
    trunk = n * (mv + c + int(sh.decoder_mlp * c) + 6 * c) * b + n * 4 * 4 * 2  # + gather indices
    gs = maps + trunk + n * sh.gs_out_channels * 4 + n * sh.gaussians_per_voxel * 14 * 4 * 2
    c1, c2 = sh.mesh_channels
    up = max(8 * n * (c + 3 * c1) * b, 64 * n * (c1 + 3 * c2) * b)
    head = 64 * n * sh.mesh_out_channels * 4
    mesh = maps + max(trunk, up) + head + 64 * n * _FLEXICUBES_BYTES_PER_VOXEL
    return {"stage2_slat": slat, "stage2_features": features, "stage2_gaussians": gs, "stage2_mesh": mesh}


#: Stages reported by :func:`estimate_peak_memory`, in run order, with the components each uses.
STAGES: dict[str, tuple[str, ...]] = {
    "conditioning": ("image_encoder", "vae", "dinov2"),
    "stage1_sampling": ("joint",),
    "stage1_decode": ("vae", "structure_decoder"),
    "stage2_slat": ("dinov2", "slat_flow"),
    "stage2_features": ("dinov2",),
    "stage2_gaussians": ("gs_decoder",),
    "stage2_mesh": ("mesh_decoder",),
}


def _resident(tier: MemoryTier, stage: str) -> tuple[str, ...]:
    """Components on the GPU during ``stage`` (steady state of a queue of prompts)."""
    if tier.residency == "resident":
        return ALL_COMPONENTS
    if tier.residency == "sequential":  # the largest component of the stage, alone
        return (max(STAGES[stage], key=lambda n: REAL_COMPONENT_SIZES[n].params),)
    # offload: conditioning encoders leave after conditioning (VAE stays for the decode), stage-1
    # models before stage 2; stage-2 models accumulate during stage 2
    return {
        "conditioning": ("image_encoder", "vae", "dinov2"),
        "stage1_sampling": ("vae", "joint"),
        "stage1_decode": ("vae", "joint", "structure_decoder"),
        "stage2_slat": ("dinov2", "slat_flow"),
        "stage2_features": ("dinov2", "slat_flow"),
        "stage2_gaussians": ("dinov2", "slat_flow", "gs_decoder"),
        "stage2_mesh": ("dinov2", "slat_flow", "gs_decoder", "mesh_decoder"),
    }[stage]


def memory_breakdown(
    tier: str | MemoryTier = "balanced",
    *,
    device: torch.device | str = "cuda",
    shapes: PipelineShapes = REAL_SHAPES,
    voxels: int = 25_000,
    efficient_attention: bool | None = None,
    include_overhead: bool = True,
) -> dict[str, dict[str, Any]]:
    """Per stage: ``{"weights", "activations", "overhead", "total"}`` in GB and the ``resident``
    components (see :func:`estimate_peak_memory`)."""
    t = get_tier(tier)
    dev = torch.device(device)
    precision = resolve_precision(t.precision, dev)
    plan = dtype_plan(precision, dev)
    b = 4 if precision == "fp32" else 2
    if efficient_attention is None:
        efficient_attention = dev.type in ("cuda", "cpu")  # SDPA flash / memory-efficient kernels
    groups = 2 if t.cfg_batching == "batched" else 1
    chunk = t.attention_query_chunk
    act = {
        "conditioning": conditioning_bytes(shapes, t, b),
        "stage1_sampling": unet_activation_bytes(shapes, groups, b, chunk=chunk, efficient=efficient_attention),
        "stage1_decode": vae_decode_bytes(shapes, t.vae_decode_slice, b, t.vae_tile_size),
        **stage2_bytes(shapes, voxels, b, chunk=chunk, efficient=efficient_attention),
    }
    out: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        names = _resident(t, stage)
        w = sum(weight_bytes(shapes.sizes[n], plan.get(n)) for n in names)
        a = act[stage]
        over = (_CONTEXT_BYTES + _FRAGMENTATION * a) if include_overhead and dev.type == "cuda" else 0
        out[stage] = {"weights": w / GB, "activations": a / GB, "overhead": over / GB,
                      "total": (w + a + over) / GB, "resident": names}
    return out


def estimate_peak_memory(
    tier: str | MemoryTier = "balanced",
    *,
    device: torch.device | str = "cuda",
    shapes: PipelineShapes = REAL_SHAPES,
    voxels: int = 25_000,
    efficient_attention: bool | None = None,
    include_overhead: bool = True,
) -> dict[str, float]:
    """Estimated peak GPU memory (GB = GiB) of every stage of a run with ``tier``, and ``"peak"``.

    * weights: the components resident during the stage (:func:`memory_breakdown` lists them) at
      the tier's dtypes, from the official parameter counts (:data:`REAL_COMPONENT_SIZES`);
    * activations: closed-form estimates from the shapes (UNet skips + the largest level working set
      for a batch of 20 or 10 images at 96², the 3D branch, VAE slices/tiles, stage-2 tensors at
      ``voxels`` occupied 64³ voxels); attention scores are counted only where a backend
      materialises them (``efficient_attention=False``), per query chunk;
    * overhead (CUDA): 0.5 GB context + 10% allocator slack on activations.

    ``"parameters"``: GB of all the run's weights (what ``"resident"`` keeps on the GPU).
    """
    t = get_tier(tier)
    bd = memory_breakdown(t, device=device, shapes=shapes, voxels=voxels,
                          efficient_attention=efficient_attention, include_overhead=include_overhead)
    out = {stage: round(v["total"], 3) for stage, v in bd.items()}
    out["peak"] = max(out.values())
    plan = dtype_plan(resolve_precision(t.precision, torch.device(device)), device)
    out["parameters"] = round(sum(weight_bytes(shapes.sizes[n], plan.get(n)) for n in ALL_COMPONENTS) / GB, 3)
    return out


def format_estimate_table(tiers: Iterable[str] = TIERS, **kwargs: Any) -> str:
    """Markdown table of :func:`estimate_peak_memory` for several tiers (used by the benchmark)."""
    rows = {name: estimate_peak_memory(name, **kwargs) for name in tiers}
    cols = [*STAGES, "peak", "parameters"]
    lines = ["| tier | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, est in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{est[c]:.2f}" for c in cols) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Speed check: host synchronisations
# ---------------------------------------------------------------------------------------------------


class HostSyncCounter(TorchFunctionMode):
    """Counts the tensor operations that make the host wait for the device (``bool(t)``, ``.item()``,
    ``.tolist()``, ``int(t)``, ``.cpu()`` ...) and the ops with data-dependent output sizes
    (``nonzero``, ``unique``, ``masked_select``, ``bincount``: a sync on CUDA), called from Python inside the
    ``with`` block, by ``(op, "file:line")`` of the innermost ``synchuman_core`` frame.

    Works on any device (a ``TorchFunctionMode``: kernels are unchanged); used by the tests and the
    benchmark to keep sampling loops free of per-step syncs.
    """

    OPS = frozenset({"__bool__", "item", "tolist", "__int__", "__float__", "__index__", "nonzero", "unique",
                     "unique_consecutive", "masked_select", "argwhere", "equal", "numpy", "cpu", "bincount"})

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[tuple[str, str], int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = getattr(func, "__name__", "")
        if name in self.OPS:
            import traceback

            where = "?"
            for frame in reversed(traceback.extract_stack()):
                if "synchuman_core" in frame.filename and not frame.filename.endswith("memory.py"):
                    where = f"{frame.filename.rsplit('synchuman_core/', 1)[-1]}:{frame.lineno}"
                    break
            key = (name, where)
            self.counts[key] = self.counts.get(key, 0) + 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def at(self, fragment: str) -> int:
        """Count of the syncs whose location contains ``fragment`` (e.g. ``"stage1/sampling.py"``)."""
        return sum(v for (_, where), v in self.counts.items() if fragment in where)
