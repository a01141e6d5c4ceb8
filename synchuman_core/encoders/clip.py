"""CLIP image and text encoders of SD-2.1-unCLIP, built from the official configs without random init.

* :func:`build_clip_vision` -> transformers ``CLIPVisionModelWithProjection`` (ViT-H/14, projection 1024)
  with the official state-dict keys (``vision_model.*``, ``visual_projection.weight``).
* :func:`build_clip_text` -> a module whose state dict is the official ``CLIPTextModel`` one
  (``text_model.*``) with transformers 4.x and 5.x alike (5.x dropped the ``text_model`` level).
* :class:`ClipImageEmbedder`: the class-label input of the stage-1 UNet, exactly as the official pipeline:
  float images -> uint8 by truncation (``to_pil_image``) -> ``CLIPImageProcessor`` (shortest edge 224,
  bicubic, center crop 224, rescale, CLIP mean/std) -> ``image_embeds`` ``[N, 1024]`` -> concatenated with
  the noise-level embedding of level 0 -> ``[N, 2048]``. Implemented with PIL + torch (no torchvision).

Everything is built under ``torch.device("meta")``; load weights with
``synchuman_core.io.state_dict.load_state_dict_strict`` and then call :func:`materialize_buffers` to
recreate the non-persistent ``position_ids`` buffers (they are not in checkpoints).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, InputImageError

__all__ = [
    "CLIP_IMAGE_MEAN",
    "CLIP_IMAGE_STD",
    "ClipImageEmbedder",
    "ClipImageProcessing",
    "ClipTextEncoder",
    "build_clip_text",
    "build_clip_vision",
    "clip_text_config",
    "clip_vision_config",
    "convert_clip_state_dict",
    "float_images_to_uint8",
    "materialize_buffers",
    "noise_level_embedding",
]

logger = logging.getLogger(__name__)

CLIP_IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)

# Keys of transformers config.json files that carry no architecture information (``dropout`` is a 4.x
# key that 5.x dropped; dropout is inactive at inference anyway).
_META_KEYS = frozenset(
    {
        "_name_or_path",
        "architectures",
        "torch_dtype",
        "dtype",
        "transformers_version",
        "model_type",
        "_commit_hash",
        "_attn_implementation_autoset",
        "initializer_factor",
        "initializer_range",
        "dropout",
    }
)


def _check_keys(cfg: Mapping, known: set[str], what: str) -> dict:
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{what} config must be a dict (config.json contents), got {type(cfg).__name__}")
    unknown = sorted(k for k in cfg if k not in known and k not in _META_KEYS)
    if unknown:
        raise ConfigError(f"{what} config.json has keys we cannot honour: {unknown}")
    return {k: v for k, v in cfg.items() if k not in ("torch_dtype", "dtype")}


def clip_vision_config(official: Mapping):
    """transformers ``CLIPVisionConfig`` from ``image_encoder/config.json`` (ConfigError on unknown keys)."""
    from transformers import CLIPVisionConfig

    mt = official.get("model_type", "clip_vision_model") if isinstance(official, Mapping) else None
    if mt not in ("clip_vision_model", None):
        raise ConfigError(f"image_encoder/config.json has model_type {mt!r}, expected 'clip_vision_model'")
    cfg = _check_keys(official, set(CLIPVisionConfig().to_dict()), "CLIP image encoder")
    return CLIPVisionConfig.from_dict(cfg)


def clip_text_config(official: Mapping):
    """transformers ``CLIPTextConfig`` from ``text_encoder/config.json`` (ConfigError on unknown keys)."""
    from transformers import CLIPTextConfig

    mt = official.get("model_type", "clip_text_model") if isinstance(official, Mapping) else None
    if mt not in ("clip_text_model", None):
        raise ConfigError(f"text_encoder/config.json has model_type {mt!r}, expected 'clip_text_model'")
    cfg = _check_keys(official, set(CLIPTextConfig().to_dict()), "CLIP text encoder")
    return CLIPTextConfig.from_dict(cfg)


def _build_on_meta(factory, device, dtype: torch.dtype | None) -> nn.Module:
    """Build on the meta device (no allocation, no init), then cast; materialize on ``device`` if given."""
    with torch.device("meta"):
        model = factory()
    model.to(dtype=dtype or torch.float32)
    if device is not None and torch.device(device).type != "meta":
        model.to_empty(device=device)
        materialize_buffers(model, device)
    return model.eval()


def build_clip_vision(official: Mapping, *, device=None, dtype: torch.dtype | None = None) -> nn.Module:
    """``CLIPVisionModelWithProjection`` from the official config dict, on the meta device by default.

    Default dtype fp32 (the in-memory dtype after the official constructor; the config's
    ``torch_dtype: float16`` is the file dtype, the pipeline casts afterwards). With ``device`` the
    parameters are allocated uninitialised (load weights next).
    """
    from transformers import CLIPVisionModelWithProjection

    cfg = clip_vision_config(official)
    return _build_on_meta(lambda: CLIPVisionModelWithProjection(cfg), device, dtype)


class ClipTextEncoder(nn.Module):
    """Holds the CLIP text transformer under ``text_model`` so keys are the official ``text_model.*``.

    ``forward(input_ids [N, 77]) -> last_hidden_state [N, 77, D]`` (after the final layer norm, no
    attention mask, as the official prompt-embedding script).
    """

    def __init__(self, text_model: nn.Module, config) -> None:
        super().__init__()
        self.text_model = text_model
        self.config = config

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.text_model(input_ids=input_ids).last_hidden_state


def build_clip_text(official: Mapping, *, device=None, dtype: torch.dtype | None = None) -> ClipTextEncoder:
    """The official ``CLIPTextModel`` (state-dict keys ``text_model.*``) from its config dict.

    transformers 4.x: ``CLIPTextModel.text_model`` (``CLIPTextTransformer``) is wrapped; 5.x:
    ``CLIPTextModel`` itself (it no longer has a ``text_model`` level) is wrapped.
    """
    from transformers import CLIPTextModel

    cfg = clip_text_config(official)

    def factory() -> ClipTextEncoder:
        full = CLIPTextModel(cfg)
        inner = getattr(full, "text_model", None)
        return ClipTextEncoder(inner if isinstance(inner, nn.Module) else full, cfg)

    return _build_on_meta(factory, device, dtype)  # type: ignore[return-value]


def convert_clip_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop ``*.embeddings.position_ids`` (a buffer older transformers saved; non-persistent now, and
    always ``arange``) so strict loading accepts files written by any transformers version."""
    return {k: v for k, v in state_dict.items() if not k.endswith("embeddings.position_ids")}


@torch.no_grad()
def materialize_buffers(model: nn.Module, device=None) -> nn.Module:
    """Recreate non-persistent buffers that loading cannot fill (CLIP ``position_ids`` = ``arange``).

    Call after ``load_state_dict_strict`` on a model built on the meta device. Buffers already holding
    data are left alone unless they are ``position_ids`` (recomputed; they are ``arange`` by definition).
    """
    if device is not None:
        target = torch.device(device)
    else:
        target = next((p.device for p in model.parameters() if p.device.type != "meta"), torch.device("cpu"))
    for module in model.modules():
        for name in list(getattr(module, "_non_persistent_buffers_set", ())):
            buf = module._buffers.get(name)
            if buf is None:
                continue
            if name == "position_ids":
                n = buf.shape[-1]
                module._buffers[name] = torch.arange(n, device=target, dtype=torch.long).expand(buf.shape).clone()
            elif buf.device.type == "meta":
                raise RuntimeError(f"cannot materialize non-persistent buffer {type(module).__name__}.{name}")
    return model


# ------------------------------------------------------------------------------------------------------
# Image preprocessing (CLIPImageProcessor equivalent) and the class-label embedding
# ------------------------------------------------------------------------------------------------------


def float_images_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` float in [0, 1] -> uint8 by truncation, as ``to_pil_image`` (``mul(255).byte()``).

    Values are clamped to [0, 1] first (the official path overflows outside; our inputs never are).
    """
    if not images.is_floating_point():
        raise InputImageError(f"expected float images in [0, 1], got dtype {images.dtype}")
    return (images.float().clamp(0.0, 1.0) * 255.0).to(torch.uint8)


@dataclass(frozen=True)
class ClipImageProcessing:
    """The ``feature_extractor/preprocessor_config.json`` values we honour (SD-2.1-unCLIP defaults)."""

    shortest_edge: int = 224
    crop_height: int = 224
    crop_width: int = 224
    resample: int = 3  # PIL bicubic
    rescale_factor: float = 1.0 / 255.0
    image_mean: tuple[float, float, float] = CLIP_IMAGE_MEAN
    image_std: tuple[float, float, float] = CLIP_IMAGE_STD
    do_resize: bool = True
    do_center_crop: bool = True
    do_rescale: bool = True
    do_normalize: bool = True

    @classmethod
    def from_official(cls, official: Mapping) -> ClipImageProcessing:
        """Read ``preprocessor_config.json`` (``CLIPImageProcessor``); ConfigError on unknown keys."""
        known = {
            "crop_size",
            "do_center_crop",
            "do_convert_rgb",
            "do_normalize",
            "do_rescale",
            "do_resize",
            "image_mean",
            "image_std",
            "image_processor_type",
            "feature_extractor_type",
            "resample",
            "rescale_factor",
            "size",
            "processor_class",
        }
        unknown = sorted(set(official) - known)
        if unknown:
            raise ConfigError(f"preprocessor_config.json has keys we cannot honour: {unknown}")
        size = official.get("size", {"shortest_edge": 224})
        if isinstance(size, int):
            size = {"shortest_edge": size}
        if "shortest_edge" not in size:
            raise ConfigError(f"preprocessor_config.json size {size} is not {{'shortest_edge': N}}")
        crop = official.get("crop_size", {"height": 224, "width": 224})
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        return cls(
            shortest_edge=int(size["shortest_edge"]),
            crop_height=int(crop["height"]),
            crop_width=int(crop["width"]),
            resample=int(official.get("resample", 3)),
            rescale_factor=float(official.get("rescale_factor", 1.0 / 255.0)),
            image_mean=tuple(official.get("image_mean", CLIP_IMAGE_MEAN)),  # type: ignore[arg-type]
            image_std=tuple(official.get("image_std", CLIP_IMAGE_STD)),  # type: ignore[arg-type]
            do_resize=bool(official.get("do_resize", True)),
            do_center_crop=bool(official.get("do_center_crop", True)),
            do_rescale=bool(official.get("do_rescale", True)),
            do_normalize=bool(official.get("do_normalize", True)),
        )

    def resize_size(self, height: int, width: int) -> tuple[int, int]:
        """Output ``(h, w)`` of the shortest-edge resize (transformers ``get_resize_output_image_size``)."""
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)

    def __call__(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` uint8 -> ``pixel_values [N, 3, 224, 224]`` float32."""
        from PIL import Image

        out = []
        for img in images_uint8:
            arr = img.permute(1, 2, 0).contiguous().cpu().numpy()  # [H, W, 3] uint8
            h, w = arr.shape[:2]
            if self.do_resize:
                nh, nw = self.resize_size(h, w)
                arr = np.asarray(Image.fromarray(arr, "RGB").resize((nw, nh), resample=self.resample))
            if self.do_center_crop:
                arr = _center_crop(arr, self.crop_height, self.crop_width)
            x = arr.astype(np.float64)
            if self.do_rescale:
                x = x * self.rescale_factor
            x = x.astype(np.float32)
            if self.do_normalize:
                x = (x - np.asarray(self.image_mean, np.float32)) / np.asarray(self.image_std, np.float32)
            out.append(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))))
        return torch.stack(out)


def _center_crop(arr: np.ndarray, ch: int, cw: int) -> np.ndarray:
    """transformers ``center_crop`` on ``[H, W, C]``: top-left at ``((H-ch)//2, (W-cw)//2)``."""
    h, w = arr.shape[:2]
    if ch > h or cw > w:
        raise ConfigError(f"CLIP center crop {ch}x{cw} is larger than the resized image {h}x{w}")
    top, left = (h - ch) // 2, (w - cw) // 2
    return arr[top : top + ch, left : left + cw]


def noise_level_embedding(noise_level: int | torch.Tensor, dim: int = 1024, n: int = 1) -> torch.Tensor:
    """diffusers ``get_timestep_embedding(level, dim, flip_sin_to_cos=True, downscale_freq_shift=0)``.

    Level 0 gives ``dim/2`` ones followed by ``dim/2`` zeros. Returns ``[n, dim]`` fp32.
    """
    t = torch.as_tensor(noise_level, dtype=torch.float32).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)  # [half]
    args = t[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # flip_sin_to_cos: cos first
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


class ClipImageEmbedder:
    """Stage-1 class labels from the conditioning images.

    ``__call__(images [N, 3, H, W] float in [0, 1]) -> [N, 2048]`` in the encoder's dtype:
    ``image_embeds [N, 1024]`` (un-normalised) followed by the level-0 noise-level embedding.
    Images run ``slice_size`` at a time.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        processing: ClipImageProcessing | None = None,
        *,
        noise_level: int = 0,
        slice_size: int = 10,
    ) -> None:
        self.image_encoder = image_encoder
        self.processing = processing or ClipImageProcessing()
        self.noise_level = noise_level
        self.slice_size = max(1, int(slice_size))

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` float [0, 1] -> ``[N, 3, 224, 224]`` float32 (CPU), official path."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputImageError(f"CLIP image embedder expects [N,3,H,W] images, got {tuple(images.shape)}")
        return self.processing(float_images_to_uint8(images))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        p = next(self.image_encoder.parameters())
        embeds = []
        for part in images.split(self.slice_size, dim=0):
            pix = self.pixel_values(part).to(device=p.device, dtype=p.dtype)
            embeds.append(self.image_encoder(pixel_values=pix).image_embeds)
        e = torch.cat(embeds, dim=0)  # [N, proj]
        level = noise_level_embedding(self.noise_level, e.shape[-1], e.shape[0]).to(device=e.device, dtype=e.dtype)
        return torch.cat([e, level], dim=1)
