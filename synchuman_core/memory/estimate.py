"""Peak GPU memory of a run, estimated from the model shapes (no GPU needed).

:func:`estimate_peak_memory` estimates the peak GPU memory of every pipeline step of a tier at real size:
weights of the components resident during the step (sizes from the component table,
:attr:`synchuman_core.io.registry.ComponentSpec.size`; which ones are resident from their ``steps`` and
``offload_after``) plus closed-form activation estimates from :class:`PipelineShapes`.
``docs/PERFORMANCE.md`` tabulates it next to measurements.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..io.registry import COMPONENTS, STEPS, ComponentSize, components_for, model_names
from .tiers import ALL_COMPONENTS, TIERS, MemoryTier, dtype_plan, get_tier, resolve_precision

__all__ = [
    "GB",
    "REAL_COMPONENT_SIZES",
    "REAL_SHAPES",
    "STAGES",
    "ComponentSize",
    "PipelineShapes",
    "estimate_peak_memory",
    "format_estimate_table",
    "memory_breakdown",
    "resident_components",
    "weight_bytes",
]

GB = 1024**3

#: Real parameter counts of every model component (from the component table).
REAL_COMPONENT_SIZES: dict[str, ComponentSize] = {
    n: COMPONENTS[n].size for n in model_names() if COMPONENTS[n].size is not None
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
    # stage-1 UNet (shapes of the released models: docs/ARCHITECTURE.md)
    latent: int = 96
    unet_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    unet_heads: tuple[int, ...] = (5, 10, 20, 20)
    unet_attention: tuple[bool, ...] = (True, True, True, False)
    unet_layers: int = 2
    num_views: int = 5
    prompt_tokens: int = 77
    # 3D branch of the joint model
    structure_tokens: int = 4096
    structure_channels: int = 1024
    structure_heads: int = 16
    structure_mlp: float = 4.0
    cond_tokens: int = 1374
    cond_channels: int = 1024
    # VAE, CLIP, DINOv2
    vae_channels: tuple[int, ...] = (128, 256, 512, 512)
    clip_tokens: int = 257
    clip_width: int = 1280
    clip_mlp: int = 5120
    dino_width: int = 1024
    dino_mlp: int = 4096
    dino_heads: int = 16
    dino_mv_tokens: int = 4101  # 64*64 patches + class + 4 registers at 896 px
    dino_mv_layers: int = 4
    # stage 2
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


#: Pipeline steps reported by :func:`estimate_peak_memory`, in run order, with the components each uses.
STAGES: dict[str, tuple[str, ...]] = {step: components_for(step) for step in STEPS}


def resident_components(tier: MemoryTier, stage: str) -> tuple[str, ...]:
    """Components on the GPU during ``stage`` (steady state of a queue of prompts), derived from the
    component table: ``resident``: all; ``sequential``: the largest component of the step, alone;
    ``offload``: every component used so far whose ``offload_after`` events have not fired since."""
    if tier.residency == "resident":
        return ALL_COMPONENTS
    if tier.residency == "sequential":
        return (max(STAGES[stage], key=lambda n: REAL_COMPONENT_SIZES[n].params),)
    on: list[str] = []
    for step, event in STEPS.items():
        on += [n for n in STAGES[step] if n not in on]
        if step == stage:
            return tuple(on)
        following = list(STEPS)[list(STEPS).index(step) + 1:]
        if not following or STEPS[following[0]] != event:  # the stage event fires after its last step
            on = [n for n in on if event not in COMPONENTS[n].offload_after]
    raise KeyError(stage)


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
        names = resident_components(t, stage)
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

