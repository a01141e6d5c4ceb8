"""Timestep and absolute-position embedders (TRELLIS names: ``t_embedder.mlp.{0,2}``)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["AbsolutePositionEmbedder", "TimestepEmbedder", "sincos_position_embedding", "timestep_embedding"]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """GLIDE sinusoidal embedding ``[cos(t f), sin(t f)]``, ``f_i = max_period^(-i/half)``.

    ``t [N]`` (any float dtype; computed in fp32) -> ``[N, dim]`` fp32 (a zero column is appended when
    ``dim`` is odd).
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )  # [half]
    args = t.reshape(-1, 1).float() * freqs[None]  # [N, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """``t [N] -> [N, hidden]``: sinusoid(256) -> Linear -> SiLU -> Linear (keys ``mlp.0``, ``mlp.2``).

    ``cast_to_t_dtype``: the SyncHuman stage-1 copy rounds the fp32 frequency embedding to ``t.dtype``
    (fp16 in the official pipeline) before the MLP; TRELLIS's own copy does not.
    """

    def __init__(
        self,
        hidden_size: int,
        frequency_embedding_size: int = 256,
        *,
        cast_to_t_dtype: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.cast_to_t_dtype = cast_to_t_dtype
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, device=device, dtype=dtype),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, device=device, dtype=dtype),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freq = timestep_embedding(t, self.frequency_embedding_size)  # [N, 256] fp32
        if self.cast_to_t_dtype and t.is_floating_point():
            freq = freq.to(t.dtype)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))


def sincos_position_embedding(coords: torch.Tensor, channels: int) -> torch.Tensor:
    """TRELLIS absolute position embedding of integer/float positions.

    ``coords [N, D]`` -> ``[N, channels]`` fp32: per axis ``[sin(p f), cos(p f)]`` with
    ``freq_dim = channels // D // 2`` and ``f_i = 1 / 10000^(i / freq_dim)``, axes concatenated in order,
    zero-padded at the end up to ``channels``.
    """
    n, d = coords.shape
    freq_dim = channels // d // 2
    freqs = 1.0 / (10000 ** (torch.arange(freq_dim, dtype=torch.float32, device=coords.device) / freq_dim))
    out = torch.outer(coords.reshape(-1).float(), freqs)  # [N*D, freq_dim]
    emb = torch.cat([torch.sin(out), torch.cos(out)], dim=-1).reshape(n, -1)  # [N, D*2*freq_dim]
    if emb.shape[1] < channels:
        emb = torch.cat([emb, emb.new_zeros(n, channels - emb.shape[1])], dim=-1)
    return emb


class AbsolutePositionEmbedder(nn.Module):
    """``coords [N, in_channels] -> [N, channels]`` (no parameters); see :func:`sincos_position_embedding`."""

    def __init__(self, channels: int, in_channels: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.in_channels = in_channels

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        if coords.ndim != 2 or coords.shape[1] != self.in_channels:
            raise ValueError(f"expected positions [N, {self.in_channels}], got {tuple(coords.shape)}")
        return sincos_position_embedding(coords, self.channels)
