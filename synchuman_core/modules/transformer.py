"""Dense transformer blocks of the TRELLIS flow DiTs (keys as the official state dicts)."""

from __future__ import annotations

import torch
from torch import nn

from .attention import MultiHeadAttention
from .norms import LayerNorm32

__all__ = ["FeedForwardNet", "ModulatedTransformerCrossBlock", "modulate"]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation ``x * (1 + scale) + shift``; ``x [B, L, C]``, ``shift/scale [B|1, C]``.

    The batch of the modulation may be 1 while ``x`` has batch > 1 (stage 1 passes one timestep for
    the CFG pair); it then broadcasts.
    """
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class FeedForwardNet(nn.Module):
    """``Linear(C, C*r) -> GELU(tanh) -> Linear(C*r, C)``; keys ``mlp.0``, ``mlp.2``."""

    def __init__(self, channels: int, mlp_ratio: float = 4.0, *, device=None, dtype=None) -> None:
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden, device=device, dtype=dtype),
            nn.GELU(approximate="tanh"),
            nn.Linear(hidden, channels, device=device, dtype=dtype),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class ModulatedTransformerCrossBlock(nn.Module):
    """DiT block: adaLN-modulated self-attention, ungated cross-attention, adaLN-modulated MLP.

    ``norm1``/``norm3`` LayerNorm without affine, ``norm2`` (before cross-attention) with affine; all eps
    1e-6, fp32. ``adaLN_modulation = SiLU -> Linear(C, 6C)`` gives (shift, scale, gate) for attention and
    MLP (absent with ``share_mod``, where the caller passes the 6C modulation itself).
    """

    def __init__(
        self,
        channels: int,
        ctx_channels: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qk_rms_norm: bool = False,
        qk_rms_norm_cross: bool = False,
        qkv_bias: bool = True,
        share_mod: bool = False,
        *,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.share_mod = share_mod
        self.norm1 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6, **kw)
        self.norm2 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6, **kw)
        self.norm3 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6, **kw)
        self.self_attn = MultiHeadAttention(
            channels, num_heads, type="self", qkv_bias=qkv_bias, qk_rms_norm=qk_rms_norm, **kw
        )
        self.cross_attn = MultiHeadAttention(
            channels, num_heads, ctx_channels=ctx_channels, type="cross", qkv_bias=qkv_bias,
            qk_rms_norm=qk_rms_norm_cross, **kw,
        )
        self.mlp = FeedForwardNet(channels, mlp_ratio, **kw)
        if not share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 6 * channels, **kw))

    def forward(self, x: torch.Tensor, mod: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``x [B, L, C]``, ``mod [B|1, C]`` (``[B|1, 6C]`` with share_mod), ``context [B, Lc, ctx]``."""
        if not self.share_mod:
            mod = self.adaLN_modulation(mod)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)
        h = self.self_attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + h * gate_msa.unsqueeze(1)
        x = x + self.cross_attn(self.norm2(x), context)
        h = self.mlp(modulate(self.norm3(x), shift_mlp, scale_mlp))
        return x + h * gate_mlp.unsqueeze(1)
