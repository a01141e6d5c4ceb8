"""SD-2.1 VAE (diffusers ``AutoencoderKL``) built from the official config, and sliced encode/decode.

Official use (stage 1): the 10 conditioning images go through ``to_pil_image``/``to_tensor`` (uint8
truncation), ``* 2 - 1``, ``vae.encode(x).latent_dist.mode() * 0.18215`` -> ``[10, 4, 96, 96]``; the sampled
latents are decoded with ``vae.decode(z / 0.18215)`` and mapped by ``(x / 2 + 0.5).clamp(0, 1)``.
Here both run a few images at a time (``slice_size``) so memory does not grow with the batch; decoding
can also be tiled (``tile_size``) for small GPUs. Results per image are independent of the slicing.
"""

from __future__ import annotations

import inspect
import logging
import re
import types
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import ConfigError, InputImageError
from ..modules.spatial import nearest2x_conv3x3
from .clip import float_images_to_uint8

__all__ = ["VAE_SCALING_FACTOR", "build_vae", "convert_vae_state_dict", "use_phase_upsamplers", "vae_config",
           "vae_decode", "vae_encode"]

logger = logging.getLogger(__name__)

#: SD-2.1 ``scaling_factor`` (read from the VAE config when present).
VAE_SCALING_FACTOR = 0.18215


def vae_config(official: Mapping) -> dict:
    """Validate ``vae/config.json`` contents for diffusers ``AutoencoderKL``; ConfigError on unknown keys."""
    from diffusers import AutoencoderKL

    if not isinstance(official, Mapping):
        raise ConfigError(f"VAE config must be a dict (config.json contents), got {type(official).__name__}")
    cls_name = official.get("_class_name", "AutoencoderKL")
    if cls_name != "AutoencoderKL":
        raise ConfigError(f"vae/config.json is for {cls_name!r}, expected 'AutoencoderKL'")
    params = set(inspect.signature(AutoencoderKL.__init__).parameters) - {"self"}
    unknown = sorted(k for k in official if not k.startswith("_") and k not in params)
    if unknown:
        raise ConfigError(
            f"vae/config.json has keys this diffusers version cannot honour: {unknown} (update diffusers)"
        )
    return dict(official)


def build_vae(official: Mapping, *, device=None, dtype: torch.dtype | None = None) -> nn.Module:
    """diffusers ``AutoencoderKL`` from the official config dict, on the meta device by default (fp32).

    With ``device`` the parameters are allocated uninitialised (load weights next).
    """
    from diffusers import AutoencoderKL

    cfg = vae_config(official)
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(cfg)
    # nn.Module.to: diffusers' own .to() warns about "modules kept in float32" even when there are none
    nn.Module.to(vae, dtype=dtype or torch.float32)
    if device is not None and torch.device(device).type != "meta":
        vae.to_empty(device=device)
    use_phase_upsamplers(vae)
    return vae.eval()


def _phase_upsample_forward(self, hidden_states, output_size=None, *args, **kwargs):  # type: ignore[no-untyped-def]
    h, w = hidden_states.shape[-2:]
    if args or kwargs or (output_size is not None and tuple(output_size) != (2 * h, 2 * w)):
        return type(self).forward(self, hidden_states, output_size, *args, **kwargs)
    return nearest2x_conv3x3(hidden_states, self.conv)


def use_phase_upsamplers(vae: nn.Module) -> int:
    """Run the VAE decoder's nearest x2 + 3x3-conv up-samplers as one phase convolution on the
    low-resolution input (:func:`~synchuman_core.modules.spatial.nearest2x_conv3x3`: 0.46x the
    multiply-adds, no up-sampled copy; same result up to fp32 rounding). Only the forward of matching
    diffusers ``Upsample2D`` instances is replaced: modules, parameters and state-dict keys are unchanged.
    Returns how many up-samplers were switched."""
    n = 0
    for m in vae.modules():
        if type(m).__name__ != "Upsample2D" or not hasattr(m, "conv"):
            continue
        if not getattr(m, "use_conv", False) or getattr(m, "use_conv_transpose", False) \
                or getattr(m, "norm", None) is not None or not getattr(m, "interpolate", True) \
                or getattr(m, "name", "conv") != "conv" or not isinstance(m.conv, nn.Conv2d):
            continue
        m.forward = types.MethodType(_phase_upsample_forward, m)
        n += 1
    return n


_LEGACY_ATTN = re.compile(r"^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$")
_LEGACY_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def convert_vae_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename legacy diffusers VAE attention keys (``query/key/value/proj_attn`` -> ``to_q/to_k/to_v/to_out.0``),
    as diffusers' ``from_pretrained`` does; other keys pass unchanged."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        m = _LEGACY_ATTN.match(k)
        out[f"{m.group(1)}.{_LEGACY_NAMES[m.group(2)]}.{m.group(3)}" if m else k] = v
    return out


def _scaling_factor(vae: nn.Module) -> float:
    cfg = getattr(vae, "config", None)
    sf = getattr(cfg, "scaling_factor", None) if cfg is not None else None
    return float(sf) if sf is not None else VAE_SCALING_FACTOR


def _param(vae: nn.Module) -> torch.Tensor:
    return next(vae.parameters())


@torch.no_grad()
def vae_encode(
    vae: nn.Module,
    images: torch.Tensor,
    *,
    slice_size: int = 2,
    truncate_to_uint8: bool = True,
) -> torch.Tensor:
    """``images [N, 3, H, W]`` float in [0, 1] -> latents ``[N, 4, H/8, W/8]`` (``mode() * scaling``).

    ``truncate_to_uint8`` reproduces the official round trip through PIL (``floor(x * 255) / 255``).
    Output dtype = the VAE's dtype; the output stays on the VAE's device.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputImageError(f"vae_encode expects [N,3,H,W] images, got {tuple(images.shape)}")
    p = _param(vae)
    sf = _scaling_factor(vae)
    out = []
    for part in images.split(max(1, int(slice_size)), dim=0):
        x = float_images_to_uint8(part).float() / 255.0 if truncate_to_uint8 else part.float()
        x = (x * 2.0 - 1.0).to(device=p.device, dtype=p.dtype)
        out.append(vae.encode(x).latent_dist.mode() * sf)
    return torch.cat(out, dim=0)


@torch.no_grad()
def vae_decode(
    vae: nn.Module,
    latents: torch.Tensor,
    *,
    slice_size: int = 1,
    tile_size: int | None = None,
    out_device: torch.device | str | None = None,
) -> torch.Tensor:
    """``latents [N, 4, h, w]`` -> images ``[N, 3, 8h, 8w]`` float32 in [0, 1]: ``decode(z / scaling)``,
    then ``(x / 2 + 0.5).clamp(0, 1)``.

    ``slice_size`` latents are decoded at a time; each slice is moved to ``out_device`` (default: the
    latents' device) before the next one starts. ``tile_size`` (pixels, e.g. 512) decodes each image in
    overlapping tiles with diffusers' blending (slightly different pixels, much less memory).
    """
    if latents.ndim != 4:
        raise ValueError(f"vae_decode expects [N,4,h,w] latents, got {tuple(latents.shape)}")
    p = _param(vae)
    sf = _scaling_factor(vae)
    out_device = torch.device(out_device) if out_device is not None else latents.device
    out = []
    for part in latents.split(max(1, int(slice_size)), dim=0):
        z = (part.to(device=p.device, dtype=torch.float32) / sf).to(p.dtype)
        if tile_size:
            x = _tiled_decode(vae, z, int(tile_size))
        else:
            x = vae.decode(z).sample
        out.append((x.float() / 2 + 0.5).clamp(0, 1).to(out_device))
    return torch.cat(out, dim=0)


def _tiled_decode(vae: nn.Module, z: torch.Tensor, tile_size: int) -> torch.Tensor:
    """diffusers ``tiled_decode`` with tiles of ``tile_size`` pixels (restores the VAE's settings)."""
    if tile_size < 64 or tile_size % 64:
        raise ValueError(f"tile_size must be a multiple of 64 pixels, got {tile_size}")
    factor = 2 ** (len(vae.config.block_out_channels) - 1)  # pixels per latent (8 for SD)
    saved = (vae.tile_sample_min_size, vae.tile_latent_min_size)
    try:
        vae.tile_sample_min_size = tile_size
        vae.tile_latent_min_size = tile_size // factor
        return vae.tiled_decode(z).sample
    finally:
        vae.tile_sample_min_size, vae.tile_latent_min_size = saved
