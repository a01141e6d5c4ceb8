"""The views of one run as PNG images: what stage 1 made (5 colour + 5 normal views) and the input framing.

:func:`view_images` returns ``{suffix: PIL image}``; the caller writes them through the output writer
(:mod:`synchuman_core.export.writer`) in the SAME reserved set as the mesh, so every file of one run shares
one numbered stem (``person_00001.glb``, ``person_00001_color_front.png``, ...). :data:`VIEW_SUFFIXES` lists
every suffix that may appear (reserve them all up front).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["INPUT_SUFFIXES", "VIEW_NAMES", "VIEW_SUFFIXES", "view_images"]

#: Names of the five views, in the documented order (back and left mirrored as stage 1 makes them).
VIEW_NAMES = ("front", "right", "back", "left", "face")
#: The input framing: the multiview input (view 0 on white) and the 518x518 DINOv2 crop (black background).
INPUT_SUFFIXES = ("_input.png", "_input_dino.png")
VIEW_SUFFIXES = tuple(f"_{kind}_{n}.png" for kind in ("color", "normal") for n in VIEW_NAMES) + INPUT_SUFFIXES


def _to_pil(x: torch.Tensor) -> Image.Image:
    """``[3, H, W]`` float in [0, 1] -> PIL RGB (rounded)."""
    arr = x.detach().float().cpu().clamp(0.0, 1.0).permute(1, 2, 0).numpy()
    return Image.fromarray(np.round(arr * 255.0).astype(np.uint8), "RGB")


def view_images(color_views: torch.Tensor | None, normal_views: torch.Tensor | None,
                prepared: Any = None) -> dict[str, Image.Image]:
    """``{suffix: image}`` for the colour and normal views ``[4|5, 3, H, W]`` in [0, 1] and, when given, the
    preprocessing result ``prepared`` (``mv_views`` ``[5, 3, S, S]``, ``dino_image`` ``[518, 518, 3]`` uint8)."""
    out: dict[str, Image.Image] = {}
    for kind, views in (("color", color_views), ("normal", normal_views)):
        if views is None:
            continue
        for name, v in zip(VIEW_NAMES, views):
            out[f"_{kind}_{name}.png"] = _to_pil(v)
    mv = getattr(prepared, "mv_views", None)
    if isinstance(mv, torch.Tensor) and mv.ndim == 4:
        out["_input.png"] = _to_pil(mv[0])
    dino = getattr(prepared, "dino_image", None)
    if dino is not None:
        out["_input_dino.png"] = Image.fromarray(np.ascontiguousarray(np.asarray(dino, dtype=np.uint8)), "RGB")
    return out
