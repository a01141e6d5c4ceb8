"""Structured-latent flow DiT (TRELLIS ``SLatFlowModel``, stage 2): denoises 8-channel features on the
active voxels of the 64^3 occupancy grid.

Layout (real config): ``input_layer`` 8->128 per voxel, ``input_blocks`` (ResBlock 128, ResBlock
128->1024 with 2x down-sampling to 32^3), ``+ APE(coarse coords)``, 24 modulated sparse transformer
blocks with full attention and cross-attention to the DINOv2 tokens, ``out_blocks`` (ResBlock
2048->128 with up-sampling, ResBlock 256->128; inputs are ``[h, skip]``), LayerNorm, ``out_layer``
128->8. The torso (input/out blocks and transformer blocks) runs in the dtype of its weights (fp16 with
``use_fp16``); ``t_embedder``, ``input_layer``, ``out_layer`` and all norms stay fp32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..modules import LayerNorm32, TimestepEmbedder, convert_to_fp16, sincos_position_embedding
from ..modules.config import config_from_official
from ..sparse import (
    FP16_SPARSE_MODULE_TYPES,
    ModulatedSparseTransformerCrossBlock,
    SparseConv3d,
    SparseDownsample,
    SparseLinear,
    SparseTensor,
    SparseUpsample,
    sparse_batch_broadcast,
)

__all__ = ["SLatFlowConfig", "SLatFlowModel", "SparseResBlock3d"]


@dataclass
class SLatFlowConfig:
    """TRELLIS ``SLatFlowModel`` arguments (real: res 64, 1024 ch, 24 blocks, 16 heads, patch 2,
    ``io_block_channels [128]``, ``qk_rms_norm``, ``use_fp16``)."""

    resolution: int
    in_channels: int
    model_channels: int
    cond_channels: int
    out_channels: int
    num_blocks: int
    num_heads: int | None = None
    num_head_channels: int = 64
    mlp_ratio: float = 4.0
    patch_size: int = 2
    num_io_res_blocks: int = 2
    io_block_channels: list[int] | None = None
    pe_mode: str = "ape"
    use_fp16: bool = False
    use_skip_connection: bool = True
    share_mod: bool = False
    qk_rms_norm: bool = False
    qk_rms_norm_cross: bool = False

    def __post_init__(self) -> None:
        if self.pe_mode != "ape":
            raise ConfigError(f"pe_mode {self.pe_mode!r} is not supported (the SLat flow weights use 'ape')")
        if self.heads <= 0 or self.model_channels % self.heads:
            raise ConfigError(f"model_channels {self.model_channels} is not divisible into {self.heads} heads")
        if self.io_block_channels is not None:
            stages = math.log2(self.patch_size)
            if stages != int(stages) or int(stages) != len(self.io_block_channels):
                raise ConfigError(
                    f"patch_size {self.patch_size} needs log2(patch_size) io_block_channels entries, "
                    f"got {self.io_block_channels}"
                )
            if self.num_io_res_blocks < 1:
                raise ConfigError("num_io_res_blocks must be >= 1")

    @property
    def heads(self) -> int:
        return self.num_heads or self.model_channels // self.num_head_channels

    @classmethod
    def from_official(cls, data: dict[str, Any]) -> SLatFlowConfig:
        """From ``{"name": "SLatFlowModel", "args": {...}}`` (``ckpts/SecondStage/ckpts/slat_flow/config.json``)
        or the flat args dict."""
        return config_from_official(cls, data, names=("SLatFlowModel",), ignored=("use_checkpoint",))


class SparseResBlock3d(nn.Module):
    """Time-conditioned sparse ResBlock: ``[updown] -> norm1 -> SiLU -> conv1 -> norm2 * (1 + scale) + shift
    -> SiLU -> conv2 (+ skip)``, with ``(scale, shift) = emb_layers(t_emb)`` per batch item.

    ``norm1`` LayerNorm with affine, ``norm2`` without (eps 1e-6, fp32); 3x3x3 submanifold convs
    (keys ``conv1.conv.weight`` KRSC); ``skip_connection`` SparseLinear when channels change.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int | None = None,
        downsample: bool = False,
        upsample: bool = False,
        *,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if downsample and upsample:
            raise ValueError("a ResBlock cannot both down- and up-sample")
        kw = {"device": device, "dtype": dtype}
        out = out_channels or channels
        self.norm1 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6, **kw)
        self.norm2 = LayerNorm32(out, elementwise_affine=False, eps=1e-6, **kw)
        self.conv1 = SparseConv3d(channels, out, 3, **kw)
        self.conv2 = SparseConv3d(out, out, 3, **kw)
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out, **kw))
        self.skip_connection = SparseLinear(channels, out, **kw) if channels != out else nn.Identity()
        self.updown: nn.Module | None = None
        if downsample:
            self.updown = SparseDownsample(2)
        elif upsample:
            self.updown = SparseUpsample(2)

    def forward(self, x: SparseTensor, emb: torch.Tensor) -> SparseTensor:
        """``x`` feats ``[N, C_in]``, ``emb [B, emb_channels]`` -> feats ``[N', C_out]`` (N' after updown)."""
        scale, shift = self.emb_layers(emb).to(x.dtype).chunk(2, dim=1)  # [B, C_out] each
        if self.updown is not None:
            x = self.updown(x)
        h = self.conv1(x.replace(F.silu(self.norm1(x.feats))))
        f = self.norm2(h.feats)
        f = f * (1 + sparse_batch_broadcast(h, scale)) + sparse_batch_broadcast(h, shift)
        h = self.conv2(h.replace(F.silu(f)))
        skip = x.feats if isinstance(self.skip_connection, nn.Identity) else self.skip_connection(x).feats
        return h.replace(h.feats + skip)


class SLatFlowModel(nn.Module):
    """``forward(x: SparseTensor [N, in], t [B], cond [B, L, cond_channels]) -> SparseTensor [N, out]``
    on the same coordinates (``t`` already scaled by 1000)."""

    def __init__(self, config: SLatFlowConfig, *, device=None, dtype=None) -> None:
        super().__init__()
        self.config = config
        cfg = config
        kw = {"device": device, "dtype": dtype}
        c = cfg.model_channels
        io = cfg.io_block_channels
        self.t_embedder = TimestepEmbedder(c, **kw)
        if cfg.share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(c, 6 * c, **kw))
        self.input_layer = SparseLinear(cfg.in_channels, c if io is None else io[0], **kw)
        self.input_blocks = nn.ModuleList()
        if io is not None:
            for chs, next_chs in zip(io, [*io[1:], c]):
                self.input_blocks.extend(
                    SparseResBlock3d(chs, c, chs, **kw) for _ in range(cfg.num_io_res_blocks - 1)
                )
                self.input_blocks.append(SparseResBlock3d(chs, c, next_chs, downsample=True, **kw))
        self.blocks = nn.ModuleList(
            ModulatedSparseTransformerCrossBlock(
                c, cfg.cond_channels, num_heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, attn_mode="full",
                share_mod=cfg.share_mod, qk_rms_norm=cfg.qk_rms_norm, qk_rms_norm_cross=cfg.qk_rms_norm_cross,
                **kw,
            )
            for _ in range(cfg.num_blocks)
        )
        self.out_blocks = nn.ModuleList()  # registered after `blocks` (state-dict order)
        if io is not None:
            mult = 2 if cfg.use_skip_connection else 1
            for chs, prev_chs in zip(reversed(io), [c, *reversed(io[1:])]):
                self.out_blocks.append(SparseResBlock3d(prev_chs * mult, c, chs, upsample=True, **kw))
                self.out_blocks.extend(
                    SparseResBlock3d(chs * mult, c, chs, **kw) for _ in range(cfg.num_io_res_blocks - 1)
                )
        self.out_layer = SparseLinear(c if io is None else io[0], cfg.out_channels, **kw)
        if cfg.use_fp16 and dtype is None:
            # TRELLIS convert_to_fp16: Linear and sparse-conv weights of the torso; norms stay fp32.
            for part in (self.input_blocks, self.blocks, self.out_blocks):
                convert_to_fp16(part, extra_types=FP16_SPARSE_MODULE_TYPES)

    def torso_dtype(self) -> torch.dtype:
        """Compute dtype of the torso: the dtype of its Linear weights."""
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                return m.weight.dtype
        for m in self.input_blocks.modules():
            if isinstance(m, nn.Linear):
                return m.weight.dtype
        return self.input_layer.weight.dtype

    def forward(self, x: SparseTensor, t: torch.Tensor, cond: torch.Tensor) -> SparseTensor:
        cfg = self.config
        if x.feats.ndim != 2 or x.feats.shape[1] != cfg.in_channels:
            raise ValueError(f"SLat features must be [N, {cfg.in_channels}], got {tuple(x.feats.shape)}")
        dt = self.torso_dtype()
        in_w = self.input_layer.weight
        h = self.input_layer(x.to(in_w.dtype)).to(dt)
        if not torch.is_tensor(t):
            t = torch.tensor([float(t)], device=in_w.device)
        t_emb = self.t_embedder(t.reshape(-1))
        if cfg.share_mod:
            t_emb = self.adaLN_modulation(t_emb)
        t_emb = t_emb.to(dt)
        cond = cond.to(dt)

        skips: list[torch.Tensor] = []
        for blk in self.input_blocks:
            h = blk(h, t_emb)
            skips.append(h.feats)
        # APE of the coarse (down-sampled) voxel coordinates (x, y, z)
        h = h.replace(h.feats + sincos_position_embedding(h.coords[:, 1:], cfg.model_channels).to(dt))
        for blk in self.blocks:
            h = blk(h, t_emb, cond)
        for blk, skip in zip(self.out_blocks, reversed(skips)):
            if cfg.use_skip_connection:
                h = h.replace(torch.cat([h.feats, skip], dim=1))
            h = blk(h, t_emb)
        # official: F.layer_norm (no affine, eps 1e-5) on the torso-dtype features
        f = F.layer_norm(h.feats.float(), h.feats.shape[-1:], eps=1e-5).to(h.dtype)
        out_w = self.out_layer.weight
        out = self.out_layer(h.replace(f.to(x.dtype).to(out_w.dtype)))
        return out.to(x.dtype)
