"""DINOv2 ViT with register tokens, reading the original torch.hub checkpoint keys.

SyncHuman uses ``dinov2_vitl14_reg`` (weights ``dinov2_vitl14_reg4_pretrain.pth``) twice:

* the global condition of both flow models: ``x_prenorm`` of a 518x518 crop (all 1 + 4 + 37*37 = 1374
  tokens, before DINO's final norm) passed through a non-affine ``layer_norm`` (eps 1e-5);
* the multiview features of the stage-2 decoders: ``get_intermediate_layers(x, [4, 11, 17, 23])`` of the
  768x768 views resized to 896x896 (64x64 patches), each normed, class/register tokens removed, and
  concatenated along channels -> 4096 channels.

State-dict keys are exactly the hub ones: ``cls_token``, ``register_tokens``, ``pos_embed``, ``mask_token``,
``patch_embed.proj.*``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2,ls2.gamma}``,
``norm.*``. :mod:`.dinov2_keys` converts a transformers ``Dinov2WithRegistersModel`` checkpoint (e.g.
``facebook/dinov2-with-registers-large``, old or new attention names) to these keys.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..attention import attention
from ..errors import ConfigError, InputImageError

__all__ = [
    "DINOV2_VITL14_REG4",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MV_FEATURE_LAYERS",
    "DINOv2",
    "DINOv2Config",
]

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: 0-based block indices whose outputs feed the stage-2 decoders (4 x 1024 = 4096 channels).
MV_FEATURE_LAYERS = (4, 11, 17, 23)
#: Side of the multiview images fed to DINO in stage 2 (896 / 14 = 64 patches).
MV_FEATURE_SIZE = 896
#: eps of the non-affine layer norm applied to ``x_prenorm`` for the global condition.
COND_LAYER_NORM_EPS = 1e-5


@dataclass(frozen=True)
class DINOv2Config:
    """Architecture of a DINOv2 ViT (defaults: ViT-L/14 with 4 registers, as ``dinov2_vitl14_reg``)."""

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    patch_size: int = 14
    img_size: int = 518  # pos_embed covers (img_size // patch_size)^2 patches + the class token
    num_register_tokens: int = 4
    mlp_ratio: float = 4.0
    in_chans: int = 3
    qkv_bias: bool = True
    layerscale: bool = True  # hub ``init_values=1.0`` -> ``ls1.gamma`` / ``ls2.gamma`` exist
    interpolate_antialias: bool = True
    interpolate_offset: float = 0.0
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"DINOv2 embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.img_size % self.patch_size:
            raise ConfigError(f"DINOv2 img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.interpolate_offset != 0.0:
            raise ConfigError(
                "DINOv2 interpolate_offset other than 0.0 (the pre-register hub models) is not supported; "
                "SyncHuman uses the register model (offset 0.0)."
            )

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def hidden_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    # Keys of a transformers ``Dinov2WithRegistersConfig`` (config.json) and how they map onto ours.
    _HF_MAP = {
        "hidden_size": "embed_dim",
        "num_hidden_layers": "depth",
        "num_attention_heads": "num_heads",
        "patch_size": "patch_size",
        "image_size": "img_size",
        "num_register_tokens": "num_register_tokens",
        "mlp_ratio": "mlp_ratio",
        "num_channels": "in_chans",
        "qkv_bias": "qkv_bias",
        "layer_norm_eps": "layer_norm_eps",
    }
    # Keys with no effect on inference with loaded weights.
    _HF_IGNORED = frozenset(
        {
            "_name_or_path",
            "architectures",
            "model_type",
            "torch_dtype",
            "dtype",
            "transformers_version",
            "initializer_range",
            "layerscale_value",
            "drop_path_rate",
            "out_features",
            "out_indices",
            "stage_names",
            "apply_layernorm",
            "reshape_hidden_states",
            "intermediate_size",
            "id2label",
            "label2id",
            "return_dict",
            "output_hidden_states",
            "output_attentions",
            "chunk_size_feed_forward",
            "is_encoder_decoder",
            "problem_type",
            "tie_word_embeddings",
            "add_cross_attention",
            "is_decoder",
        }
    )

    @classmethod
    def from_official(cls, config: Mapping) -> DINOv2Config:
        """Read our own field names, or a transformers ``Dinov2WithRegistersConfig`` dict (config.json).

        Raises :class:`ConfigError` naming any key that would change the architecture in a way we do
        not implement (SwiGLU FFN, non-GELU activation, dropout) or that we do not know.
        """
        if not isinstance(config, Mapping):
            raise ConfigError(f"DINOv2 config must be a dict, got {type(config).__name__}")
        ours = {f.name for f in fields(cls)}
        kwargs: dict = {}
        unknown: list[str] = []
        for key, value in config.items():
            if key in ours:
                kwargs[key] = value
            elif key in cls._HF_MAP:
                kwargs[cls._HF_MAP[key]] = value
            elif key in cls._HF_IGNORED:
                continue
            elif key == "use_swiglu_ffn":
                if value:
                    raise ConfigError("DINOv2 with a SwiGLU FFN (ViT-g) is not supported; use ViT-L/14 with registers.")
            elif key == "hidden_act":
                if value != "gelu":
                    raise ConfigError(f"DINOv2 hidden_act {value!r} is not supported (only 'gelu').")
            elif key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
                if value:
                    logger.warning("DINOv2 config %s=%s ignored: dropout is inactive at inference", key, value)
            else:
                unknown.append(key)
        if unknown:
            raise ConfigError(f"DINOv2 config has keys we cannot honour: {sorted(unknown)}")
        hidden = config.get("intermediate_size")
        cfg = cls(**kwargs)
        if hidden is not None and int(hidden) != cfg.hidden_dim:
            raise ConfigError(f"DINOv2 intermediate_size {hidden} != embed_dim * mlp_ratio = {cfg.hidden_dim}")
        return cfg


#: The configuration of ``dinov2_vitl14_reg`` (``dinov2_vitl14_reg4_pretrain.pth``), 304,372,736 params.
DINOV2_VITL14_REG4 = DINOv2Config()


class PatchEmbed(nn.Module):
    """``[B, 3, H, W] -> [B, (H/p)*(W/p), D]`` by a stride-p convolution (key ``proj``)."""

    def __init__(self, cfg: DINOv2Config, *, device=None, dtype=None) -> None:
        super().__init__()
        p = cfg.patch_size
        self.patch_size = p
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, kernel_size=p, stride=p, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, N, D], row-major patches


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (rows ordered q | k | v, head-major)."""

    def __init__(self, cfg: DINOv2Config, *, device=None, dtype=None) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        d = cfg.embed_dim
        self.qkv = nn.Linear(d, 3 * d, bias=cfg.qkv_bias, device=device, dtype=dtype)
        self.proj = nn.Linear(d, d, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).unbind(2)  # [B, N, H, Dh]
        return self.proj(attention(q, k, v).reshape(b, n, c))


class LayerScale(nn.Module):
    def __init__(self, dim: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, cfg: DINOv2Config, *, device=None, dtype=None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.hidden_dim, device=device, dtype=dtype)
        self.fc2 = nn.Linear(cfg.hidden_dim, cfg.embed_dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm ViT block with layer scale: ``x + ls1(attn(norm1 x))``, ``x + ls2(mlp(norm2 x))``."""

    def __init__(self, cfg: DINOv2Config, *, device=None, dtype=None) -> None:
        super().__init__()
        d, eps = cfg.embed_dim, cfg.layer_norm_eps
        self.norm1 = nn.LayerNorm(d, eps=eps, device=device, dtype=dtype)
        self.attn = Attention(cfg, device=device, dtype=dtype)
        self.ls1 = LayerScale(d, device=device, dtype=dtype) if cfg.layerscale else nn.Identity()
        self.norm2 = nn.LayerNorm(d, eps=eps, device=device, dtype=dtype)
        self.mlp = Mlp(cfg, device=device, dtype=dtype)
        self.ls2 = LayerScale(d, device=device, dtype=dtype) if cfg.layerscale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


def _to_image_batch(image, patch_size: int) -> torch.Tensor:
    """A 518-style DINO input as ``[B, 3, H, W]`` float in [0, 1].

    Accepts a PIL image (any mode; resized to 518 with Lanczos like the official ``encode_image`` when
    it is not 518 already), a uint8 array/tensor ``[H, W, 3]`` / ``[B, H, W, 3]`` (0..255), a float
    ``[H, W, 3]`` / ``[B, H, W, 3]`` / ``[B, 3, H, W]`` tensor in [0, 1].
    """
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(image, Image.Image):
        if image.size != (518, 518):
            image = image.resize((518, 518), Image.Resampling.LANCZOS)
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
    if not isinstance(image, torch.Tensor):
        raise InputImageError(f"DINOv2 input must be a PIL image, numpy array or tensor, got {type(image).__name__}")
    x = image
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif not x.is_floating_point():
        raise InputImageError(f"DINOv2 input must be uint8 (0..255) or float (0..1), got {x.dtype}")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise InputImageError(f"DINOv2 input must be [H,W,3], [B,H,W,3] or [B,3,H,W], got shape {tuple(x.shape)}")
    if x.shape[1] != 3 and x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] != 3:
        raise InputImageError(f"DINOv2 input must have 3 channels (RGB), got shape {tuple(image.shape)}")
    h, w = x.shape[-2:]
    if h % patch_size or w % patch_size:
        raise InputImageError(
            f"DINOv2 input size {h}x{w} is not a multiple of the patch size {patch_size}: use the 518x518 crop "
            "made by synchuman_core.preprocess."
        )
    return x.float()


def normalize_imagenet(x: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` per channel for ``[B, 3, H, W]`` in [0, 1] (torchvision ``Normalize``)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class DINOv2(nn.Module):
    """DINOv2 ViT with registers; ``forward(x) -> x_prenorm [B, 1 + R + N, D]`` (before the final norm).

    Token order: class token, ``R`` register tokens (no position embedding), ``N`` patch tokens (row-major).
    """

    def __init__(self, config: DINOv2Config = DINOV2_VITL14_REG4, *, device=None, dtype=None) -> None:
        super().__init__()
        self.config = cfg = config
        d = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg, device=device, dtype=dtype)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d, device=device, dtype=dtype))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.grid * cfg.grid + 1, d, device=device, dtype=dtype))
        if cfg.num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, d, device=device, dtype=dtype))
        else:
            self.register_tokens = None
        self.blocks = nn.ModuleList(Block(cfg, device=device, dtype=dtype) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps, device=device, dtype=dtype)
        self.mask_token = nn.Parameter(torch.zeros(1, d, device=device, dtype=dtype))  # training only; kept for keys

    @property
    def dtype(self) -> torch.dtype:
        return self.cls_token.dtype

    @property
    def device(self) -> torch.device:
        return self.cls_token.device

    # -- tokens -------------------------------------------------------------------------------------
    def interpolate_pos_encoding(self, h_patches: int, w_patches: int, dtype: torch.dtype) -> torch.Tensor:
        """Position embeddings for an ``h x w`` patch grid -> ``[1, 1 + h*w, D]``.

        The stored grid (37x37 for 518) is resized with bicubic interpolation, antialiased, by target size
        (``interpolate_offset=0``), computed in fp32 and cast to ``dtype`` (hub behaviour). The stored
        embedding is returned unchanged when the grid already matches.
        """
        pe = self.pos_embed
        m = self.config.grid
        if h_patches == m and w_patches == m:
            return pe.to(dtype)
        d = pe.shape[-1]
        patch_pe = pe[:, 1:].float().reshape(1, m, m, d).permute(0, 3, 1, 2)  # [1, D, M, M]
        patch_pe = F.interpolate(
            patch_pe,
            size=(h_patches, w_patches),
            mode="bicubic",
            align_corners=False,
            antialias=self.config.interpolate_antialias,
        )
        patch_pe = patch_pe.permute(0, 2, 3, 1).reshape(1, h_patches * w_patches, d)
        return torch.cat([pe[:, :1].float(), patch_pe], dim=1).to(dtype)

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` (normalized) -> ``[B, 1 + R + N, D]``."""
        b, _, h, w = x.shape
        p = self.config.patch_size
        tokens = self.patch_embed(x)  # [B, N, D]
        tokens = torch.cat([self.cls_token.to(tokens.dtype).expand(b, -1, -1), tokens], dim=1)
        tokens = tokens + self.interpolate_pos_encoding(h // p, w // p, tokens.dtype)
        if self.register_tokens is not None:
            regs = self.register_tokens.to(tokens.dtype).expand(b, -1, -1)
            tokens = torch.cat([tokens[:, :1], regs, tokens[:, 1:]], dim=1)
        return tokens

    # -- outputs ------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, 3, H, W]`` (ImageNet-normalized) -> ``x_prenorm [B, 1 + R + N, D]``."""
        h = self.prepare_tokens(x)
        for blk in self.blocks:
            h = blk(h)
        return h

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The hub's ``forward_features`` dict (``x_prenorm`` and the normed class/register/patch tokens)."""
        pre = self.forward(x)
        normed = self.norm(pre)
        r = self.config.num_register_tokens
        return {
            "x_norm_clstoken": normed[:, 0],
            "x_norm_regtokens": normed[:, 1 : r + 1],
            "x_norm_patchtokens": normed[:, r + 1 :],
            "x_prenorm": pre,
        }

    def get_intermediate_layers(
        self, x: torch.Tensor, n: int | Sequence[int] = 1, *, norm: bool = True
    ) -> tuple[torch.Tensor, ...]:
        """Outputs of blocks ``n`` (0-based indices, or the last ``n`` blocks if an int), each passed
        through the final ``norm`` if ``norm``, class and register tokens removed -> ``[B, N, D]`` each.

        Blocks after the last requested one are not run (same result as the hub, less work).
        """
        depth = len(self.blocks)
        take = list(range(depth - n, depth)) if isinstance(n, int) else [int(i) for i in n]
        if not take or min(take) < 0 or max(take) >= depth:
            raise ValueError(f"layer indices {take} out of range for a {depth}-block DINOv2")
        wanted = set(take)
        h = self.prepare_tokens(x)
        outs: dict[int, torch.Tensor] = {}
        for i, blk in enumerate(self.blocks[: max(take) + 1]):
            h = blk(h)
            if i in wanted:
                outs[i] = self.norm(h) if norm else h
        skip = 1 + self.config.num_register_tokens
        return tuple(outs[i][:, skip:] for i in take)

    # -- SyncHuman helpers --------------------------------------------------------------------------
    @torch.no_grad()
    def global_condition(self, image, *, out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Global condition of the flow models: ``F.layer_norm(x_prenorm)`` (no affine, eps 1e-5).

        ``image``: the 518x518 RGB crop from :func:`synchuman_core.preprocess.dino_input` (uint8 0..255
        array/tensor ``[H,W,3]``/``[B,H,W,3]``, PIL image, or float ``[B,3,H,W]`` in [0, 1]).
        Returns ``[B, 1374, 1024]`` at 518x518 (layer norm computed in fp32).
        """
        x = _to_image_batch(image, self.config.patch_size).to(self.device)
        x = normalize_imagenet(x).to(self.dtype)
        pre = self.forward(x)
        return F.layer_norm(pre.float(), pre.shape[-1:], eps=COND_LAYER_NORM_EPS).to(out_dtype)

    @torch.no_grad()
    def multiview_features(
        self,
        views: torch.Tensor,
        *,
        layers: Sequence[int] = MV_FEATURE_LAYERS,
        size: int = MV_FEATURE_SIZE,
        slice_size: int = 2,
    ) -> torch.Tensor:
        """Stage-2 decoder features of multiview images.

        ``views``: ``[V, 3, H, W]`` or ``[B, V, 3, H, W]`` float in [0, 1] (768x768 in SyncHuman).
        Each view: bilinear resize to ``size`` (align_corners False) in fp32 -> ImageNet normalize ->
        :meth:`get_intermediate_layers` of ``layers`` -> concat channels. Views run ``slice_size`` at a
        time so memory does not grow with the number of views.
        Returns ``[V, g, g, len(layers)*D]`` (or ``[B, V, g, g, ...]``), ``g = size // patch`` (64), rows
        then columns of the patch grid, in the model dtype.
        """
        if views.ndim == 5:
            b, v = views.shape[:2]
            out = self.multiview_features(views.flatten(0, 1), layers=layers, size=size, slice_size=slice_size)
            return out.reshape(b, v, *out.shape[1:])
        if views.ndim != 4 or views.shape[1] != 3:
            raise InputImageError(f"multiview_features expects [V,3,H,W] or [B,V,3,H,W], got {tuple(views.shape)}")
        if size % self.config.patch_size:
            raise ValueError(f"size {size} is not a multiple of the patch size {self.config.patch_size}")
        g = size // self.config.patch_size
        chunks = []
        for part in views.split(max(1, int(slice_size)), dim=0):
            x = part.to(device=self.device, dtype=torch.float32)
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            x = normalize_imagenet(x).to(self.dtype)
            feats = torch.cat(self.get_intermediate_layers(x, list(layers)), dim=-1)  # [v, g*g, L*D]
            chunks.append(feats.reshape(feats.shape[0], g, g, feats.shape[-1]))
        return torch.cat(chunks, dim=0)


def num_patches_for(size: int, patch_size: int = 14) -> int:
    """Patch tokens of a ``size x size`` image (518 -> 1369, 896 -> 4096)."""
    return (size // patch_size) ** 2


def expected_tokens(config: DINOv2Config, size: int) -> int:
    """Tokens of ``x_prenorm`` for a square ``size`` image: 1 + registers + patches (518 -> 1374)."""
    return 1 + config.num_register_tokens + num_patches_for(size, config.patch_size)
