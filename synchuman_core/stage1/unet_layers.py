"""Layers of the stage-1 multiview UNet (PSHuman / Era3D heritage) with diffusers parameter names.

Everything here is written for the SyncHuman checkpoint: module and parameter names follow
diffusers 0.29 (``norm1``, ``conv1``, ``time_emb_proj``, ``attn1.to_q``, ``ff.net.0.proj`` ...) plus the
PSHuman additions ``norm_mv`` / ``attn_mv``. The attention *patterns* live in one class each:

* :class:`JointDomainSelfAttention` (``attn1``): each image attends jointly over its own tokens and the
  tokens of its twin in the other domain (normal <-> color), then the face close-up output is blended
  into the front view (docs/ARCHITECTURE.md §4.2).
* :class:`RowwiseMultiviewAttention` (``attn_mv``): every image row attends to the same row of the four
  body views (§4.1).
* :class:`PromptCrossAttention` (``attn2``): plain cross-attention to the image's own prompt tokens.

Every kernel call goes through :func:`synchuman_core.attention.attention`.

Batch layout assumed by the multiview parts (documented once here): the UNet batch is
``[domain (2: normal, color)] x [group G] x [view V]`` flattened in that order, i.e. index
``domain*G*V + g*V + v``; the official CFG run has ``G = 2`` (uncond, cond) and ``V = 5`` (four body views
then the face close-up). Any ``G >= 1`` is valid: groups never interact, so the two CFG halves may also be
run one after the other with ``G = 1``. The two domains must be in the same call (``attn1`` pairs them).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import attention
from ..modules.norms import GroupNorm32, LayerNorm32
from ..modules.spatial import nearest2x_conv3x3

__all__ = [
    "Downsample2D",
    "GEGLUFeedForward",
    "JointDomainSelfAttention",
    "PromptCrossAttention",
    "ResnetBlock2D",
    "RowwiseMultiviewAttention",
    "TimestepEmbedding",
    "TransformerMV2DModel",
    "Upsample2D",
    "blend_face_into_front",
    "map_rows",
    "sinusoidal_timestep_embedding",
]

# Row-chunking budget for wide per-token layers (GEGLU feed-forward): at most this many elements in the
# widest intermediate tensor per call. Math is unchanged (the layers act on each token independently).
_ROW_CHUNK_ELEMENTS = 1 << 25


def map_rows(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, width: int) -> torch.Tensor:
    """Apply a per-token function to ``x [..., C]`` in row chunks so that an intermediate of ``width``
    channels per token stays under a fixed element budget. Result identical to ``fn(x)`` up to
    matmul blocking."""
    rows = x.numel() // x.shape[-1]
    step = max(1, _ROW_CHUNK_ELEMENTS // max(1, width))
    if rows <= step:
        return fn(x)
    flat = x.reshape(rows, x.shape[-1])
    out = torch.cat([fn(c) for c in flat.split(step, dim=0)], dim=0)
    return out.reshape(*x.shape[:-1], out.shape[-1])


# ------------------------------------------------------------------------------------------------
# Embeddings
# ------------------------------------------------------------------------------------------------


def sinusoidal_timestep_embedding(
    timesteps: torch.Tensor, dim: int, *, flip_sin_to_cos: bool = True, freq_shift: float = 0.0,
    max_period: float = 10000.0,
) -> torch.Tensor:
    """diffusers ``Timesteps``: ``t [N]`` (any dtype, computed in fp32) -> ``[N, dim]`` fp32.

    ``f_i = exp(-ln(max_period) * i / (dim/2 - freq_shift))``; ``[sin(t f), cos(t f)]``, swapped to
    ``[cos, sin]`` with ``flip_sin_to_cos``.
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(exponent / (half - freq_shift))  # [half]
    args = timesteps.reshape(-1, 1).float() * freqs[None]  # [N, half]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """``Linear(in, C) -> SiLU -> Linear(C, C)``; keys ``linear_1``, ``linear_2`` (diffusers)."""

    def __init__(self, in_channels: int, time_embed_dim: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, time_embed_dim, device=device, dtype=dtype)
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


# ------------------------------------------------------------------------------------------------
# Convolutional blocks
# ------------------------------------------------------------------------------------------------


class ResnetBlock2D(nn.Module):
    """diffusers ``ResnetBlock2D`` (pre-norm, additive time embedding, output scale 1).

    ``x [B, Cin, H, W]``, ``temb [B, T]`` -> ``[B, Cout, H, W]``:
    GN -> SiLU -> conv3x3 -> ``+ time_emb_proj(SiLU(temb))`` -> GN -> SiLU -> conv3x3 -> ``+ shortcut(x)``
    (1x1 ``conv_shortcut`` when ``Cin != Cout``).
    """

    def __init__(
        self, in_channels: int, out_channels: int, temb_channels: int, *, groups: int = 32, eps: float = 1e-5,
        device=None, dtype=None,
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.norm1 = GroupNorm32(groups, in_channels, eps=eps, affine=True, **kw)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, **kw)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels, **kw)
        self.norm2 = GroupNorm32(groups, out_channels, eps=eps, affine=True, **kw)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, **kw)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1, **kw) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        # in-place ops only on tensors created here (fewer full-size temporaries; same arithmetic)
        h = self.conv1(F.silu(self.norm1(x), inplace=True))
        h += self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h), inplace=True))
        if self.conv_shortcut is not None:
            return h.add_(self.conv_shortcut(x))
        return h.add_(x)


class Downsample2D(nn.Module):
    """3x3 conv, stride 2, padding 1 (key ``conv``): ``[B, C, H, W] -> [B, C, H/2, W/2]``."""

    def __init__(self, channels: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample2D(nn.Module):
    """Nearest x2 then 3x3 conv (key ``conv``): ``[B, C, H, W] -> [B, C, 2H, 2W]``.

    The x2 case runs as one 2x2 convolution with four output phases on the low-resolution input
    (:func:`~synchuman_core.modules.spatial.nearest2x_conv3x3`), interleaved into the result: the same sums of the same products
    (up to the order of the fp32 additions) with 0.46x the multiply-adds and no up-sampled copy.
    ``size`` (an explicit output size, not exactly x2) uses the plain interpolate + conv.
    """

    def __init__(self, channels: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if size is not None and tuple(size) != (2 * x.shape[-2], 2 * x.shape[-1]):
            return self.conv(F.interpolate(x, size=size, mode="nearest"))
        return nearest2x_conv3x3(x, self.conv)


# ------------------------------------------------------------------------------------------------
# Feed-forward
# ------------------------------------------------------------------------------------------------


class _GEGLU(nn.Module):
    """``proj(x) = [h, gate]`` -> ``h * gelu(gate)`` (exact GELU); key ``proj``."""

    def __init__(self, dim: int, inner: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)
        g = F.gelu(gate)  # a fresh contiguous tensor: the product goes into it
        return g.mul_(h)


class GEGLUFeedForward(nn.Module):
    """diffusers ``FeedForward(dim)`` with GEGLU, mult 4: keys ``net.0.proj (8C, C)``, ``net.2 (C, 4C)``.

    ``net.1`` is the (inactive) dropout of the original; it holds no parameters. Tokens are processed
    in row chunks to bound the ``[rows, 8C]`` intermediate.
    """

    def __init__(self, dim: int, mult: int = 4, *, device=None, dtype=None) -> None:
        super().__init__()
        inner = dim * mult
        self.net = nn.ModuleList(
            [_GEGLU(dim, inner, device=device, dtype=dtype), nn.Identity(),
             nn.Linear(inner, dim, device=device, dtype=dtype)]
        )
        self._width = 2 * inner

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., C] -> [..., C]``."""
        return map_rows(self._rows, x, self._width)


# ------------------------------------------------------------------------------------------------
# Attention patterns (diffusers ``Attention`` parameter names: to_q/to_k/to_v no bias, to_out.0 bias)
# ------------------------------------------------------------------------------------------------


class _AttentionProjections(nn.Module):
    def __init__(
        self, query_dim: int, heads: int, dim_head: int, kv_dim: int | None = None, *, device=None, dtype=None
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        inner = heads * dim_head
        self.heads = heads
        self.dim_head = dim_head
        self.to_q = nn.Linear(query_dim, inner, bias=False, **kw)
        self.to_k = nn.Linear(kv_dim or query_dim, inner, bias=False, **kw)
        self.to_v = nn.Linear(kv_dim or query_dim, inner, bias=False, **kw)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim, **kw)])

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Self-attention projections ``[B, N, C] -> 3 x [B, N, heads, dim_head]``."""
        b, n, _ = x.shape
        q = self.to_q(x).view(b, n, self.heads, self.dim_head)
        k = self.to_k(x).view(b, n, self.heads, self.dim_head)
        v = self.to_v(x).view(b, n, self.heads, self.dim_head)
        return q, k, v


def blend_face_into_front(out: torch.Tensor, hw: tuple[int, int], num_views: int, *, inplace: bool = False) -> torch.Tensor:
    """PSHuman face injection, applied to the ``attn1`` output of every domain (docs/ARCHITECTURE.md §4.2).

    ``out [B, H*W, C]`` with batch ``(... group, view)``, ``V = num_views`` views, the last one being the
    face close-up. With ``Hs = H // 3`` and ``He = H - Hs``, the front view's (view 0) region rows
    ``[0, Hs)``, columns ``[Hs, He)`` becomes ``0.5 * itself + 0.5 * bilinear(face output -> Hs x Hs)``
    (align_corners False). The face close-up covers exactly that region of the front image (the
    768-px crop box (256, 0, 512, 256)). Square maps with H divisible by 3 only (every UNet level of a
    96-latent run: 96, 48, 24, 12). Returns a new tensor, or ``out`` itself (modified) with ``inplace``.
    """
    b, n, c = out.shape
    h, w = hw
    hs = h // 3
    he = h - hs
    if h != w or he - hs != hs:
        raise ValueError(f"face blend needs square feature maps with a side divisible by 3, got {h}x{w}")
    if not inplace:
        out = out.clone()
    grid = out.view(b // num_views, num_views, h, w, c)  # [G', V, H, W, C] (view of `out`)
    face = grid[:, num_views - 1].permute(0, 3, 1, 2)  # [G', C, H, W]
    face = F.interpolate(face, size=(hs, hs), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    region = grid[:, 0, :hs, hs:he]  # [G', Hs, Hs, C]
    region.mul_(0.5).add_(face, alpha=0.5)
    return out


class JointDomainSelfAttention(_AttentionProjections):
    """``attn1``: cross-domain joint self-attention + face blend (PSHuman ``IPCDAttention``).

    ``x [B, N, C]`` with ``B = 2 * G * V`` (domain-major, see module docstring). Image ``i`` of the normal
    half and image ``i`` of the color half form one sequence of ``2N`` tokens (normal tokens first); the
    result is split back and :func:`blend_face_into_front` is applied per domain.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, num_views: int, *, device=None, dtype=None) -> None:
        super().__init__(dim, heads, dim_head, device=device, dtype=dtype)
        self.num_views = num_views

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        half = b // 2
        # pair the tokens once, before the (per-token) projections: [2*half, N, C] -> [half, 2N, C]
        paired = x.view(2, half, n, c).transpose(0, 1).reshape(half, 2 * n, c)
        q, k, v = self._qkv(paired)  # [half, 2N, heads, d]
        o = attention(q, k, v)  # [half, 2N, heads, d]
        o = self.to_out[0](o.reshape(half, 2 * n, -1))  # [half, 2N, C]
        o = o.view(half, 2, n, c).transpose(0, 1).reshape(b, n, c)  # back to [normal half | color half] (a copy)
        return blend_face_into_front(o, hw, self.num_views, inplace=True)


class RowwiseMultiviewAttention(_AttentionProjections):
    """``attn_mv``: row-wise attention across body views (PSHuman ``XFormersMVAttnProcessor``).

    ``x [B', H*W, C]`` with ``B' = G' * Vb`` (``Vb`` body views per group, view-minor). Row ``r`` of every
    view of a group attends to row ``r`` of all ``Vb`` views of that group (``Vb * W`` keys).
    """

    def __init__(self, dim: int, heads: int, dim_head: int, body_views: int, *, device=None, dtype=None) -> None:
        super().__init__(dim, heads, dim_head, device=device, dtype=dtype)
        self.body_views = body_views

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        h, w = hw
        vb = self.body_views
        g = b // vb
        q, k, v = self._qkv(x)

        def rows(t: torch.Tensor) -> torch.Tensor:  # [(g v), (h w), hd, d] -> [(g h), (v w), hd, d]
            t = t.view(g, vb, h, w, self.heads, self.dim_head).permute(0, 2, 1, 3, 4, 5)
            return t.reshape(g * h, vb * w, self.heads, self.dim_head)

        o = attention(rows(q), rows(k), rows(v))  # [(g h), (v w), heads, d]
        o = o.reshape(g, h, vb, w, self.heads * self.dim_head).permute(0, 2, 1, 3, 4).reshape(b, n, -1)
        return self.to_out[0](o)


class PromptCrossAttention(_AttentionProjections):
    """``attn2``: each image's tokens attend to its own prompt embedding ``context [B, L, Cc]``."""

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.to_q(x).view(b, n, self.heads, self.dim_head)
        k = self.to_k(context).view(b, context.shape[1], self.heads, self.dim_head)
        v = self.to_v(context).view(b, context.shape[1], self.heads, self.dim_head)
        o = attention(q, k, v)
        return self.to_out[0](o.reshape(b, n, -1))


# ------------------------------------------------------------------------------------------------
# Transformer
# ------------------------------------------------------------------------------------------------


class BasicMVTransformerBlock(nn.Module):
    """PSHuman ``BasicMVTransformerBlock`` (self_rowwise variant, ``mvcd_attention``).

    ``x = x + attn1(norm1(x))``; body views: ``x_body += attn_mv(norm_mv(x_body))`` (face view untouched);
    ``x = x + attn2(norm2(x), prompts)``; ``x = x + ff(norm3(x))``. LayerNorms affine, eps 1e-5.
    """

    def __init__(
        self, dim: int, heads: int, dim_head: int, cross_attention_dim: int, num_views: int, *,
        device=None, dtype=None,
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.num_views = num_views
        self.norm1 = LayerNorm32(dim, eps=1e-5, **kw)
        self.attn1 = JointDomainSelfAttention(dim, heads, dim_head, num_views, **kw)
        self.norm_mv = LayerNorm32(dim, eps=1e-5, **kw)
        self.attn_mv = RowwiseMultiviewAttention(dim, heads, dim_head, num_views - 1, **kw)
        self.norm2 = LayerNorm32(dim, eps=1e-5, **kw)
        self.attn2 = PromptCrossAttention(dim, heads, dim_head, kv_dim=cross_attention_dim, **kw)
        self.norm3 = LayerNorm32(dim, eps=1e-5, **kw)
        self.ff = GEGLUFeedForward(dim, **kw)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], context: torch.Tensor) -> torch.Tensor:
        """``x [B, H*W, C]``, ``context [B, L, Cc]`` -> ``[B, H*W, C]``."""
        b, n, c = x.shape
        nv = self.num_views
        x = x + self.attn1(self.norm1(x), hw)
        grid = x.view(b // nv, nv, n, c)  # [G', V, N, C] (view of x)
        body = grid[:, : nv - 1].reshape(-1, n, c)  # [G'*(V-1), N, C]
        upd = self.attn_mv(self.norm_mv(body), hw)
        grid[:, : nv - 1] += upd.view(b // nv, nv - 1, n, c)  # in place on x (fresh tensor from the add)
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class TransformerMV2DModel(nn.Module):
    """``GroupNorm(eps 1e-6) -> proj_in (Linear) -> BasicMVTransformerBlock x L -> proj_out -> + residual``.

    ``[B, C, H, W] -> [B, C, H, W]``; keys ``norm``, ``proj_in``, ``transformer_blocks.i``, ``proj_out``.
    """

    def __init__(
        self, channels: int, heads: int, cross_attention_dim: int, num_views: int, *, num_layers: int = 1,
        groups: int = 32, device=None, dtype=None,
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        if channels % heads:
            raise ValueError(f"{channels} channels do not split into {heads} heads")
        self.norm = GroupNorm32(groups, channels, eps=1e-6, affine=True, **kw)
        self.proj_in = nn.Linear(channels, channels, **kw)
        self.transformer_blocks = nn.ModuleList(
            [
                BasicMVTransformerBlock(channels, heads, channels // heads, cross_attention_dim, num_views, **kw)
                for _ in range(num_layers)
            ]
        )
        self.proj_out = nn.Linear(channels, channels, **kw)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c)  # [B, HW, C]
        t = self.proj_in(t)
        for blk in self.transformer_blocks:
            t = blk(t, (h, w), context)
        t = self.proj_out(t)
        return t.view(b, h, w, c).permute(0, 3, 1, 2) + x
