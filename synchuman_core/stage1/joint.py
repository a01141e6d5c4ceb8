"""The joint 2D-3D diffusion model of SyncHuman stage 1 (official ``SyncHuman_2D3DCrossSpaceDiffusion``).

One module, one flat state dict with the official keys side by side:

* the multiview UNet (diffusers / PSHuman names, :mod:`.unet`),
* the TRELLIS sparse-structure flow DiT (``pos_emb``, ``t_embedder``, ``input_layer``, ``blocks``,
  ``out_layer``; helper mixin :class:`~.structure_flow.StructureFlowLayers`),
* the sync bridges ``dual_CrossAttblocks_SS.{i}`` (2D -> 3D) and ``dual_CrossAttblocks_MV.{i}`` (3D -> 2D)
  (:mod:`.sync`).

Execution order of one forward (docs/ARCHITECTURE.md §3.1), driven by the NAMED configuration
:attr:`JointModelConfig.sync_points` and :attr:`JointModelConfig.structure_segments` instead of the
official spatial-size checks and hard-coded block slices:

1. 3D: tokens + ``pos_emb``, timestep embedding, segment ``"before_down"`` (blocks [0:8]).
2. 2D: time/class embedding, ``conv_in``, down blocks; after ``down_blocks[b]`` the sync points
   ``("after_down", b, ...)`` run on the main path only: the skip connections collected inside the
   block keep the PRE-sync features.
3. 2D: mid block. 3D: segment ``"after_mid"`` (blocks [8:16]).
4. 2D: before ``up_blocks[b]`` the sync points ``("before_up", b, ...)`` run, then the block.
5. 3D: segment ``"after_up"`` (blocks [16:]), head. 2D: ``conv_norm_out -> SiLU -> conv_out``.

Official points: SS0 after down block 1 (24x24, 640 ch), MV0 after down block 2 (12x12, 1280 ch),
MV1 before up block 0 (12x12, 1280 ch), SS1 before up block 1 (24x24, 1280 ch).

Valid batch layouts: ``sample [2*G*V, ...]`` ordered (domain, group, view) with V = 5 views (4 body views
+ the face close-up), domains normal then color, and ``trellis_x [G, ...]`` with the same group order
(official CFG: G = 2, groups uncond/cond). Groups never interact, so the CFG halves may be run in
sequence (G = 1 each) with the same result; the two domains and the views of a group must stay in one
call (joint normal/color attention, row-wise view attention and the sync bridges need them together).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import nn

from ..errors import ConfigError, NumericalError
from .structure_flow import SparseStructureFlowConfig, StructureFlowLayers
from .sync import DualCrossAttentionMV, DualCrossAttentionSS, SyncBridgeConfig
from .unet import MultiviewUNetLayers, UNetConfig

logger = logging.getLogger(__name__)

__all__ = [
    "OFFICIAL_SYNC_POINTS",
    "JointModelConfig",
    "StructureSegment",
    "SyncHumanJointModel",
    "SyncPoint",
]


@dataclass(frozen=True)
class SyncPoint:
    """One sync bridge call: ``bridge`` (``"ss"``: 2D -> 3D, ``"mv"``: 3D -> 2D) number ``index`` runs
    ``where`` = ``"after_down"`` (on the output of ``down_blocks[block]``) or ``"before_up"`` (on the input
    of ``up_blocks[block]``)."""

    where: Literal["after_down", "before_up"]
    block: int
    bridge: Literal["ss", "mv"]
    index: int


OFFICIAL_SYNC_POINTS: tuple[SyncPoint, ...] = (
    SyncPoint("after_down", 1, "ss", 0),
    SyncPoint("after_down", 2, "mv", 0),
    SyncPoint("before_up", 0, "mv", 1),
    SyncPoint("before_up", 1, "ss", 1),
)

SEGMENT_PHASES = ("before_down", "after_mid", "after_up")


@dataclass(frozen=True)
class StructureSegment:
    """3D blocks ``blocks[start:stop]`` run at ``phase`` (one of :data:`SEGMENT_PHASES`)."""

    phase: Literal["before_down", "after_mid", "after_up"]
    start: int
    stop: int


def official_segments(num_blocks: int) -> tuple[StructureSegment, ...]:
    """The official split ``blocks[0:8]``, ``blocks[8:16]``, ``blocks[16:]`` (clipped to ``num_blocks``)."""
    a, b = min(8, num_blocks), min(16, num_blocks)
    return (
        StructureSegment("before_down", 0, a),
        StructureSegment("after_mid", a, b),
        StructureSegment("after_up", b, num_blocks),
    )


# Official config keys that do not change inference (EMA metadata, training switches, unused args).
_IGNORED_KEYS = frozenset({
    "_class_name", "_diffusers_version", "_name_or_path", "_use_default_values",
    "decay", "inv_gamma", "min_decay", "optimization_step", "power", "update_after_step", "use_ema_warmup",
    "upcast_attention",  # no effect with the attention processors the official pipeline installs
    "sparse_mv_attention",  # documented as unused
    "use_checkpoint",  # gradient checkpointing (training)
    "mv_cond_channels",  # passed to the 3D blocks but unused (joint_mv=False)
    "addition_channels",  # only used with addition_downsample
    "addition_embed_type_num_heads", "addition_time_embed_dim",  # only used with addition_embed_type
})

# Official keys whose value this implementation hard-wires: key -> accepted values.
_FIXED_KEYS: dict[str, tuple[Any, ...]] = {
    "act_fn": ("silu",),
    "time_embedding_type": ("positional",),
    "class_embed_type": ("projection", None),
    "use_linear_projection": (True,),
    "mvcd_attention": (True,),
    "multiview_attention": (True,),
    "selfattn_block": ("self_rowwise",),
    "cd_attention_mid": (False,),
    "cd_attention_last": (False,),
    "dual_cross_attention": (False,),
    "only_cross_attention": (False,),
    "mid_block_only_cross_attention": (None, False),
    "addition_embed_type": (None,),
    "addition_downsample": (False,),
    "encoder_hid_dim": (None,),
    "encoder_hid_dim_type": (None,),
    "num_attention_heads": (None,),
    "num_class_embeds": (None,),
    "class_embeddings_concat": (False,),
    "resnet_time_scale_shift": ("default",),
    "resnet_out_scale_factor": (1, 1.0),
    "resnet_skip_time_act": (False,),
    "mid_block_scale_factor": (1, 1.0),
    "time_embedding_dim": (None,),
    "time_embedding_act_fn": (None,),
    "timestep_post_act": (None,),
    "time_cond_proj_dim": (None,),
    "conv_in_kernel": (3,),
    "conv_out_kernel": (3,),
    "downsample_padding": (1,),
    "cross_attention_norm": (None,),
    "use_dino": (False,),
    "num_dual_CrossAttblocks": (2,),
}

# Official key -> UNetConfig field.
_UNET_KEYS = {
    "sample_size": "sample_size",
    "in_channels": "in_channels",
    "out_channels": "out_channels",
    "block_out_channels": "block_out_channels",
    "down_block_types": "down_block_types",
    "up_block_types": "up_block_types",
    "mid_block_type": "mid_block_type",
    "layers_per_block": "layers_per_block",
    "transformer_layers_per_block": "transformer_layers_per_block",
    "attention_head_dim": "num_attention_heads",  # diffusers quirk: it is the number of heads
    "cross_attention_dim": "cross_attention_dim",
    "projection_class_embeddings_input_dim": "class_embed_input_dim",
    "norm_num_groups": "norm_num_groups",
    "norm_eps": "norm_eps",
    "flip_sin_to_cos": "flip_sin_to_cos",
    "freq_shift": "freq_shift",
    "center_input_sample": "center_input_sample",
    "num_views": "num_views",
}

# Official keys of the 3D branch (read by SparseStructureFlowConfig.from_joint_config).
_STRUCTURE_KEYS = frozenset({
    "resolution", "trellis_in_channels", "model_channels", "cond_channels", "trellis_out_channels",
    "num_blocks", "num_heads", "num_head_channels", "mlp_ratio", "patch_size", "pe_mode", "use_fp16",
    "share_mod", "qk_rms_norm", "qk_rms_norm_cross",
})

# Hard-coded in the official __init__: every sync bridge uses 16 heads x 64.
_SYNC_HEADS = 16
_SYNC_HEAD_DIM = 64

_OFFICIAL_STRUCTURE = SparseStructureFlowConfig(
    resolution=16, in_channels=8, model_channels=1024, cond_channels=1024, out_channels=8, num_blocks=24,
    num_heads=16, num_head_channels=64, mlp_ratio=4, patch_size=1, pe_mode="ape", use_fp16=True,
    share_mod=False, qk_rms_norm=True, qk_rms_norm_cross=False,
)


@dataclass(frozen=True)
class JointModelConfig:
    """Configuration of :class:`SyncHumanJointModel` (defaults = the released checkpoint)."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    structure: SparseStructureFlowConfig = field(default_factory=lambda: replace(_OFFICIAL_STRUCTURE))
    sync_points: tuple[SyncPoint, ...] = OFFICIAL_SYNC_POINTS
    # None: the official split of blocks [0:8], [8:16], [16:]
    structure_segments: tuple[StructureSegment, ...] | None = None
    sync_heads: int = _SYNC_HEADS
    sync_head_dim: int = _SYNC_HEAD_DIM

    def __post_init__(self) -> None:
        if self.structure_segments is None:
            object.__setattr__(self, "structure_segments", official_segments(self.structure.num_blocks))
        segs = self.segments
        pos = 0
        for s in segs:
            if s.phase not in SEGMENT_PHASES:
                raise ConfigError(f"unknown 3D segment phase {s.phase!r} (known: {', '.join(SEGMENT_PHASES)})")
            if s.start != pos or s.stop < s.start:
                raise ConfigError(f"3D segments must cover blocks 0..{self.structure.num_blocks} in order, got {segs}")
            pos = s.stop
        if pos != self.structure.num_blocks or [s.phase for s in segs] != list(SEGMENT_PHASES):
            raise ConfigError(
                f"3D segments must be {SEGMENT_PHASES} covering all {self.structure.num_blocks} blocks, got {segs}"
            )
        n_levels = len(self.unet.block_out_channels)
        for kind in ("ss", "mv"):
            idx = sorted(p.index for p in self.sync_points if p.bridge == kind)
            if idx != list(range(len(idx))):
                raise ConfigError(f"sync points of bridge {kind!r} must use indices 0..n-1 once each, got {idx}")
        for p in self.sync_points:
            if p.where not in ("after_down", "before_up") or p.bridge not in ("ss", "mv"):
                raise ConfigError(f"invalid sync point {p}")
            if not 0 <= p.block < n_levels:
                raise ConfigError(f"sync point {p} names a UNet block that does not exist ({n_levels} levels)")

    @property
    def segments(self) -> tuple[StructureSegment, ...]:
        assert self.structure_segments is not None
        return self.structure_segments

    def sync_channels(self, point: SyncPoint) -> int:
        """UNet channels of the features a sync point sees."""
        if point.where == "after_down":
            return self.unet.down_channels(point.block)
        return self.unet.up_in_channels(point.block)

    def bridge_points(self, kind: str) -> list[SyncPoint]:
        return sorted((p for p in self.sync_points if p.bridge == kind), key=lambda p: p.index)

    @classmethod
    def from_official(cls, data: Mapping[str, Any]) -> JointModelConfig:
        """From the official diffusers-style ``config.json`` of ``SyncHuman_2D3DCrossSpaceDiffusion``.

        Raises :class:`ConfigError` naming keys that are unknown or set to values this implementation
        does not support. Missing keys take the released checkpoint's values.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"expected the config.json mapping, got {type(data).__name__}")
        name = data.get("_class_name")
        if name is not None and name != "SyncHuman_2D3DCrossSpaceDiffusion":
            raise ConfigError(
                f"config.json is for {name!r}, not SyncHuman_2D3DCrossSpaceDiffusion: point the loader at "
                "ckpts/OneStage/SyncHuman_2D3DCrossSpaceDiffusion"
            )
        known = _IGNORED_KEYS | set(_FIXED_KEYS) | set(_UNET_KEYS) | _STRUCTURE_KEYS
        unknown = sorted(k for k in data if k not in known)
        if unknown:
            raise ConfigError(f"SyncHuman_2D3DCrossSpaceDiffusion config keys not supported: {unknown}")
        bad = [f"{k}={data[k]!r} (supported: {v})" for k, v in _FIXED_KEYS.items() if k in data and data[k] not in v]
        if bad:
            raise ConfigError("SyncHuman_2D3DCrossSpaceDiffusion config values not supported: " + "; ".join(bad))

        u: dict[str, Any] = {}
        for k, f in _UNET_KEYS.items():
            if k in data:
                v = data[k]
                u[f] = tuple(v) if isinstance(v, list) else v
        n = len(u.get("block_out_channels", UNetConfig.block_out_channels))
        for f in ("num_attention_heads",):
            if f in u and isinstance(u[f], int):
                u[f] = (u[f],) * n
        if data.get("class_embed_type", "projection") is None:
            u["class_embed_input_dim"] = None
        for f in ("layers_per_block", "transformer_layers_per_block", "cross_attention_dim"):
            if f in u and not isinstance(u[f], int):
                raise ConfigError(f"per-level {f} lists are not supported, got {u[f]!r}")
        unet = UNetConfig(**u)

        s_args = {k: data[k] for k in _STRUCTURE_KEYS if k in data}
        base = {
            "trellis_in_channels": _OFFICIAL_STRUCTURE.in_channels,
            "trellis_out_channels": _OFFICIAL_STRUCTURE.out_channels,
            **{f: getattr(_OFFICIAL_STRUCTURE, f) for f in (
                "resolution", "model_channels", "cond_channels", "num_blocks", "num_heads", "num_head_channels",
                "mlp_ratio", "patch_size", "pe_mode", "use_fp16", "share_mod", "qk_rms_norm", "qk_rms_norm_cross",
            )},
        }
        structure = SparseStructureFlowConfig.from_joint_config({**base, **s_args})
        return cls(unet=unet, structure=structure)


class SyncHumanJointModel(MultiviewUNetLayers, StructureFlowLayers, nn.Module):
    """The stage-1 joint model: ``forward(...) -> (v2d, v3d)`` (see module docstring).

    Built on the meta device it allocates nothing; load weights with
    :func:`synchuman_core.io.state_dict.load_state_dict_strict`. Parameters are created in ``dtype``
    (default fp32, like the official constructor); the official pipeline casts the whole model to fp16.
    """

    def __init__(self, config: JointModelConfig, *, device=None, dtype=None) -> None:
        super().__init__()
        self.config = config
        kw = {"device": device, "dtype": dtype}
        self._init_unet(config.unet, device, dtype)
        self._init_structure_flow(config.structure, device=device, dtype=dtype, convert_fp16=False)
        cs = config.structure.model_channels
        views = config.unet.num_views
        heads, dh = config.sync_heads, config.sync_head_dim
        self.dual_CrossAttblocks_SS = nn.ModuleList(
            [DualCrossAttentionSS(SyncBridgeConfig(config.sync_channels(p), cs, heads, dh, views), **kw)
             for p in config.bridge_points("ss")]
        )
        self.dual_CrossAttblocks_MV = nn.ModuleList(
            [DualCrossAttentionMV(SyncBridgeConfig(config.sync_channels(p), cs, heads, dh, views), **kw)
             for p in config.bridge_points("mv")]
        )
        self._points = {
            (where, b): [p for p in config.sync_points if p.where == where and p.block == b]
            for where in ("after_down", "before_up")
            for b in range(len(config.unet.block_out_channels))
        }
        self._segments = {s.phase: s for s in config.segments}
        # NaN/Inf check of the UNet features at the end of every forward: one host sync per call.
        # :func:`~.sampling.sample_joint` switches it off for its loop and checks once afterwards.
        self.check_finite = True

    # -- pieces ------------------------------------------------------------------------------------

    def _sync(self, where: str, block: int, sample: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for p in self._points[(where, block)]:
            if p.bridge == "ss":
                h = self.dual_CrossAttblocks_SS[p.index](sample, h)
            else:
                sample = self.dual_CrossAttblocks_MV[p.index](sample, h)
        return sample, h

    def _segment(self, phase: str, h: torch.Tensor, t_emb: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        s = self._segments[phase]
        if s.stop == s.start:
            return h
        return self.structure_blocks(h, t_emb, cond, s.start, s.stop)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        class_labels: torch.Tensor | None,
        trellis_x: torch.Tensor,
        trellis_t: torch.Tensor | float,
        trellis_cond: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One velocity evaluation of both branches.

        Args:
            sample: ``[2GV, in, S, S]`` noisy latents concatenated with the image latents (S = sample_size).
            timestep: ``1000 t`` for the UNet (python number or tensor ``[]``/``[1]``/``[2GV]``).
            encoder_hidden_states: ``[2GV, 77, cross_attention_dim]`` view prompts.
            class_labels: ``[2GV, class_embed_input_dim]`` CLIP image embeds + noise-level embedding.
            trellis_x: ``[G, 8, R, R, R]`` structure latent (fp32).
            trellis_t: ``1000 t`` for the 3D branch, ``[1]`` (broadcast) or ``[G]``.
            trellis_cond: ``[G, L, cond_channels]`` DINOv2 tokens (zeros for the unconditional group).

        Returns:
            ``(v2d [2GV, out, S, S]`` in the UNet weight dtype, ``v3d [G, 8, R, R, R]`` in ``trellis_x.dtype)``.
        """
        cfg = self.config.unet
        groups = self.check_multiview_batch(sample.shape[0])
        if trellis_x.shape[0] != groups:
            raise ValueError(
                f"trellis_x has batch {trellis_x.shape[0]} but the UNet batch {sample.shape[0]} holds {groups} groups"
            )
        if tuple(sample.shape[-2:]) != (cfg.sample_size, cfg.sample_size):
            raise ValueError(
                f"sample must be {cfg.sample_size}x{cfg.sample_size} latents (the sync bridges were trained at "
                f"this size), got {tuple(sample.shape[-2:])}"
            )
        dt = self.conv_in.weight.dtype
        sample = sample.to(dt)
        context = encoder_hidden_states.to(dt)

        # 1. 3D tokens, time embedding, first block segment.
        h = self.structure_embed(trellis_x)  # [G, R^3, C]
        t3 = self.structure_time(trellis_t)  # [G|1, C]
        h = self._segment("before_down", h, t3, trellis_cond)

        # 2. UNet down path; sync on the main path only (skips keep pre-sync features).
        if cfg.center_input_sample:
            sample = 2 * sample - 1.0
        emb = self.unet_embedding(timestep, class_labels, sample.shape[0], sample)  # [2GV, 4*C0]
        x = self.conv_in(sample)
        skips: list[torch.Tensor] = [x]
        for i, blk in enumerate(self.down_blocks):
            x, s = blk(x, emb, context)
            skips.extend(s)
            x, h = self._sync("after_down", i, x, h)

        # 3. mid block, second 3D segment.
        x = self.mid_block(x, emb, context)
        h = self._segment("after_mid", h, t3, trellis_cond)

        # 4. up path.
        for i, blk in enumerate(self.up_blocks):
            x, h = self._sync("before_up", i, x, h)
            x = blk(x, skips, emb, context)

        # 5. last 3D segment and both heads.
        h = self._segment("after_up", h, t3, trellis_cond)
        v3d = self.structure_head(h, trellis_x.dtype)
        if self.check_finite and not torch.isfinite(x).all():
            raise NumericalError(
                "NaN/Inf in the stage-1 UNet features: the run diverged (fp16 overflow?). Retry in fp32 or "
                "bf16, or check the inputs and the checkpoint."
            )
        v2d = self.unet_head(x)
        return v2d, v3d
