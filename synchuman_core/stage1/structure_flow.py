"""Sparse-structure flow DiT (TRELLIS ``SparseStructureFlowModel``; the 3D branch of the stage-1 model).

``StructureFlowLayers`` is a plain mixin that registers the TRELLIS layers (``pos_emb``, ``t_embedder``,
``input_layer``, ``blocks``, ``out_layer`` [, ``adaLN_modulation`` with ``share_mod``]) on its host and
runs them in pieces, so that the joint 2D-3D model can interleave its UNet between block ranges while
keeping the official key names at the top level of its state dict.

dtypes: the "torso" (the blocks) runs in the dtype of the block weights; tokens, timestep embedding
and condition are cast to it. The head runs on the caller's dtype (fp32 latents), as the official
``h.type(x.dtype)`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..modules import (
    ModulatedTransformerCrossBlock,
    TimestepEmbedder,
    convert_to_fp16,
    grid_to_tokens,
    patchify3d,
    sincos_position_embedding,
    tokens_to_grid,
    unpatchify3d,
)
from ..modules.config import config_from_official

__all__ = ["SparseStructureFlowConfig", "SparseStructureFlowModel", "StructureFlowLayers", "structure_pos_emb"]


@dataclass
class SparseStructureFlowConfig:
    """TRELLIS ``ss_flow`` arguments (real stage-1 values: res 16, patch 1, 1024 ch, 24 blocks, 16 heads)."""

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
    pe_mode: str = "ape"
    use_fp16: bool = False
    share_mod: bool = False
    qk_rms_norm: bool = False
    qk_rms_norm_cross: bool = False

    def __post_init__(self) -> None:
        if self.pe_mode != "ape":
            raise ConfigError(f"pe_mode {self.pe_mode!r} is not supported (SyncHuman/TRELLIS weights use 'ape')")
        if self.resolution % self.patch_size:
            raise ConfigError(f"resolution {self.resolution} is not divisible by patch_size {self.patch_size}")
        if self.heads <= 0 or self.model_channels % self.heads:
            raise ConfigError(f"model_channels {self.model_channels} is not divisible into {self.heads} heads")

    @property
    def heads(self) -> int:
        return self.num_heads or self.model_channels // self.num_head_channels

    @property
    def grid(self) -> int:
        """Token grid side ``resolution // patch_size``."""
        return self.resolution // self.patch_size

    @classmethod
    def from_official(cls, data: dict[str, Any]) -> SparseStructureFlowConfig:
        """From TRELLIS ``{"name": "SparseStructureFlowModel", "args": {...}}`` or the flat args dict."""
        return config_from_official(cls, data, names=("SparseStructureFlowModel",), ignored=("use_checkpoint",))

    @classmethod
    def from_joint_config(cls, data: dict[str, Any]) -> SparseStructureFlowConfig:
        """The 3D-branch arguments inside the stage-1 ``SyncHuman_2D3DCrossSpaceDiffusion`` config.json
        (``trellis_in_channels``/``trellis_out_channels`` and the TRELLIS keys; UNet keys are ignored)."""
        rename = {"trellis_in_channels": "in_channels", "trellis_out_channels": "out_channels"}
        keep = set(cls.__dataclass_fields__) - {"in_channels", "out_channels"}
        args = {rename.get(k, k): v for k, v in data.items() if k in rename or k in keep}
        return config_from_official(cls, args, names=())


def structure_pos_emb(cfg: SparseStructureFlowConfig, device=None) -> torch.Tensor:
    """The ``pos_emb`` buffer ``[grid^3, model_channels]`` fp32: APE of the ``(x, y, z)`` token grid in
    ``meshgrid(..., indexing='ij')`` order (token ``x*g^2 + y*g + z``)."""
    g = cfg.grid
    r = torch.arange(g, device=device)
    coords = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), dim=-1).reshape(-1, 3)  # [g^3, 3]
    return sincos_position_embedding(coords, cfg.model_channels)


class StructureFlowLayers:
    """Mixin for an ``nn.Module`` host: TRELLIS sparse-structure flow layers at the host's top level.

    Call ``self._init_structure_flow(cfg, ...)`` after ``nn.Module.__init__``. Forward pieces::

        h = self.structure_embed(x)            # [B, 8, R, R, R] -> [B, g^3, C]
        t_emb = self.structure_time(t)         # [B] or [1] -> [B|1, C]
        h = self.structure_blocks(h, t_emb, cond, 0, 8)
        v = self.structure_head(h, x.dtype)    # -> [B, out, R, R, R]
    """

    structure_config: SparseStructureFlowConfig

    def _init_structure_flow(
        self,
        cfg: SparseStructureFlowConfig,
        *,
        device=None,
        dtype=None,
        convert_fp16: bool = False,
    ) -> None:
        """Register the layers. ``convert_fp16``: TRELLIS ``use_fp16`` behaviour (block Linear weights
        to fp16, norms fp32); the stage-1 joint model does not convert (its ``use_fp16`` only sets the
        compute dtype, and the pipeline casts the whole model)."""
        if not isinstance(self, nn.Module):
            raise TypeError("StructureFlowLayers must be mixed into an nn.Module")
        kw = {"device": device, "dtype": dtype}
        c = cfg.model_channels
        p3 = cfg.patch_size**3
        self.structure_config = cfg
        self.t_embedder = TimestepEmbedder(c, cast_to_t_dtype=True, **kw)
        if cfg.share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(c, 6 * c, **kw))
        pos = structure_pos_emb(cfg, device=device)
        self.register_buffer("pos_emb", pos.to(dtype) if dtype is not None else pos)
        self.input_layer = nn.Linear(cfg.in_channels * p3, c, **kw)
        self.blocks = nn.ModuleList(
            ModulatedTransformerCrossBlock(
                c, cfg.cond_channels, cfg.heads, cfg.mlp_ratio,
                qk_rms_norm=cfg.qk_rms_norm, qk_rms_norm_cross=cfg.qk_rms_norm_cross,
                share_mod=cfg.share_mod, **kw,
            )
            for _ in range(cfg.num_blocks)
        )
        self.out_layer = nn.Linear(c, cfg.out_channels * p3, **kw)
        if convert_fp16:
            convert_to_fp16(self.blocks)

    def structure_torso_dtype(self) -> torch.dtype:
        """Compute dtype of the blocks: the dtype of their Linear weights."""
        if len(self.blocks):
            return self.blocks[0].self_attn.to_out.weight.dtype
        return self.input_layer.weight.dtype

    def structure_embed(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in, R, R, R] -> h [B, g^3, C]`` (torso dtype): patchify, ``input_layer``, ``+ pos_emb``."""
        cfg = self.structure_config
        want = (cfg.in_channels, cfg.resolution, cfg.resolution, cfg.resolution)
        if x.ndim != 5 or tuple(x.shape[1:]) != want:
            raise ValueError(f"structure latent must be [B, {', '.join(map(str, want))}], got {tuple(x.shape)}")
        tokens = grid_to_tokens(patchify3d(x, cfg.patch_size))  # [B, g^3, in*p^3]
        w = self.input_layer.weight
        h = self.input_layer(tokens.to(w.dtype)) + self.pos_emb[None].to(w.dtype)
        return h.to(self.structure_torso_dtype())

    def structure_time(self, t: torch.Tensor | float) -> torch.Tensor:
        """``t [B]`` (or ``[1]``, broadcast over the batch; already scaled by 1000) -> ``[B|1, C]``
        (``[B|1, 6C]`` with ``share_mod``), torso dtype. A fp16 ``t`` rounds the frequency embedding to
        fp16 as the official stage-1 model does."""
        if not torch.is_tensor(t):
            t = torch.tensor([float(t)], device=self.input_layer.weight.device)
        t_emb = self.t_embedder(t.reshape(-1))
        if self.structure_config.share_mod:
            t_emb = self.adaLN_modulation(t_emb)
        return t_emb.to(self.structure_torso_dtype())

    def structure_blocks(
        self,
        h: torch.Tensor,
        t_emb: torch.Tensor,
        cond: torch.Tensor,
        start: int = 0,
        stop: int | None = None,
    ) -> torch.Tensor:
        """Run ``blocks[start:stop]``: ``h [B, g^3, C]``, ``t_emb [B|1, C]``, ``cond [B, L, cond_ch]``."""
        dt = self.structure_torso_dtype()
        h, t_emb, cond = h.to(dt), t_emb.to(dt), cond.to(dt)
        for blk in self.blocks[start:stop]:
            h = blk(h, t_emb, cond)
        return h

    def structure_head(self, h: torch.Tensor, out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``h [B, g^3, C] -> v [B, out, R, R, R]`` in ``out_dtype``: ``h.to(out_dtype)``, LayerNorm
        without affine (eps 1e-5, unlike the blocks' 1e-6), ``out_layer``, unpatchify."""
        cfg = self.structure_config
        h = h.to(out_dtype)
        h = F.layer_norm(h.float(), h.shape[-1:], eps=1e-5).to(out_dtype)
        w = self.out_layer.weight
        h = self.out_layer(h.to(w.dtype)).to(out_dtype)  # [B, g^3, out*p^3]
        g = cfg.grid
        return unpatchify3d(tokens_to_grid(h, (g, g, g)), cfg.patch_size).contiguous()


class SparseStructureFlowModel(nn.Module, StructureFlowLayers):
    """Standalone TRELLIS sparse-structure flow: ``forward(x [B,8,R,R,R], t [B], cond [B,L,C]) -> v``."""

    def __init__(self, config: SparseStructureFlowConfig, *, device=None, dtype=None) -> None:
        super().__init__()
        self.config = config
        self._init_structure_flow(
            config, device=device, dtype=dtype, convert_fp16=config.use_fp16 and dtype is None
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.structure_embed(x)
        t_emb = self.structure_time(t)
        h = self.structure_blocks(h, t_emb, cond)
        return self.structure_head(h, x.dtype)
