"""Framing of the RGBA cut-out for the two branches (docs/ARCHITECTURE.md §9), reproducing the official pixels.

* Multiview branch (stage-1 UNet, CLIP, VAE): tight box of ``alpha > 0`` cropped with the official PIL
  off-by-one, longer side resized to 768 (bicubic), centred on a transparent 768x768 canvas, composited on
  white; plus the face close-up: box (256, 0, 512, 256) of that canvas resized to 768 -> ``[5, 3, 768, 768]``
  = ``[img, img, img, img, face]`` float32 in [0, 1].
* 3D branch (DINOv2 global condition, both stages): box of ``alpha > 0.8 * 255``, square of side
  ``int(1.2 * max(w, h))`` around its centre (zero padding outside), Lanczos to 518x518, RGB premultiplied
  by alpha (black background) -> uint8 ``[518, 518, 3]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..errors import InputImageError
from .image import to_rgba

__all__ = [
    "DINO_SIZE",
    "FACE_BOX",
    "MIN_SUBJECT_SIZE",
    "MV_SIZE",
    "PreparedInput",
    "dino_input",
    "multiview_input",
    "prepare_input",
]

MV_SIZE = 768
#: (left, top, right, bottom) of the face close-up in the 768 canvas: top-centre third (upright subject).
FACE_BOX = (256, 0, 512, 256)
DINO_SIZE = 518
DINO_ALPHA_THRESHOLD = 0.8 * 255
DINO_MARGIN = 1.2
#: Smallest subject box (pixels, each side) we accept; smaller "persons" are input mistakes.
MIN_SUBJECT_SIZE = 8
#: Smallest longer side of the subject box: the framing scales it to 768, so fewer pixels than this carry
#: no usable person (a figure a few pixels tall on a large canvas is refused with its size).
MIN_SUBJECT_LONG_SIDE = 32


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Inclusive ``(min_x, min_y, max_x, max_y)`` of the True pixels, O(H + W) memory (no argwhere)."""
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def _check_subject(box: tuple[int, int, int, int] | None, what: str,
                   min_long: int = MIN_SUBJECT_LONG_SIDE) -> tuple[int, int, int, int]:
    if box is None:
        raise InputImageError(f"no pixel of the person is {what}: check the mask / alpha channel")
    w, h = box[2] - box[0] + 1, box[3] - box[1] + 1
    if min(w, h) < MIN_SUBJECT_SIZE or max(w, h) < min_long:
        raise InputImageError(
            f"the person ({what}) covers only {w}x{h} pixels, too small to reconstruct; give a larger image or a "
            f"mask that covers the whole person (at least {MIN_SUBJECT_SIZE} pixels each side and "
            f"{max(min_long, MIN_SUBJECT_SIZE)} on the longer one; ideally 512 or more pixels tall)"
        )
    return box


def mv_crop_box(min_x: int, min_y: int, max_x: int, max_y: int) -> tuple[int, int, int, int]:
    """The official multiview crop box: PIL ``crop((min_x, min_y, max_x, max_y))`` of the *inclusive*
    extremes, so the last column and row of the subject are dropped (kept: the UNet was trained so)."""
    return min_x, min_y, max_x, max_y


def _composite_white(rgba: Image.Image) -> np.ndarray:
    """RGBA uint8 -> float32 ``[H, W, 3]`` = ``rgb * a + 1 * (1 - a)`` in float32 (official arithmetic)."""
    x = np.asarray(rgba).astype(np.float32) / 255.0
    a = x[..., 3:4]
    bg = np.ones(3, dtype=np.float32)
    return x[..., :3] * a + bg * (1 - a)


def multiview_canvas(rgba: Image.Image, size: int = MV_SIZE) -> Image.Image:
    """The 768x768 RGBA canvas of the multiview branch (before compositing)."""
    alpha = np.asarray(rgba.getchannel("A"))
    box = _check_subject(_bbox(alpha > 0), "visible (alpha > 0)")
    crop = rgba.crop(mv_crop_box(*box))
    h, w = crop.height, crop.width
    scale = size / max(h, w)
    h2, w2 = max(1, int(scale * h)), max(1, int(scale * w))
    crop = crop.resize((w2, h2), Image.Resampling.BICUBIC)
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    canvas.paste(crop, ((size - w2) // 2, (size - h2) // 2))
    return canvas


def multiview_input(rgba: Image.Image, *, size: int = MV_SIZE, face_box=FACE_BOX) -> torch.Tensor:
    """``[5, 3, size, size]`` float32 in [0, 1]: the framed input on white (4 copies) + the face close-up."""
    canvas = multiview_canvas(rgba, size)
    face = canvas.crop(tuple(face_box)).resize((size, size), Image.Resampling.BICUBIC)
    img = torch.from_numpy(_composite_white(canvas)).permute(2, 0, 1)
    face_t = torch.from_numpy(_composite_white(face)).permute(2, 0, 1)
    return torch.stack([img, img, img, img, face_t], dim=0).float().contiguous()


def dino_crop_box(rgba: Image.Image) -> tuple[float, float, float, float]:
    """Official TRELLIS crop: square of ``int(1.2 * max extent)`` around the centre of ``alpha > 0.8*255``.

    Float coordinates; PIL's ``crop`` rounds them (half to even) and pads outside with transparent black.
    """
    alpha = np.asarray(rgba.getchannel("A"))
    # the visible person was size-checked by the multiview framing; here only a usable opaque core is needed
    box = _check_subject(_bbox(alpha > DINO_ALPHA_THRESHOLD), "opaque (alpha > 0.8)", min_long=MIN_SUBJECT_SIZE)
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = int(max(x1 - x0, y1 - y0) * DINO_MARGIN)
    return cx - side // 2, cy - side // 2, cx + side // 2, cy + side // 2


def dino_input(rgba: Image.Image, *, size: int = DINO_SIZE) -> np.ndarray:
    """uint8 ``[size, size, 3]``: the square crop, Lanczos-resized, RGB premultiplied by alpha (black bg)."""
    out = rgba.crop(dino_crop_box(rgba)).resize((size, size), Image.Resampling.LANCZOS)
    x = np.asarray(out).astype(np.float32) / 255
    x = x[:, :, :3] * x[:, :, 3:4]
    return (x * 255).astype(np.uint8)


@dataclass
class PreparedInput:
    """Everything both stages need from the input photo.

    ``rgba``: the RGBA cut-out (PIL); ``mv_views``: ``[5, 3, 768, 768]`` float32 [0, 1] (views 0-3 the
    framed input on white, view 4 the face close-up); ``dino_image``: ``[518, 518, 3]`` uint8 (black bg).
    """

    rgba: Image.Image
    mv_views: torch.Tensor
    dino_image: np.ndarray


def prepare_input(image, mask=None, *, mask_is_inverted: bool = False) -> PreparedInput:
    """Image (+ optional mask) -> :class:`PreparedInput`; :class:`InputImageError` if unusable."""
    rgba = to_rgba(image, mask, mask_is_inverted=mask_is_inverted)
    return PreparedInput(rgba=rgba, mv_views=multiview_input(rgba), dino_image=dino_input(rgba))
