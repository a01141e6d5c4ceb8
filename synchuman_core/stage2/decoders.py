"""Stage-2 multiview-guided decoders (docs/ARCHITECTURE.md §2.3, §7): structured latent -> mesh / Gaussians.

Both decoders share a trunk (TRELLIS ``SparseTransformerBase`` + SyncHuman's multiview injection):

1. ``input_layer_color`` / ``input_layer_normal`` (Linear ``4*mv_dim -> mv_dim``, fp32) on every pixel of
   the DINOv2 feature maps ``[B, 4, 64, 64, 4096]``; :func:`~synchuman_core.stage2.mv_features.condition_mv`
   gathers each voxel's pixels (``row = 63 - z``, columns x|y|x|y) -> ``[N, 4*mv_dim]`` per modality.
2. ``h = input_layer(slat) + APE(x, y, z)`` (fp32) -> torso dtype.
3. ``num_blocks`` x :class:`MVSparseTransformerBlock`: windowed (swin, shift ``window/2`` on odd blocks)
   self-attention; multiview injection ``h += mv_condition([norm3(h), normal, colour])``; MLP.
4. Heads: Gaussians (``F.layer_norm`` -> ``out_layer`` -> 32 Gaussians per voxel) or mesh (2 x
   :class:`SparseSubdivideBlock3d` 64^3 -> 256^3, ``out_layer`` -> 101 FlexiCubes channels ->
   :func:`~synchuman_core.geometry.flexicubes.sparse_features_to_mesh`).

Kept quirks (weight compatibility): the decoders' ``forward(x, mv_color, mv_normal)`` takes colour first
while every block concatenates ``[h, normal, colour]``; blocks size ``mv_condition`` with a fixed
``mv_dim`` (1024 in the released configs, which the official blocks hard-code); ``norm3`` feeds the injection and ``norm2`` the MLP;
the mesh decoder's 1x1 skip convs use spconv's ``weight.view(in, out)`` reinterpretation.

With ``use_fp16`` the constructor converts the Linear / sparse-conv weights of ``blocks`` (and the mesh
decoder's ``upsample``) to fp16 as TRELLIS does; the torso then runs in the dtype of those weights
(cast the module to run it in fp32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..geometry.cameras import radical_inverse
from ..geometry.flexicubes import FEATS_LAYOUT, Mesh, sparse_features_to_mesh
from ..modules import LayerNorm32, convert_to_fp16, sincos_position_embedding
from ..modules.config import config_from_official
from ..sparse import (
    FP16_SPARSE_MODULE_TYPES,
    SparseConv3d,
    SparseGroupNorm32,
    SparseLinear,
    SparseSiLU,
    SparseSubdivide,
    SparseTensor,
    SparseTransformerBlock,
)
from .gaussians import Gaussians
from .mv_features import mv_condition_views, mv_pixel_index

__all__ = [
    "BLOCK_MV_DIM",
    "GaussianRepresentationConfig",
    "MVSparseTransformerBlock",
    "MeshRepresentationConfig",
    "SLatDecoderConfig",
    "SLatGaussianDecoder",
    "SLatGaussianDecoderConfig",
    "SLatMeshDecoder",
    "SLatMeshDecoderConfig",
    "SparseSubdivideBlock3d",
    "hammersley_offsets",
]

# The official SparseTransformerBlock is built without the decoder's mv_dim, so its default (1024)
# always sizes mv_condition: Linear(C + 2 * views * 1024, 4C). The released configs do not set mv_dim
# (= 1024), so honouring mv_dim in the blocks changes nothing for them and lets small test checkpoints
# (tiny DINOv2 widths) run the decoders end to end.
BLOCK_MV_DIM = 1024


# ---------------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------------


def _strict_fields(cls: type, data: dict[str, Any], renames: dict[str, str] | None = None) -> dict[str, Any]:
    """``data`` keys mapped onto the dataclass fields of ``cls``; unknown keys raise ConfigError."""
    renames = renames or {}
    names = {f.name for f in fields(cls)}
    out, unknown = {}, []
    for k, v in data.items():
        key = renames.get(k, k)
        (out.__setitem__(key, v) if key in names else unknown.append(k))
    if unknown:
        raise ConfigError(f"{cls.__name__}: representation_config keys {sorted(unknown)} are not supported")
    return out


@dataclass
class GaussianRepresentationConfig:
    """``representation_config`` of the Gaussian decoder (real values in docs/ARCHITECTURE.md §7)."""

    lr: dict[str, float] = field(
        default_factory=lambda: {"_xyz": 1.0, "_features_dc": 1.0, "_opacity": 1.0, "_scaling": 1.0, "_rotation": 0.1}
    )
    perturb_offset: bool = True
    voxel_size: float = 1.5
    num_gaussians: int = 32
    filter_2d_kernel_size: float = 0.1  # "2d_filter_kernel_size": renderer only
    filter_3d_kernel_size: float = 9e-4  # "3d_filter_kernel_size": minimum Gaussian scale
    scaling_bias: float = 4e-3
    opacity_bias: float = 0.1
    scaling_activation: str = "softplus"

    _RENAMES = {"2d_filter_kernel_size": "filter_2d_kernel_size", "3d_filter_kernel_size": "filter_3d_kernel_size"}

    @classmethod
    def from_official(cls, data: dict[str, Any]) -> GaussianRepresentationConfig:
        cfg = cls(**_strict_fields(cls, dict(data), cls._RENAMES))
        missing = {"_xyz", "_features_dc", "_opacity", "_scaling", "_rotation"} - set(cfg.lr)
        if missing:
            raise ConfigError(f"representation_config.lr lacks {sorted(missing)}")
        if cfg.scaling_activation not in ("softplus", "exp"):
            raise ConfigError(f"scaling_activation must be 'softplus' or 'exp', got {cfg.scaling_activation!r}")
        return cfg


@dataclass
class MeshRepresentationConfig:
    """``representation_config`` of the mesh decoder: ``use_color`` (official default False)."""

    use_color: bool = False

    @classmethod
    def from_official(cls, data: dict[str, Any]) -> MeshRepresentationConfig:
        return cls(**_strict_fields(cls, dict(data)))


@dataclass
class SLatDecoderConfig:
    """Arguments shared by the two SyncHuman decoders (real: res 64, 768 ch, 12 blocks, 12 heads, swin 8,
    ``use_fp16``, ``4_view``, ``use_multiscale``)."""

    resolution: int
    model_channels: int
    latent_channels: int
    num_blocks: int
    num_heads: int | None = None
    num_head_channels: int = 64
    mlp_ratio: float = 4.0
    attn_mode: str = "swin"
    window_size: int = 8
    pe_mode: str = "ape"
    use_fp16: bool = False
    qk_rms_norm: bool = False
    mv_dim: int = 1024
    mv_condition_mode: str = "4_view"
    use_multiscale: bool = False
    use_faceinfo: bool = False

    def __post_init__(self) -> None:
        if self.pe_mode != "ape":
            raise ConfigError(f"pe_mode {self.pe_mode!r} is not supported (the decoder weights use 'ape')")
        if self.attn_mode not in ("swin", "full"):
            raise ConfigError(f"attn_mode {self.attn_mode!r} is not supported (use 'swin' or 'full')")
        if self.heads <= 0 or self.model_channels % self.heads:
            raise ConfigError(f"model_channels {self.model_channels} is not divisible into {self.heads} heads")
        if self.mv_dim <= 0:
            raise ConfigError(f"mv_dim must be positive, got {self.mv_dim}")
        if self.use_faceinfo:
            raise ConfigError("use_faceinfo=true is not supported (the released decoders use false)")
        mv_condition_views(self.mv_condition_mode)

    @property
    def heads(self) -> int:
        return self.num_heads or self.model_channels // self.num_head_channels

    @property
    def views(self) -> tuple[int, ...]:
        return mv_condition_views(self.mv_condition_mode)


@dataclass
class SLatMeshDecoderConfig(SLatDecoderConfig):
    representation_config: MeshRepresentationConfig = field(default_factory=MeshRepresentationConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.representation_config, dict):
            self.representation_config = MeshRepresentationConfig.from_official(self.representation_config)
        if self.model_channels % 8 or (self.model_channels // 8) % 32:
            raise ConfigError(f"model_channels {self.model_channels} must give model_channels/8 divisible by 32")

    @classmethod
    def from_official(cls, data: dict[str, Any]) -> SLatMeshDecoderConfig:
        """From ``ckpts/SecondStage/ckpts/decoder_Mesh/config.json`` (``{"name", "args"}``) or its args."""
        return config_from_official(cls, data, names=("SLatMeshDecoder",), ignored=("use_checkpoint",))


@dataclass
class SLatGaussianDecoderConfig(SLatDecoderConfig):
    representation_config: GaussianRepresentationConfig = field(default_factory=GaussianRepresentationConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.representation_config, dict):
            self.representation_config = GaussianRepresentationConfig.from_official(self.representation_config)

    @classmethod
    def from_official(cls, data: dict[str, Any]) -> SLatGaussianDecoderConfig:
        """From ``ckpts/SecondStage/ckpts/decoder_GS/config.json`` (``{"name", "args"}``) or its args."""
        return config_from_official(cls, data, names=("SLatGaussianDecoder",), ignored=("use_checkpoint",))


# ---------------------------------------------------------------------------------------------------
# blocks
# ---------------------------------------------------------------------------------------------------


class MVSparseTransformerBlock(SparseTransformerBlock):
    """SyncHuman's ``SparseTransformerBlock``: attention, multiview injection, MLP.

    ``x += attn(norm1(x))``; ``x += mv_condition(cat[norm3(x), mv_normal, mv_color])``;
    ``x += mlp(norm2(x))``. ``mv_condition = Linear(C + 2*views*1024, 4C) -> GELU(tanh) -> Linear(4C, C)``
    (keys ``mv_condition.0``, ``mv_condition.2``). ``forward(x [N, C], mv_normal [N, views*1024],
    mv_color [N, views*1024])``.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        attn_mode: str = "full",
        window_size: int | None = None,
        shift_window: int | None = None,
        qk_rms_norm: bool = False,
        num_views: int = 4,
        mv_dim: int = BLOCK_MV_DIM,
        *,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(
            channels, num_heads, mlp_ratio, attn_mode, window_size, shift_window,
            qk_rms_norm=qk_rms_norm, device=device, dtype=dtype,
        )  # fmt: skip
        kw = {"device": device, "dtype": dtype}
        self.norm3 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6, **kw)
        self.mv_condition = nn.Sequential(
            nn.Linear(channels + 2 * num_views * mv_dim, 4 * channels, **kw),
            nn.GELU(approximate="tanh"),
            nn.Linear(4 * channels, channels, **kw),
        )

    def forward(self, x: SparseTensor, mv_normal: torch.Tensor, mv_color: torch.Tensor) -> SparseTensor:  # type: ignore[override]
        x = self._attn_part(x)
        h = self.mv_condition(torch.cat([self.norm3(x.feats), mv_normal, mv_color], dim=1))  # [N, C]
        x = x.replace(x.feats + h)
        return self._mlp_part(x)


class SparseSubdivideBlock3d(nn.Module):
    """``GN32 -> SiLU -> subdivide -> SubMConv3(C->Co) -> GN32 -> SiLU -> SubMConv3(Co->Co)`` plus the
    subdivided input through ``skip_connection`` (1x1 spconv with the ``view(in, out)`` quirk when
    ``Co != C``). Every voxel becomes 8 children at ``2*coords + {0,1}^3``. Keys ``act_layers.0``,
    ``out_layers.{0,1,3}``, ``skip_connection``."""

    def __init__(
        self, channels: int, out_channels: int | None = None, num_groups: int = 32, *, device=None, dtype=None
    ):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        out = out_channels or channels
        self.act_layers = nn.Sequential(SparseGroupNorm32(num_groups, channels, **kw), SparseSiLU())
        self.sub = SparseSubdivide()
        self.out_layers = nn.Sequential(
            SparseConv3d(channels, out, 3, **kw),
            SparseGroupNorm32(num_groups, out, **kw),
            SparseSiLU(),
            SparseConv3d(out, out, 3, **kw),
        )
        self.skip_connection: nn.Module = (
            nn.Identity() if out == channels else SparseConv3d(channels, out, 1, spconv_1x1_quirk=True, **kw)
        )

    def forward(self, x: SparseTensor) -> SparseTensor:
        h = self.sub(self.act_layers(x))
        x = self.sub(x)
        h = self.out_layers(h)
        return h.replace(h.feats + self.skip_connection(x).feats)


def hammersley_offsets(num: int, voxel_size: float) -> torch.Tensor:
    """``offset_perturbation [num, 3]``: ``atanh((hammersley(3, i, num) * 2 - 1) / voxel_size)`` (fp32).

    Hammersley point i = ``(i / num, radical_inverse_2(i), radical_inverse_3(i))``.
    """
    pts = [[i / num, radical_inverse(2, i), radical_inverse(3, i)] for i in range(num)]
    p = torch.tensor(pts, dtype=torch.float64).float() * 2 - 1
    return torch.atanh(p / voxel_size)


# ---------------------------------------------------------------------------------------------------
# decoders
# ---------------------------------------------------------------------------------------------------


class _SLatDecoderBase(nn.Module):
    """Trunk shared by both decoders; subclasses register their heads between the calls."""

    config: SLatDecoderConfig

    def _build_trunk(self, cfg: SLatDecoderConfig, kw: dict) -> None:
        c = cfg.model_channels
        self.input_layer = SparseLinear(cfg.latent_channels, c, **kw)
        self.blocks = nn.ModuleList(
            MVSparseTransformerBlock(
                c,
                cfg.heads,
                cfg.mlp_ratio,
                attn_mode="windowed" if cfg.attn_mode == "swin" else "full",
                window_size=cfg.window_size if cfg.attn_mode == "swin" else None,
                shift_window=(cfg.window_size // 2 * (i % 2)) if cfg.attn_mode == "swin" else None,
                qk_rms_norm=cfg.qk_rms_norm,
                num_views=len(cfg.views),
                mv_dim=cfg.mv_dim,
                **kw,
            )
            for i in range(cfg.num_blocks)
        )

    def _build_mv_inputs(self, cfg: SLatDecoderConfig, kw: dict) -> None:
        in_dim = 4 * cfg.mv_dim if cfg.use_multiscale else cfg.mv_dim
        self.input_layer_color = nn.Linear(in_dim, cfg.mv_dim, **kw)
        self.input_layer_normal = nn.Linear(in_dim, cfg.mv_dim, **kw)

    def torso_dtype(self) -> torch.dtype:
        """Compute dtype of the blocks (the dtype of their Linear weights)."""
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                return m.weight.dtype
        return self.input_layer.weight.dtype

    def condition_mv(
        self, x: SparseTensor, mv_color: torch.Tensor, mv_normal: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cond_normal, cond_color)`` ``[N, views*mv_dim]`` from DINOv2 maps ``[B, 4, 64, 64, 4*mv_dim]``.

        The official applies ``input_layer_color/normal`` to every pixel and then gathers; the layer acts
        per pixel, so we gather the distinct pixels the voxels read first and project only those (same
        values, at most ``4N`` rows instead of ``B*4*64*64``).
        """
        out = []
        for name, t, layer in (
            ("mv_normal", mv_normal, self.input_layer_normal),
            ("mv_color", mv_color, self.input_layer_color),
        ):
            if t.ndim != 5 or t.shape[-1] != layer.in_features:
                raise ValueError(
                    f"{name} must be [B, 4, R, R, {layer.in_features}] DINOv2 feature maps, got {tuple(t.shape)}"
                )
            idx = mv_pixel_index(x.coords.to(t.device), t.shape, self.config.views)  # [N, nv]
            rows, inverse = torch.unique(idx.reshape(-1), return_inverse=True)
            w = layer.weight
            proj = layer(t.reshape(-1, t.shape[-1])[rows].to(device=w.device, dtype=w.dtype))  # [U, mv_dim]
            out.append(proj[inverse.to(proj.device)].reshape(idx.shape[0], -1))  # [N, nv*mv_dim]
        return out[0], out[1]

    def trunk(self, x: SparseTensor, cond_normal: torch.Tensor, cond_color: torch.Tensor) -> SparseTensor:
        """Input layer + APE + the multiview transformer blocks; returns features in the torso dtype."""
        cfg = self.config
        if x.feats.ndim != 2 or x.feats.shape[1] != cfg.latent_channels:
            raise ValueError(f"SLat features must be [N, {cfg.latent_channels}], got {tuple(x.feats.shape)}")
        dt = self.torso_dtype()
        w = self.input_layer.weight
        h = self.input_layer(x.to(w.dtype))
        h = h.replace(h.feats + sincos_position_embedding(x.coords[:, 1:], cfg.model_channels).to(w.dtype)).to(dt)
        cond_normal, cond_color = cond_normal.to(dt), cond_color.to(dt)
        for blk in self.blocks:
            h = blk(h, cond_normal, cond_color)
        return h


class SLatMeshDecoder(_SLatDecoderBase):
    """SyncHuman ``SLatMeshDecoder``: ``forward(x, mv_color, mv_normal) -> list[Mesh]`` (one per batch item).

    ``x``: SLat ``SparseTensor [N, 8]`` on the 64^3 grid; ``mv_color``/``mv_normal``: DINOv2 maps
    ``[B, 4, 64, 64, 4096]``. :meth:`forward_features` returns the 101-channel FlexiCubes features on the
    256^3 grid (``[64 N, 101]``) before mesh extraction.
    """

    def __init__(self, config: SLatMeshDecoderConfig, *, device=None, dtype=None) -> None:
        super().__init__()
        self.config = cfg = config
        kw = {"device": device, "dtype": dtype}
        c = cfg.model_channels
        self._build_trunk(cfg, kw)
        self.upsample = nn.ModuleList(
            [SparseSubdivideBlock3d(c, c // 4, **kw), SparseSubdivideBlock3d(c // 4, c // 8, **kw)]
        )
        self.use_color = cfg.representation_config.use_color
        out_channels = FEATS_LAYOUT["color"][1] if self.use_color else FEATS_LAYOUT["weights"][1]
        self.out_layer = SparseLinear(c // 8, out_channels, **kw)
        self._build_mv_inputs(cfg, kw)
        if cfg.use_fp16 and dtype is None:
            for part in (self.blocks, self.upsample):
                convert_to_fp16(part, extra_types=FP16_SPARSE_MODULE_TYPES)

    @property
    def mesh_resolution(self) -> int:
        return self.config.resolution * 4

    def forward_features(self, x: SparseTensor, mv_color: torch.Tensor, mv_normal: torch.Tensor) -> SparseTensor:
        cond_normal, cond_color = self.condition_mv(x, mv_color, mv_normal)
        h = self.trunk(x, cond_normal, cond_color)
        for blk in self.upsample:
            h = blk(h)
        w = self.out_layer.weight
        return self.out_layer(h.to(x.dtype).to(w.dtype)).to(x.dtype)

    def to_representation(self, h: SparseTensor) -> list[Mesh]:
        """FlexiCubes at ``4 * resolution`` on each batch item's 101-channel features (inference path)."""
        meshes = []
        for sl in h.layout:
            meshes.append(
                sparse_features_to_mesh(
                    h.coords[sl], h.feats[sl].float(), res=self.mesh_resolution, use_color=self.use_color
                )
            )
        return meshes

    def forward(self, x: SparseTensor, mv_color: torch.Tensor, mv_normal: torch.Tensor) -> list[Mesh]:
        return self.to_representation(self.forward_features(x, mv_color, mv_normal))


class SLatGaussianDecoder(_SLatDecoderBase):
    """SyncHuman ``SLatGaussianDecoder``: ``forward(x, mv_color, mv_normal) -> list[Gaussians]``.

    :meth:`forward_features` returns the raw ``[N, 32*14]`` head output; :meth:`to_representation`
    turns it into ``32 N`` Gaussians per batch item (layout ``xyz 96 | features_dc 96 | scaling 96 |
    rotation 128 | opacity 32``, each multiplied by its ``lr`` factor; offsets ``tanh(o + perturbation)
    * voxel_size / (2 res)`` around the voxel centre).
    """

    def __init__(self, config: SLatGaussianDecoderConfig, *, device=None, dtype=None) -> None:
        super().__init__()
        self.config = cfg = config
        rep = cfg.representation_config
        kw = {"device": device, "dtype": dtype}
        n = rep.num_gaussians
        self.layout = {
            "_xyz": (n, 3), "_features_dc": (n, 1, 3), "_scaling": (n, 3), "_rotation": (n, 4), "_opacity": (n, 1),
        }  # fmt: skip
        self.register_buffer(
            "offset_perturbation",
            hammersley_offsets(n, rep.voxel_size).to(device=device, dtype=dtype or torch.float32),
        )
        self._build_trunk(cfg, kw)
        out_channels = sum(math.prod(s) for s in self.layout.values())
        self.out_layer = SparseLinear(cfg.model_channels, out_channels, **kw)
        self._build_mv_inputs(cfg, kw)
        if cfg.use_fp16 and dtype is None:
            convert_to_fp16(self.blocks, extra_types=FP16_SPARSE_MODULE_TYPES)

    def forward_features(self, x: SparseTensor, mv_color: torch.Tensor, mv_normal: torch.Tensor) -> SparseTensor:
        cond_normal, cond_color = self.condition_mv(x, mv_color, mv_normal)
        h = self.trunk(x, cond_normal, cond_color).to(x.dtype)
        # official: F.layer_norm (no affine, eps 1e-5) in the input dtype
        h = h.replace(F.layer_norm(h.feats, h.feats.shape[-1:]))
        w = self.out_layer.weight
        return self.out_layer(h.to(w.dtype)).to(x.dtype)

    def to_representation(self, h: SparseTensor) -> list[Gaussians]:
        rep = self.config.representation_config
        res = self.config.resolution
        out = []
        for sl in h.layout:
            feats, coords = h.feats[sl], h.coords[sl]
            centre = (coords[:, 1:].float() + 0.5) / res  # [n, 3]
            params: dict[str, torch.Tensor] = {}
            start = 0
            for key, shape in self.layout.items():
                size = math.prod(shape)
                v = feats[:, start : start + size].reshape(-1, *shape) * rep.lr[key]
                start += size
                if key == "_xyz":
                    if rep.perturb_offset:
                        v = v + self.offset_perturbation.to(v.dtype)
                    v = torch.tanh(v) / res * 0.5 * rep.voxel_size
                    v = centre[:, None, :] + v  # [n, G, 3]
                params[key] = v.flatten(0, 1)
            out.append(
                Gaussians(
                    xyz=params["_xyz"],
                    features_dc=params["_features_dc"],
                    scaling=params["_scaling"],
                    rotation=params["_rotation"],
                    opacity=params["_opacity"],
                    aabb=(-0.5, -0.5, -0.5, 1.0, 1.0, 1.0),
                    min_kernel_size=rep.filter_3d_kernel_size,
                    scaling_bias=rep.scaling_bias,
                    opacity_bias=rep.opacity_bias,
                    scaling_activation=rep.scaling_activation,
                    extras={"filter_2d_kernel_size": rep.filter_2d_kernel_size},
                )
            )
        return out

    def forward(self, x: SparseTensor, mv_color: torch.Tensor, mv_normal: torch.Tensor) -> list[Gaussians]:
        return self.to_representation(self.forward_features(x, mv_color, mv_normal))
