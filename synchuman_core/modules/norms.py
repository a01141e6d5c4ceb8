"""Normalisation layers that compute in fp32 whatever the parameter / activation dtype (TRELLIS names).

The official models run these layers on fp16 activations (stage 1 even with fp16 parameters under
autocast); every layer here upcasts input *and* parameters to fp32, normalises, and returns the input
dtype, so the same code works with or without autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ChannelLayerNorm32", "GroupNorm32", "LayerNorm32", "MultiHeadRMSNorm"]


def _f32(p: torch.Tensor | None) -> torch.Tensor | None:
    return None if p is None else p.float()


class LayerNorm32(nn.LayerNorm):
    """LayerNorm over the last dim, computed in fp32: ``[..., C] -> [..., C]`` (input dtype)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.float(), self.normalized_shape, _f32(self.weight), _f32(self.bias), self.eps)
        return y.to(x.dtype)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in fp32: ``[B, C, *spatial] -> [B, C, *spatial]`` (input dtype)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.group_norm(x.float(), self.num_groups, _f32(self.weight), _f32(self.bias), self.eps)
        return y.to(x.dtype)


class ChannelLayerNorm32(LayerNorm32):
    """LayerNorm over the channel dim of a channel-first tensor ``[B, C, *spatial]``, in fp32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nd = x.dim()
        h = x.permute(0, *range(2, nd), 1)  # [B, *spatial, C]
        h = super().forward(h)
        return h.permute(0, nd - 1, *range(1, nd - 1)).contiguous()  # [B, C, *spatial]


class MultiHeadRMSNorm(nn.Module):
    """Per-head RMS norm of q/k: ``normalize(x, dim=-1) * gamma * sqrt(dim)`` in fp32.

    ``x [..., heads, dim]``; parameter ``gamma [heads, dim]`` (TRELLIS name).
    """

    def __init__(self, dim: int, heads: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.scale = math.sqrt(dim)
        self.gamma = nn.Parameter(torch.ones(heads, dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (F.normalize(x.float(), dim=-1) * self.gamma.float() * self.scale).to(x.dtype)
