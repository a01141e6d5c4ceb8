"""Dense multi-head attention with TRELLIS parameter names (``to_qkv`` | ``to_q``/``to_kv``, ``to_out``).

The pattern lives here; the kernel is :func:`synchuman_core.attention.attention`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..attention import attention
from .norms import MultiHeadRMSNorm

__all__ = ["MultiHeadAttention"]


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention over ``[B, L, C]`` tokens.

    Self: ``to_qkv (3C, C)``. Cross: ``to_q (C, C)``, ``to_kv (2C, ctx)``. Optional per-head RMS norm of
    q and k (``q_rms_norm.gamma``, ``k_rms_norm.gamma`` ``[heads, C/heads]``) before the softmax.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        ctx_channels: int | None = None,
        type: Literal["self", "cross"] = "self",  # noqa: A002 - TRELLIS argument name
        qkv_bias: bool = True,
        qk_rms_norm: bool = False,
        *,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels {channels} not divisible by num_heads {num_heads}")
        if type not in ("self", "cross"):
            raise ValueError(f"attention type must be 'self' or 'cross', got {type!r}")
        self.channels = channels
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self.ctx_channels = ctx_channels if ctx_channels is not None else channels
        self.is_cross = type == "cross"
        self.qk_rms_norm = qk_rms_norm
        kw = {"device": device, "dtype": dtype}
        if self.is_cross:
            self.to_q = nn.Linear(channels, channels, bias=qkv_bias, **kw)
            self.to_kv = nn.Linear(self.ctx_channels, 2 * channels, bias=qkv_bias, **kw)
        else:
            self.to_qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias, **kw)
        if qk_rms_norm:
            self.q_rms_norm = MultiHeadRMSNorm(self.head_dim, num_heads, **kw)
            self.k_rms_norm = MultiHeadRMSNorm(self.head_dim, num_heads, **kw)
        self.to_out = nn.Linear(channels, channels, **kw)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, L, C]`` (+ ``context [B, Lc, ctx]`` for cross) -> ``[B, L, C]``."""
        b, n, _ = x.shape
        heads = self.num_heads
        if self.is_cross:
            if context is None:
                raise ValueError("cross-attention needs a context tensor")
            q = self.to_q(x).reshape(b, n, heads, -1)  # [B, L, H, D]
            k, v = self.to_kv(context).reshape(context.shape[0], context.shape[1], 2, heads, -1).unbind(2)
        else:
            q, k, v = self.to_qkv(x).reshape(b, n, 3, heads, -1).unbind(2)  # 3 x [B, L, H, D]
        if self.qk_rms_norm:
            q = self.q_rms_norm(q)
            k = self.k_rms_norm(k)
        h = attention(q, k, v)  # [B, L, H, D]
        return self.to_out(h.reshape(b, n, -1))
