"""The stage-1 multiview UNet (PSHuman ``UNetMV2DConditionModel`` as used by SyncHuman).

Parameter names are the official diffusers ones, so the UNet part of the SyncHuman checkpoint loads
as is: ``conv_in``, ``time_embedding``, ``class_embedding``, ``down_blocks.i.{resnets,attentions,
downsamplers}``, ``mid_block.{resnets,attentions}``, ``up_blocks.i.{resnets,attentions,upsamplers}``,
``conv_norm_out``, ``conv_out``.

:class:`MultiviewUNetLayers` is a mixin that registers those modules on its host at the top level of
the state dict (the joint model needs them beside the 3D-branch keys) and provides the pieces of the
forward pass; :class:`MultiviewUNet` is the plain UNet built from it (used in tests and as a 2D-only
model). Multiview batch layout: see :mod:`synchuman_core.stage1.unet_layers`.

diffusers quirk kept for config compatibility: the official ``attention_head_dim`` list holds the
*number of heads* per level (5, 10, 20, 20 -> head dim 64 everywhere); :class:`UNetConfig` calls it
``num_attention_heads``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..modules.norms import GroupNorm32
from .unet_layers import (
    Downsample2D,
    ResnetBlock2D,
    TimestepEmbedding,
    TransformerMV2DModel,
    Upsample2D,
    sinusoidal_timestep_embedding,
)

__all__ = [
    "CrossAttnDownBlockMV2D",
    "CrossAttnUpBlockMV2D",
    "DownBlock2D",
    "MultiviewUNet",
    "MultiviewUNetLayers",
    "UNetConfig",
    "UNetMidBlockMV2DCrossAttn",
    "UpBlock2D",
]


@dataclass(frozen=True)
class UNetConfig:
    """What the SyncHuman UNet weights need (defaults = the released checkpoint)."""

    sample_size: int = 96
    in_channels: int = 8
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlockMV2D",) * 3 + ("DownBlock2D",)
    up_block_types: tuple[str, ...] = ("UpBlock2D",) + ("CrossAttnUpBlockMV2D",) * 3
    mid_block_type: str = "UNetMidBlockMV2DCrossAttn"
    layers_per_block: int = 2
    transformer_layers_per_block: int = 1
    # diffusers' ``attention_head_dim`` (it is the number of heads per level, see module docstring)
    num_attention_heads: tuple[int, ...] = (5, 10, 20, 20)
    cross_attention_dim: int = 1024
    # class_embed_type "projection": TimestepEmbedding(input_dim -> 4*C0); None: no class embedding
    class_embed_input_dim: int | None = 2048
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    center_input_sample: bool = False
    num_views: int = 5

    def __post_init__(self) -> None:
        n = len(self.block_out_channels)
        if not (len(self.down_block_types) == len(self.up_block_types) == len(self.num_attention_heads) == n):
            raise ConfigError(
                "block_out_channels, down_block_types, up_block_types and attention_head_dim must have the "
                f"same length, got {n}, {len(self.down_block_types)}, {len(self.up_block_types)}, "
                f"{len(self.num_attention_heads)}"
            )
        for t in self.down_block_types:
            if t not in DOWN_BLOCKS:
                raise ConfigError(f"down block type {t!r} is not supported (known: {', '.join(DOWN_BLOCKS)})")
        for t in self.up_block_types:
            if t not in UP_BLOCKS:
                raise ConfigError(f"up block type {t!r} is not supported (known: {', '.join(UP_BLOCKS)})")
        if self.mid_block_type != "UNetMidBlockMV2DCrossAttn":
            raise ConfigError(f"mid block type {self.mid_block_type!r} is not supported")
        if self.num_views < 2:
            raise ConfigError("num_views counts the body views plus the face close-up; it must be >= 2")

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.block_out_channels[0]

    def down_channels(self, i: int) -> int:
        """Channels of the main path after ``down_blocks[i]``."""
        return self.block_out_channels[i]

    def up_in_channels(self, i: int) -> int:
        """Channels of the main path entering ``up_blocks[i]`` (mid-block output for i = 0)."""
        return self.block_out_channels[-1] if i == 0 else self.block_out_channels[::-1][i - 1]

    def down_resolution_divisor(self, i: int) -> int:
        """Spatial divisor of the main path after ``down_blocks[i]`` (x2 per downsampling block)."""
        return 2 ** min(i + 1, len(self.block_out_channels) - 1)


# ------------------------------------------------------------------------------------------------
# Blocks (diffusers / PSHuman names and semantics)
# ------------------------------------------------------------------------------------------------


class CrossAttnDownBlockMV2D(nn.Module):
    """``resnets.i`` + ``attentions.i`` (TransformerMV2DModel) x layers, then ``downsamplers.0``.

    ``forward -> (h, skips)``: ``skips`` holds every layer output and the downsampled output.
    """

    has_cross_attention = True

    def __init__(self, cin: int, cout: int, temb: int, heads: int, cfg: UNetConfig, add_down: bool, *, kw) -> None:
        super().__init__()
        n = cfg.layers_per_block
        # registration order = official state-dict order (attentions before resnets)
        self.attentions = nn.ModuleList(
            [TransformerMV2DModel(cout, heads, cfg.cross_attention_dim, cfg.num_views,
                                  num_layers=cfg.transformer_layers_per_block, groups=cfg.norm_num_groups, **kw)
             for _ in range(n)]
        )
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(cin if i == 0 else cout, cout, temb, groups=cfg.norm_num_groups, eps=cfg.norm_eps, **kw)
             for i in range(n)]
        )
        self.downsamplers = nn.ModuleList([Downsample2D(cout, **kw)]) if add_down else None

    def forward(self, h: torch.Tensor, temb: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, list]:
        skips = []
        for resnet, attn in zip(self.resnets, self.attentions):
            h = attn(resnet(h, temb), context)
            skips.append(h)
        if self.downsamplers is not None:
            h = self.downsamplers[0](h)
            skips.append(h)
        return h, skips


class DownBlock2D(nn.Module):
    """``resnets.i`` x layers, then optional ``downsamplers.0``; no attention."""

    has_cross_attention = False

    def __init__(self, cin: int, cout: int, temb: int, heads: int, cfg: UNetConfig, add_down: bool, *, kw) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(cin if i == 0 else cout, cout, temb, groups=cfg.norm_num_groups, eps=cfg.norm_eps, **kw)
             for i in range(cfg.layers_per_block)]
        )
        self.downsamplers = nn.ModuleList([Downsample2D(cout, **kw)]) if add_down else None

    def forward(self, h: torch.Tensor, temb: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, list]:
        skips = []
        for resnet in self.resnets:
            h = resnet(h, temb)
            skips.append(h)
        if self.downsamplers is not None:
            h = self.downsamplers[0](h)
            skips.append(h)
        return h, skips


class UNetMidBlockMV2DCrossAttn(nn.Module):
    """``resnets.0 -> attentions.0 -> resnets.1`` at the lowest resolution."""

    def __init__(self, channels: int, temb: int, heads: int, cfg: UNetConfig, *, kw) -> None:
        super().__init__()
        rk = {"groups": cfg.norm_num_groups, "eps": cfg.norm_eps, **kw}
        self.attentions = nn.ModuleList(
            [TransformerMV2DModel(channels, heads, cfg.cross_attention_dim, cfg.num_views,
                                  num_layers=cfg.transformer_layers_per_block, groups=cfg.norm_num_groups, **kw)]
        )
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, temb, **rk) for _ in range(2)])

    def forward(self, h: torch.Tensor, temb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        h = self.resnets[0](h, temb)
        h = self.attentions[0](h, context)
        return self.resnets[1](h, temb)


class _UpBlockBase(nn.Module):
    def _resnet_channels(self, cin: int, cout: int, prev: int, n: int) -> list[tuple[int, int]]:
        """(input channels incl. skip, output channels) of each resnet (diffusers rule)."""
        out = []
        for i in range(n):
            skip = cin if i == n - 1 else cout
            res_in = prev if i == 0 else cout
            out.append((res_in + skip, cout))
        return out


class UpBlock2D(_UpBlockBase):
    """``resnets.i`` (input = cat[h, skip]) x (layers+1), then optional ``upsamplers.0``."""

    has_cross_attention = False

    def __init__(self, cin: int, cout: int, prev: int, temb: int, heads: int, cfg: UNetConfig, add_up: bool, *, kw):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(a, b, temb, groups=cfg.norm_num_groups, eps=cfg.norm_eps, **kw)
             for a, b in self._resnet_channels(cin, cout, prev, cfg.layers_per_block + 1)]
        )
        self.upsamplers = nn.ModuleList([Upsample2D(cout, **kw)]) if add_up else None

    def forward(self, h, skips: list, temb, context, upsample_size=None) -> torch.Tensor:
        for resnet in self.resnets:
            h = resnet(torch.cat([h, skips.pop()], dim=1), temb)
        if self.upsamplers is not None:
            h = self.upsamplers[0](h, upsample_size)
        return h


class CrossAttnUpBlockMV2D(_UpBlockBase):
    """Like :class:`UpBlock2D` with an ``attentions.i`` transformer after each resnet."""

    has_cross_attention = True

    def __init__(self, cin: int, cout: int, prev: int, temb: int, heads: int, cfg: UNetConfig, add_up: bool, *, kw):
        super().__init__()
        n = cfg.layers_per_block + 1
        self.attentions = nn.ModuleList(
            [TransformerMV2DModel(cout, heads, cfg.cross_attention_dim, cfg.num_views,
                                  num_layers=cfg.transformer_layers_per_block, groups=cfg.norm_num_groups, **kw)
             for _ in range(n)]
        )
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(a, b, temb, groups=cfg.norm_num_groups, eps=cfg.norm_eps, **kw)
             for a, b in self._resnet_channels(cin, cout, prev, n)]
        )
        self.upsamplers = nn.ModuleList([Upsample2D(cout, **kw)]) if add_up else None

    def forward(self, h, skips: list, temb, context, upsample_size=None) -> torch.Tensor:
        for resnet, attn in zip(self.resnets, self.attentions):
            h = attn(resnet(torch.cat([h, skips.pop()], dim=1), temb), context)
        if self.upsamplers is not None:
            h = self.upsamplers[0](h, upsample_size)
        return h


DOWN_BLOCKS: dict[str, type[nn.Module]] = {
    "CrossAttnDownBlockMV2D": CrossAttnDownBlockMV2D,
    "DownBlock2D": DownBlock2D,
}
UP_BLOCKS: dict[str, type[nn.Module]] = {
    "CrossAttnUpBlockMV2D": CrossAttnUpBlockMV2D,
    "UpBlock2D": UpBlock2D,
}


# ------------------------------------------------------------------------------------------------
# Mixin + plain model
# ------------------------------------------------------------------------------------------------


class MultiviewUNetLayers:
    """Registers the UNet modules on ``self`` (top-level diffusers keys) and runs their pieces.

    Host classes are ``nn.Module`` subclasses that call :meth:`_init_unet` in ``__init__``.
    """

    unet_config: UNetConfig

    def _init_unet(self, cfg: UNetConfig, device=None, dtype=None) -> None:
        kw = {"device": device, "dtype": dtype}
        self.unet_config = cfg
        ch = cfg.block_out_channels
        temb = cfg.time_embed_dim
        n = len(ch)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1, **kw)
        self.time_embedding = TimestepEmbedding(ch[0], temb, **kw)
        self.class_embedding = (
            TimestepEmbedding(cfg.class_embed_input_dim, temb, **kw) if cfg.class_embed_input_dim else None
        )
        down = []
        out_c = ch[0]
        for i, kind in enumerate(cfg.down_block_types):
            in_c, out_c = out_c, ch[i]
            down.append(DOWN_BLOCKS[kind](in_c, out_c, temb, cfg.num_attention_heads[i], cfg, i < n - 1, kw=kw))
        self.down_blocks = nn.ModuleList(down)
        self.up_blocks = nn.ModuleList()  # registered before mid_block: official state-dict order
        self.mid_block = UNetMidBlockMV2DCrossAttn(ch[-1], temb, cfg.num_attention_heads[-1], cfg, kw=kw)
        rch = ch[::-1]
        rheads = cfg.num_attention_heads[::-1]
        up = []
        out_c = rch[0]
        for i, kind in enumerate(cfg.up_block_types):
            prev, out_c = out_c, rch[i]
            in_c = rch[min(i + 1, n - 1)]
            up.append(UP_BLOCKS[kind](in_c, out_c, prev, temb, rheads[i], cfg, i < n - 1, kw=kw))
        self.up_blocks.extend(up)
        self.conv_norm_out = GroupNorm32(cfg.norm_num_groups, ch[0], eps=cfg.norm_eps, affine=True, **kw)
        self.conv_out = nn.Conv2d(ch[0], cfg.out_channels, 3, padding=1, **kw)

    def unet_embedding(
        self, timestep: torch.Tensor | float, class_labels: torch.Tensor | None, batch: int, like: torch.Tensor
    ) -> torch.Tensor:
        """Time (+ class) embedding ``[batch, 4*C0]`` in the dtype of ``like``.

        ``timestep``: python number or tensor of shape ``[]``, ``[1]`` or ``[batch]`` (the official
        pipeline passes ``1000 * t`` as a python float; it is used in fp32).
        """
        cfg = self.unet_config
        t = torch.as_tensor(timestep, device=like.device)
        if t.ndim == 0:
            t = t[None]
        t = t.expand(batch)
        t_emb = sinusoidal_timestep_embedding(
            t, cfg.block_out_channels[0], flip_sin_to_cos=cfg.flip_sin_to_cos, freq_shift=cfg.freq_shift
        ).to(like.dtype)
        emb = self.time_embedding(t_emb)
        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("this UNet has a class embedding: class_labels [B, D] must be given")
            emb = emb + self.class_embedding(class_labels.to(like.dtype)).to(like.dtype)
        return emb

    def unet_head(self, h: torch.Tensor) -> torch.Tensor:
        """``conv_norm_out -> SiLU -> conv_out``: ``[B, C0, H, W] -> [B, out, H, W]``."""
        return self.conv_out(F.silu(self.conv_norm_out(h)))

    def check_multiview_batch(self, batch: int) -> int:
        """Number of groups ``G`` of a UNet batch ``2 * G * V`` (raises ValueError otherwise)."""
        v = self.unet_config.num_views
        if batch % (2 * v) or batch == 0:
            raise ValueError(
                f"the multiview UNet batch must be 2 domains x G groups x {v} views, got batch {batch}"
            )
        return batch // (2 * v)


class MultiviewUNet(MultiviewUNetLayers, nn.Module):
    """The multiview UNet alone (no 3D branch, no sync bridges)."""

    def __init__(self, config: UNetConfig, *, device=None, dtype=None) -> None:
        super().__init__()
        self.config = config
        self._init_unet(config, device, dtype)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        class_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``sample [B, in, H, W]`` (B = 2*G*V), prompts ``[B, L, Cc]``, ``class_labels [B, D]`` ->
        ``[B, out, H, W]``."""
        self.check_multiview_batch(sample.shape[0])
        if self.unet_config.center_input_sample:
            sample = 2 * sample - 1.0
        emb = self.unet_embedding(timestep, class_labels, sample.shape[0], sample)
        h = self.conv_in(sample)
        skips: list[torch.Tensor] = [h]
        for blk in self.down_blocks:
            h, s = blk(h, emb, encoder_hidden_states)
            skips.extend(s)
        h = self.mid_block(h, emb, encoder_hidden_states)
        for blk in self.up_blocks:
            h = blk(h, skips, emb, encoder_hidden_states)
        return self.unet_head(h)
