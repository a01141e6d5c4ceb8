"""Attention over sparse voxels: full (per batch item), windowed / shifted-window (swin), and cross.

Every kernel call goes through :func:`synchuman_core.attention.varlen_attention` with packed
``[T, H, D]`` tensors: a batch item (full attention) or a window (windowed attention) is one sequence.
:class:`SparseMultiHeadAttention` has TRELLIS's parameter names (``to_qkv`` / ``to_q``, ``to_kv``,
``to_out``, ``q_rms_norm``, ``k_rms_norm``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import varlen_attention
from ..errors import ConfigError
from ..modules.norms import MultiHeadRMSNorm
from .tensor import SparseTensor

__all__ = [
    "SparseMultiHeadAttention",
    "WindowPartition",
    "sparse_cross_attention",
    "sparse_self_attention",
    "sparse_windowed_self_attention",
    "window_partition",
]

Triple = tuple[int, int, int]


def _triple(v: int | tuple[int, ...] | None, name: str, default: int) -> Triple:
    if v is None:
        v = default
    t = (v, v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 3:
        raise ConfigError(f"{name} must be an int or 3 ints, got {v!r}")
    return tuple(int(i) for i in t)  # type: ignore[return-value]


# ----------------------------------------------------------------------------------- functional


def sparse_self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, x: SparseTensor) -> torch.Tensor:
    """Full self-attention within each batch item of ``x``: ``q, k, v [N, H, D]`` -> ``[N, H, D]``."""
    lens = x.seq_lens()
    return varlen_attention(q, k, v, lens, lens)


def sparse_cross_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    x: SparseTensor,
    kv_lens: list[int] | None = None,
) -> torch.Tensor:
    """Voxels of batch item ``b`` attend to context item ``b``.

    ``q [N, H, D]`` (rows of ``x``); ``k, v`` either dense ``[B, L, H, D]`` or packed ``[M, H, D]`` with
    ``kv_lens`` per item. Returns ``[N, H, D]``.
    """
    if kv_lens is None:
        if k.ndim != 4 or k.shape[0] != x.batch_size:
            raise ValueError(f"dense context must be [B={x.batch_size}, L, H, D], got {tuple(k.shape)}")
        b, L = k.shape[:2]
        kv_lens = [L] * b
        k = k.reshape(b * L, *k.shape[2:])
        v = v.reshape(b * L, *v.shape[2:])
    return varlen_attention(q, k, v, x.seq_lens(), kv_lens)


@dataclass(frozen=True)
class WindowPartition:
    """Voxels grouped by window: ``feats[fwd]`` lists windows one after another (``seq_lens`` rows
    each); ``out[bwd]`` restores the original order."""

    fwd: torch.Tensor
    bwd: torch.Tensor
    seq_lens: list[int]


def _compute_window_partition(coords: torch.Tensor, window: Triple, shift: Triple) -> WindowPartition:
    """Window of a voxel = ``(batch, (xyz + shift) // window)`` (TRELLIS ``calc_window_partition``)."""
    c = coords.long()
    if c.shape[0] == 0:
        e = torch.zeros(0, dtype=torch.long, device=c.device)
        return WindowPartition(e, e, [])
    w = torch.tensor(window, device=c.device)
    cell = torch.div(c[:, 1:] + torch.tensor(shift, device=c.device), w, rounding_mode="floor")  # [N, 3]
    cell = cell - cell.min(0).values
    n = (cell.max(0).values + 1).tolist()
    wid = ((c[:, 0] * n[0] + cell[:, 0]) * n[1] + cell[:, 1]) * n[2] + cell[:, 2]
    wid_sorted, fwd = torch.sort(wid, stable=True)
    bwd = torch.empty_like(fwd)
    bwd[fwd] = torch.arange(fwd.shape[0], device=fwd.device)
    _, counts = torch.unique_consecutive(wid_sorted, return_counts=True)
    return WindowPartition(fwd, bwd, counts.tolist())


def window_partition(x: SparseTensor, window_size: Triple, shift_window: Triple) -> WindowPartition:
    """The (cached) window partition of ``x``'s coordinates."""
    key = ("window", window_size, shift_window)
    part = x.get_spatial_cache(key)
    if part is None:
        part = _compute_window_partition(x.coords, window_size, shift_window)
        x.register_spatial_cache(key, part)
    return part


def sparse_windowed_self_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    x: SparseTensor,
    window_size: int | Triple,
    shift_window: int | Triple = 0,
) -> torch.Tensor:
    """Self-attention inside non-overlapping windows of ``window_size^3`` voxels, the grid shifted by
    ``shift_window`` (TRELLIS ``sparse_windowed_scaled_dot_product_self_attention``; windows never
    span batch items and hold a variable number of voxels). ``q, k, v [N, H, D]`` -> ``[N, H, D]``."""
    part = window_partition(x, _triple(window_size, "window_size", 1), _triple(shift_window, "shift_window", 0))
    fwd = part.fwd
    out = varlen_attention(q[fwd], k[fwd], v[fwd], part.seq_lens, part.seq_lens)
    return out[part.bwd]


# ----------------------------------------------------------------------------------- module


class SparseMultiHeadAttention(nn.Module):
    """Multi-head attention on a :class:`SparseTensor` (TRELLIS ``SparseMultiHeadAttention``).

    Args:
        channels: model width ``C`` (``num_heads * head_dim``).
        num_heads: number of heads.
        ctx_channels: width of the cross-attention context (default ``C``).
        type: ``"self"`` (parameters ``to_qkv``) or ``"cross"`` (``to_q`` on voxels, ``to_kv`` on context).
        attn_mode: ``"full"`` (each batch item) or ``"windowed"`` (alias ``"swin"``: windows of
            ``window_size^3`` shifted by ``shift_window``). Cross attention is always full.
        window_size, shift_window: windowed attention geometry.
        qkv_bias: biases of the input projections.
        qk_rms_norm: per-head RMS norm of q and k (``q_rms_norm.gamma``, ``k_rms_norm.gamma [H, D]``).

    ``forward(x [N, C], context=None)`` where ``context`` is a dense ``[B, L, ctx_channels]`` tensor or a
    SparseTensor for cross attention. Returns a SparseTensor ``[N, C]``.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        ctx_channels: int | None = None,
        type: str = "self",  # noqa: A002 - TRELLIS argument name
        attn_mode: str = "full",
        window_size: int | None = None,
        shift_window: int | Triple | None = None,
        qkv_bias: bool = True,
        qk_rms_norm: bool = False,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if channels % num_heads:
            raise ConfigError(f"channels {channels} is not divisible by num_heads {num_heads}")
        if type not in ("self", "cross"):
            raise ConfigError(f"attention type must be 'self' or 'cross', got {type!r}")
        if attn_mode == "swin":
            attn_mode = "windowed"
        if attn_mode not in ("full", "windowed"):
            raise ConfigError(f"sparse attn_mode must be 'full', 'windowed' or 'swin', got {attn_mode!r}")
        if type == "cross" and attn_mode != "full":
            raise ConfigError("cross attention only supports attn_mode='full'")
        if attn_mode == "windowed" and not window_size:
            raise ConfigError("windowed sparse attention needs a window_size")
        fk = {"device": device, "dtype": dtype}
        self.channels = channels
        self.ctx_channels = ctx_channels if ctx_channels is not None else channels
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self._type = type
        self.attn_mode = attn_mode
        self.window_size = window_size
        self.shift_window = shift_window
        self.qk_rms_norm = qk_rms_norm
        if type == "self":
            self.to_qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias, **fk)
        else:
            self.to_q = nn.Linear(channels, channels, bias=qkv_bias, **fk)
            self.to_kv = nn.Linear(self.ctx_channels, 2 * channels, bias=qkv_bias, **fk)
        if qk_rms_norm:
            self.q_rms_norm = MultiHeadRMSNorm(self.head_dim, num_heads, **fk)
            self.k_rms_norm = MultiHeadRMSNorm(self.head_dim, num_heads, **fk)
        self.to_out = nn.Linear(channels, channels, **fk)

    def _self_attention(self, x: SparseTensor) -> torch.Tensor:
        n = x.num_voxels
        qkv = F.linear(x.feats, self.to_qkv.weight, self.to_qkv.bias).view(n, 3, self.num_heads, self.head_dim)
        part = None
        if self.attn_mode == "windowed":  # reorder once, window after window (the norms are per row)
            window = _triple(self.window_size, "window_size", 1)
            part = window_partition(x, window, _triple(self.shift_window, "shift_window", 0))
            qkv = qkv[part.fwd]
        q, k, v = qkv.unbind(dim=1)  # [N, H, D] each
        if self.qk_rms_norm:
            q, k = self.q_rms_norm(q), self.k_rms_norm(k)
        if part is None:
            return sparse_self_attention(q, k, v, x)
        return varlen_attention(q, k, v, part.seq_lens, part.seq_lens)[part.bwd]

    def _cross_attention(self, x: SparseTensor, context: torch.Tensor | SparseTensor) -> torch.Tensor:
        n, h, d = x.num_voxels, self.num_heads, self.head_dim
        q = F.linear(x.feats, self.to_q.weight, self.to_q.bias).view(n, h, d)
        if isinstance(context, SparseTensor):
            kv = F.linear(context.feats, self.to_kv.weight, self.to_kv.bias)
            kv = kv.view(kv.shape[0], 2, h, d)
            kv_lens: list[int] | None = context.seq_lens()
        else:
            if context.ndim != 3:
                raise ValueError(f"cross-attention context must be [B, L, C], got {tuple(context.shape)}")
            kv = F.linear(context, self.to_kv.weight, self.to_kv.bias)
            kv = kv.view(*context.shape[:2], 2, h, d)
            kv_lens = None
        k, v = kv.unbind(dim=-3)
        if self.qk_rms_norm:
            q, k = self.q_rms_norm(q), self.k_rms_norm(k)
        return sparse_cross_attention(q, k, v, x, kv_lens)

    def forward(self, x: SparseTensor, context: torch.Tensor | SparseTensor | None = None) -> SparseTensor:
        if self._type == "self":
            h = self._self_attention(x)
        else:
            if context is None:
                raise ValueError("cross attention needs a context")
            h = self._cross_attention(x, context)
        h = h.reshape(x.num_voxels, self.channels)
        return x.replace(F.linear(h, self.to_out.weight, self.to_out.bias))

    def extra_repr(self) -> str:
        s = f"type={self._type}, attn_mode={self.attn_mode}, heads={self.num_heads}"
        if self.attn_mode == "windowed":
            s += f", window_size={self.window_size}, shift_window={self.shift_window}"
        return s

