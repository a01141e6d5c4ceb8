"""Sparse transformer blocks of the stage-2 models (TRELLIS names and state-dict keys)."""

from __future__ import annotations

import torch
from torch import nn

from ..modules.norms import LayerNorm32
from .attention import SparseMultiHeadAttention
from .nn import SparseGELU, SparseLinear
from .tensor import SparseTensor, sparse_batch_broadcast

__all__ = [
    "ModulatedSparseTransformerCrossBlock",
    "SparseFeedForwardNet",
    "SparseTransformerBlock",
    "sparse_modulate",
]


def sparse_modulate(x: SparseTensor, shift: torch.Tensor, scale: torch.Tensor) -> SparseTensor:
    """adaLN modulation per batch item: ``x * (1 + scale) + shift`` with ``shift, scale [B|1, C]``."""
    if shift.shape[0] == x.batch_size and x.batch_size > 1:
        shift = sparse_batch_broadcast(x, shift)
        scale = sparse_batch_broadcast(x, scale)
    return x.replace(torch.addcmul(shift, x.feats, 1 + scale))


def _gate(x: SparseTensor, gate: torch.Tensor) -> SparseTensor:
    if gate.shape[0] == x.batch_size and x.batch_size > 1:
        gate = sparse_batch_broadcast(x, gate)
    return x.replace(x.feats * gate)


class SparseFeedForwardNet(nn.Module):
    """``SparseLinear(C, C*r) -> GELU(tanh) -> SparseLinear(C*r, C)``; keys ``mlp.0``, ``mlp.2``."""

    def __init__(
        self,
        channels: int,
        mlp_ratio: float = 4.0,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(
            SparseLinear(channels, hidden, device=device, dtype=dtype),
            SparseGELU(approximate="tanh"),
            SparseLinear(hidden, channels, device=device, dtype=dtype),
        )

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.mlp(x)


class SparseTransformerBlock(nn.Module):
    """Pre-norm sparse transformer block: ``x += Attn(LN1(x))``; ``x += MLP(LN2(x))``.

    ``norm1``/``norm2`` are fp32 LayerNorms (eps 1e-6, affine only with ``ln_affine``). The two halves
    are separate methods (:meth:`_attn_part`, :meth:`_mlp_part`) so that models can insert steps between
    them (the SyncHuman decoders add a multiview-feature injection there).

    ``attn_mode`` ``"full"`` or ``"windowed"``/``"swin"`` (with ``window_size`` and ``shift_window``).
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        attn_mode: str = "full",
        window_size: int | None = None,
        shift_window: int | tuple[int, int, int] | None = None,
        qkv_bias: bool = True,
        qk_rms_norm: bool = False,
        ln_affine: bool = False,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.norm1 = LayerNorm32(channels, elementwise_affine=ln_affine, eps=1e-6, **fk)
        self.norm2 = LayerNorm32(channels, elementwise_affine=ln_affine, eps=1e-6, **fk)
        self.attn = SparseMultiHeadAttention(
            channels,
            num_heads,
            attn_mode=attn_mode,
            window_size=window_size,
            shift_window=shift_window,
            qkv_bias=qkv_bias,
            qk_rms_norm=qk_rms_norm,
            **fk,
        )
        self.mlp = SparseFeedForwardNet(channels, mlp_ratio, **fk)

    def _attn_part(self, x: SparseTensor) -> SparseTensor:
        h = x.replace(self.norm1(x.feats))
        return x + self.attn(h)

    def _mlp_part(self, x: SparseTensor) -> SparseTensor:
        h = x.replace(self.norm2(x.feats))
        return x + self.mlp(h)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self._mlp_part(self._attn_part(x))


class ModulatedSparseTransformerCrossBlock(nn.Module):
    """DiT block on sparse voxels (SLat flow): adaLN-modulated self-attention, cross-attention to a
    dense context, adaLN-modulated MLP.

    ``norm1``/``norm3`` without affine, ``norm2`` (before cross-attention) with affine; eps 1e-6, fp32.
    ``adaLN_modulation = SiLU -> Linear(C, 6C)`` gives (shift, scale, gate) of attention and MLP; with
    ``share_mod`` it is absent and ``mod`` already holds the ``6C`` values.
    ``forward(x [N, C], mod [B|1, C], context [B, L, ctx_channels])``.
    """

    def __init__(
        self,
        channels: int,
        ctx_channels: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        attn_mode: str = "full",
        window_size: int | None = None,
        shift_window: int | tuple[int, int, int] | None = None,
        qkv_bias: bool = True,
        qk_rms_norm: bool = False,
        qk_rms_norm_cross: bool = False,
        share_mod: bool = False,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.share_mod = share_mod
        self.norm1 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6, **fk)
        self.norm2 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6, **fk)
        self.norm3 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6, **fk)
        self.self_attn = SparseMultiHeadAttention(
            channels,
            num_heads,
            type="self",
            attn_mode=attn_mode,
            window_size=window_size,
            shift_window=shift_window,
            qkv_bias=qkv_bias,
            qk_rms_norm=qk_rms_norm,
            **fk,
        )
        self.cross_attn = SparseMultiHeadAttention(
            channels,
            num_heads,
            ctx_channels=ctx_channels,
            type="cross",
            attn_mode="full",
            qkv_bias=qkv_bias,
            qk_rms_norm=qk_rms_norm_cross,
            **fk,
        )
        self.mlp = SparseFeedForwardNet(channels, mlp_ratio, **fk)
        if not share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 6 * channels, bias=True, **fk))

    def forward(self, x: SparseTensor, mod: torch.Tensor, context: torch.Tensor) -> SparseTensor:
        if not self.share_mod:
            mod = self.adaLN_modulation(mod)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)  # [B|1, C] each
        h = x.replace(self.norm1(x.feats))
        h = sparse_modulate(h, shift_msa, scale_msa)
        h = _gate(self.self_attn(h), gate_msa)
        x = x + h
        h = x.replace(self.norm2(x.feats))
        x = x + self.cross_attn(h, context)
        h = x.replace(self.norm3(x.feats))
        h = sparse_modulate(h, shift_mlp, scale_mlp)
        h = _gate(self.mlp(h), gate_mlp)
        return x + h
