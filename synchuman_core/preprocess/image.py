"""Turn whatever the user gives (PIL image, numpy array, torch tensor, optional mask) into one RGBA cut-out.

Accepted images: PIL images of any mode (RGBA, RGB, L, LA, P with or without transparency, I;16, I, F,
CMYK, ...); arrays / tensors ``[H, W]``, ``[H, W, C]`` (C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA),
``[C, H, W]`` (C = 1, 3, 4) or a batch of one ``[1, H, W, C]`` (ComfyUI ``IMAGE``); dtypes uint8, uint16
(16-bit), other integers (0..255 or 0..65535), bool, float in [0, 1] (0..255 floats are recognised).
Accepted masks: the same containers, one channel, 1 = person (``mask_is_inverted=True`` for ComfyUI's
``LoadImage`` MASK, which is ``1 - alpha``). A mask replaces the image's own alpha.

Without a mask, an image whose alpha channel is missing or 255 everywhere needs its background removed:
with a :class:`~synchuman_core.preprocess.background.BackgroundRemover` (``background=``) this is done as the
official pipeline does it (RGB, longer side <= 1024 LANCZOS, rembg); without one it is an
:class:`~synchuman_core.errors.InputImageError` telling the user what to give.

Large inputs are cropped to the person (the box of ``alpha > 0``, placed at even offsets so the framing's
rounding is unchanged) *before* any downscaling, so a small person on a huge canvas keeps its pixels.
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from ..errors import InputImageError

__all__ = ["MAX_SIDE", "image_alpha", "to_rgba"]

logger = logging.getLogger(__name__)

#: Longer side above which the RGBA cut-out is downscaled (Lanczos) before framing (memory bound).
MAX_SIDE = 4096
#: Relative aspect-ratio difference up to which a mask of another size is resized to the image.
MASK_ASPECT_TOLERANCE = 0.02

_NO_CUTOUT_HELP = (
    "SyncHuman needs the person cut out from the background: turn background removal on, give an image whose "
    "alpha channel is 0 on the background (a PNG with a transparent background), or give a mask that is 1 on "
    "the person."
)


def _as_array(obj, what: str) -> np.ndarray:
    """numpy view of a numpy array or torch tensor (bf16/half promoted to float32)."""
    if isinstance(obj, np.ndarray):
        return obj
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None  # type: ignore[assignment]
    if torch is not None and isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
            t = t.float()
        return t.numpy()
    raise InputImageError(f"{what} must be a PIL image, a numpy array or a torch tensor, got {type(obj).__name__}")


def _to_uint8(arr: np.ndarray, what: str) -> np.ndarray:
    """Scale an array of any supported dtype to uint8 0..255 (rounding)."""
    if arr.size == 0:
        raise InputImageError(f"{what} is empty (shape {arr.shape})")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return np.round(arr.astype(np.float32) / 257.0).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0:
            raise InputImageError(f"{what} has negative integer values ({lo}); give 0..255 or 0..65535 values")
        if hi <= 255:
            return arr.astype(np.uint8)
        if hi <= 65535:
            return np.round(arr.astype(np.float64) / 257.0).astype(np.uint8)
        raise InputImageError(f"{what} has integer values up to {hi}; give 8-bit (0..255) or 16-bit (0..65535)")
    if np.issubdtype(arr.dtype, np.floating):
        a = arr.astype(np.float32, copy=False)
        if not np.isfinite(a).all():
            raise InputImageError(f"{what} contains NaN or infinite values")
        hi = float(a.max())
        if hi > 1.0 + 1e-3:
            if hi <= 255.0 + 1e-3:
                logger.warning("%s: float values up to %.1f read as 0..255 (expected 0..1)", what, hi)
                a = a / 255.0
            else:
                raise InputImageError(f"{what} has float values up to {hi:g}; give floats in 0..1")
        return np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise InputImageError(f"{what} has unsupported dtype {arr.dtype}")


def _pil_to_array(img: Image.Image) -> np.ndarray:
    """PIL image -> ``[H, W, C]`` array (uint8, or uint16/int32/float32 for high bit depth modes)."""
    mode = img.mode
    if mode in ("RGBA", "RGB", "L", "LA"):
        arr = np.asarray(img)
    elif mode.startswith("I;16"):
        arr = np.asarray(img).astype(np.uint16)
    elif mode == "I":
        arr = np.asarray(img).astype(np.int64)
    elif mode == "F":
        arr = np.asarray(img).astype(np.float32)
    elif mode in ("1",):
        arr = np.asarray(img.convert("L"))
    elif mode in ("P", "PA", "RGBa", "La"):
        arr = np.asarray(img.convert("RGBA"))
    else:  # CMYK, YCbCr, LAB, HSV, RGBX, ...
        try:
            arr = np.asarray(img.convert("RGBA" if "A" in img.getbands() else "RGB"))
        except (ValueError, OSError) as e:
            raise InputImageError(f"cannot read a PIL image of mode {mode!r}: {e}; save it as PNG RGBA") from e
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def _image_hwc(image) -> np.ndarray:
    """Any supported image -> ``[H, W, C]`` array, C in 1..4 (dtype not yet normalised)."""
    if isinstance(image, Image.Image):
        return _pil_to_array(image)
    arr = _as_array(image, "image")
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise InputImageError(f"got a batch of {arr.shape[0]} images; SyncHuman takes one image at a time")
        arr = arr[0]
    if arr.ndim == 2:
        return arr[:, :, None]
    if arr.ndim != 3:
        raise InputImageError(f"image must be [H,W], [H,W,C], [C,H,W] or [1,H,W,C]; got shape {arr.shape}")
    if arr.shape[-1] not in (1, 2, 3, 4) and arr.shape[0] in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # [C, H, W] -> [H, W, C]
    if arr.shape[-1] not in (1, 2, 3, 4):
        raise InputImageError(f"image must have 1 to 4 channels (gray, gray+alpha, RGB, RGBA); got shape {arr.shape}")
    return arr


def _mask_hw(mask) -> np.ndarray:
    """Any supported mask -> uint8 ``[H, W]`` alpha (255 = person)."""
    if isinstance(mask, Image.Image):
        if mask.mode in ("RGBA", "LA", "PA"):
            mask = mask.getchannel("A")
        arr = _pil_to_array(
            mask if mask.mode in ("L", "1", "F", "I") or mask.mode.startswith("I;16") else mask.convert("L")
        )[:, :, 0]
    else:
        arr = _as_array(mask, "mask")
        while arr.ndim > 2 and arr.shape[0] == 1:  # [1, H, W] (ComfyUI MASK batch) / [1, 1, H, W]
            arr = arr[0]
        if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4):
            arr = arr[:, :, 0]  # [H, W, 1] or a color image used as a mask: its first channel
        if arr.ndim != 2:
            raise InputImageError(f"mask must be [H,W] or [1,H,W]; got shape {arr.shape} (one mask per image)")
    return _to_uint8(arr, "mask")


def _fit_mask(alpha: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a mask of another size to the image (bilinear) when the aspect ratios agree, else error."""
    mh, mw = alpha.shape
    if (mh, mw) == (height, width):
        return alpha
    if abs((mw / mh) / (width / height) - 1.0) > MASK_ASPECT_TOLERANCE:
        raise InputImageError(
            f"the mask is {mw}x{mh} pixels but the image is {width}x{height}: connect the mask made for this "
            "image (same size or at least the same aspect ratio)."
        )
    logger.warning("mask %dx%d resized to the image size %dx%d", mw, mh, width, height)
    return np.asarray(Image.fromarray(alpha, "L").resize((width, height), Image.Resampling.BILINEAR))


def image_alpha(image) -> np.ndarray | None:
    """The image's own alpha channel as uint8 ``[H, W]`` (None without one); any supported container/mode."""
    if isinstance(image, Image.Image):
        if "A" not in image.getbands() and not (image.mode == "P" and "transparency" in image.info):
            return None
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        return np.asarray(rgba.getchannel("A"))
    arr = _image_hwc(image)
    if arr.shape[-1] not in (2, 4):
        return None
    return _to_uint8(np.ascontiguousarray(arr[:, :, -1]), "alpha channel")


def _crop_to_subject(rgba: Image.Image) -> Image.Image:
    """Crop to the box of ``alpha > 0`` with even offsets (identical framing: see the module docstring)."""
    alpha = np.asarray(rgba.getchannel("A"))
    cols = np.flatnonzero(alpha.any(axis=0))
    rows = np.flatnonzero(alpha.any(axis=1))
    if cols.size == 0:
        return rgba
    # even offsets keep PIL's round-half-even crop boxes; a 2 px margin (transparent outside the image, as
    # PIL's crop pads) keeps the cut-out recognisable as one (never alpha 255 everywhere)
    x0, y0 = (int(cols[0]) & ~1) - 2, (int(rows[0]) & ~1) - 2
    box = (x0, y0, int(cols[-1]) + 3, int(rows[-1]) + 3)
    return rgba.crop(box)


def to_rgba(image, mask=None, *, mask_is_inverted: bool = False, background=None) -> Image.Image:
    """One RGBA cut-out (``PIL.Image``, mode RGBA, 8-bit) from an image and an optional person mask.

    ``background``: a :class:`~synchuman_core.preprocess.background.BackgroundRemover` used, as in the
    official pipeline, when there is no mask and the image's alpha is missing or 255 everywhere.
    Raises :class:`InputImageError` when the input cannot be used: unsupported type/shape/dtype, NaN,
    no transparency and no mask (and no background removal), an empty mask, a fully opaque mask, a mask of
    another aspect ratio.
    """
    arr = _image_hwc(image)
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputImageError(f"image is empty (shape {arr.shape})")
    arr = _to_uint8(arr, "image")
    h, w, c = arr.shape
    if c in (1, 2):
        rgb = np.repeat(arr[:, :, :1], 3, axis=2)
    else:
        rgb = arr[:, :, :3]
    alpha = arr[:, :, -1] if c in (2, 4) else None

    if mask is not None:
        m = _mask_hw(mask)
        if mask_is_inverted:
            m = 255 - m
        if alpha is not None:
            logger.info("a mask was given: it replaces the image's own alpha channel")
        alpha = _fit_mask(m, h, w)
        source = "the mask"
    else:
        source = "the image's alpha channel"
        from .background import needs_background_removal, remove_background_official

        if needs_background_removal(alpha):
            if background is None:
                what = "has no alpha channel" if alpha is None else "is fully opaque (alpha 255 everywhere)"
                raise InputImageError(f"the image {what} and no mask was given. {_NO_CUTOUT_HELP}")
            cut = remove_background_official(Image.fromarray(rgb, "RGB"), background)
            arr = np.asarray(cut)
            rgb, alpha = arr[:, :, :3], arr[:, :, 3]
            source = f"background removal ({background.model})"
            if not alpha.any() or (alpha == 255).all():
                found = "no person" if not alpha.any() else "no background"
                raise InputImageError(
                    f"{source} found {found} in the image; use a photo where one person stands out clearly from "
                    "the background, try another background model, or give a mask or a cut-out with a "
                    "transparent background"
                )

    if not alpha.any():
        raise InputImageError(f"{source} is empty (0 everywhere): no person found. {_NO_CUTOUT_HELP}")
    if (alpha == 255).all():
        raise InputImageError(
            f"{source} is fully opaque (covers the whole image), so the background is not removed. {_NO_CUTOUT_HELP}"
        )
    out = Image.fromarray(np.dstack([rgb, alpha]).astype(np.uint8, copy=False), "RGBA")
    if max(out.size) > MAX_SIDE:
        out = _crop_to_subject(out)
    if max(out.size) > MAX_SIDE:
        s = MAX_SIDE / max(out.size)
        size = (max(1, int(out.width * s)), max(1, int(out.height * s)))
        logger.warning("input %dx%d downscaled to %dx%d", out.width, out.height, *size)
        out = out.resize(size, Image.Resampling.LANCZOS)
    return out
