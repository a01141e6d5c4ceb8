"""Sparse-structure decoder (TRELLIS ``SparseStructureDecoder``): 16^3 latent -> 64^3 occupancy logits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..modules import ChannelLayerNorm32, GroupNorm32, convert_to_fp16, pixel_shuffle_3d
from ..modules.config import config_from_official

__all__ = ["SparseStructureDecoder", "SparseStructureDecoderConfig", "occupancy_coords"]


@dataclass
class SparseStructureDecoderConfig:
    """Real values (``ss_dec_conv3d_16l8_fp16``): out 1, latent 8, 2 res blocks, 2 middle, channels
    [512, 128, 32], ``use_fp16`` true, ``norm_type`` "layer"."""

    out_channels: int
    latent_channels: int
    num_res_blocks: int
    channels: list[int] = field(default_factory=list)
    num_res_blocks_middle: int = 2
    norm_type: str = "layer"
    use_fp16: bool = False

    def __post_init__(self) -> None:
        if not self.channels:
            raise ConfigError("SparseStructureDecoder config needs a non-empty 'channels' list")
        if self.norm_type not in ("layer", "group"):
            raise ConfigError(f"norm_type must be 'layer' or 'group', got {self.norm_type!r}")

    @classmethod
    def from_official(cls, data: dict[str, Any]) -> SparseStructureDecoderConfig:
        """From the TRELLIS ``{"name": "SparseStructureDecoder", "args": {...}}`` json or the args dict."""
        return config_from_official(cls, data, names=("SparseStructureDecoder",))


def _norm(norm_type: str, channels: int, **kw: Any) -> nn.Module:
    if norm_type == "group":
        return GroupNorm32(32, channels, **kw)
    return ChannelLayerNorm32(channels, **kw)


class ResBlock3d(nn.Module):
    """``norm1 -> SiLU -> conv1 -> norm2 -> SiLU -> conv2 (+ skip)``; 3x3x3 convs, padding 1."""

    def __init__(self, channels: int, out_channels: int | None = None, norm_type: str = "layer", **kw: Any) -> None:
        super().__init__()
        out = out_channels or channels
        self.norm1 = _norm(norm_type, channels, **kw)
        self.norm2 = _norm(norm_type, out, **kw)
        self.conv1 = nn.Conv3d(channels, out, 3, padding=1, **kw)
        self.conv2 = nn.Conv3d(out, out, 3, padding=1, **kw)
        self.skip_connection = nn.Conv3d(channels, out, 1, **kw) if channels != out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip_connection(x)


class UpsampleBlock3d(nn.Module):
    """``conv`` (C_in -> 8*C_out, 3x3x3) then 3D pixel shuffle x2: ``[B,Ci,n,n,n] -> [B,Co,2n,2n,2n]``."""

    def __init__(self, in_channels: int, out_channels: int, **kw: Any) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels * 8, 3, padding=1, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle_3d(self.conv(x), 2)


class SparseStructureDecoder(nn.Module):
    """``x [B, latent, 16, 16, 16] -> logits [B, out, 64, 64, 64]`` (one x2 upsample per channel step)."""

    def __init__(self, config: SparseStructureDecoderConfig, *, device=None, dtype=None) -> None:
        super().__init__()
        self.config = config
        kw = {"device": device, "dtype": dtype}
        ch = config.channels
        nt = config.norm_type
        self.input_layer = nn.Conv3d(config.latent_channels, ch[0], 3, padding=1, **kw)
        self.middle_block = nn.Sequential(*[ResBlock3d(ch[0], ch[0], nt, **kw) for _ in range(config.num_res_blocks_middle)])
        blocks: list[nn.Module] = []
        for i, c in enumerate(ch):
            blocks += [ResBlock3d(c, c, nt, **kw) for _ in range(config.num_res_blocks)]
            if i < len(ch) - 1:
                blocks.append(UpsampleBlock3d(c, ch[i + 1], **kw))
        self.blocks = nn.ModuleList(blocks)
        self.out_layer = nn.Sequential(
            _norm(nt, ch[-1], **kw), nn.SiLU(), nn.Conv3d(ch[-1], config.out_channels, 3, padding=1, **kw)
        )
        if config.use_fp16 and dtype is None:
            # TRELLIS convert_to_fp16: convs of blocks + middle_block to fp16 (norm params stay fp32).
            convert_to_fp16(self.blocks)
            convert_to_fp16(self.middle_block)

    def torso_dtype(self) -> torch.dtype:
        """Compute dtype of middle_block/blocks: the dtype of their conv weights."""
        for m in (*self.middle_block, *self.blocks):
            conv = getattr(m, "conv1", None) or getattr(m, "conv", None)
            if conv is not None:
                return conv.weight.dtype
        return self.input_layer.weight.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.latent_channels:
            raise ValueError(f"latent must be [B, {cfg.latent_channels}, X, Y, Z], got {tuple(x.shape)}")
        h = self.input_layer(x.to(self.input_layer.weight.dtype))
        h = h.to(self.torso_dtype())
        h = self.middle_block(h)
        for blk in self.blocks:
            h = blk(h)
        h = h.to(x.dtype)
        w = self.out_layer[2].weight
        return self.out_layer(h.to(w.dtype)).to(x.dtype)


def occupancy_coords(logits: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Active voxels of decoder logits ``[B, 1, X, Y, Z]`` -> ``[N, 4]`` int32 ``(batch, x, y, z)``.

    Occupied = ``logit > threshold`` (official: > 0). Rows are in row-major (batch, x, y, z) order, as
    ``torch.argwhere(logits > 0)[:, [0, 2, 3, 4]]`` gives them.
    """
    if logits.ndim != 5 or logits.shape[1] != 1:
        raise ValueError(f"occupancy logits must be [B, 1, X, Y, Z], got {tuple(logits.shape)}")
    return torch.argwhere(logits[:, 0] > threshold).to(torch.int32)
