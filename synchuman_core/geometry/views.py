"""Observed views for texture baking: images, masks and cameras of the generated SyncHuman views.

Inputs arrive as generated (docs/ARCHITECTURE.md §1.2 step 1, §3.4, §8.4):
body colors ``[4, 3, H, W]`` in [0, 1] with views 2 and 3 mirrored, optional normal maps of the same
layout (mask = non-white pixels), an optional face close-up ``[3, Hf, Wf]`` (×3 zoom of the front view's
top-centre third) with its optional normal map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InputImageError
from .cameras import NUM_BODY_VIEWS, OrthoCamera, body_view_camera, face_view_camera, generated_to_true_orientation

__all__ = ["OFFICIAL_MASK_THRESHOLD", "BakeView", "non_white_mask", "views_from_generated"]

OFFICIAL_MASK_THRESHOLD = 230.0 / 255.0  # official: any channel of the normal map * 255 < 230


@dataclass
class BakeView:
    """One observation in true (unmirrored) orientation."""

    camera: OrthoCamera
    image: torch.Tensor  # [3, H, W] float32 in [0, 1]
    mask: torch.Tensor  # [H, W] bool, pixels allowed to colour the surface
    weight: float = 1.0  # multiplies the blending weight of this view
    feather_px: float = 0.0  # fade the weight to 0 over this many pixels at the image border
    depth: torch.Tensor | None = None  # [H, W] depth the observation saw (renders); pixels where the mesh
    # lies elsewhere are left out of the optimisation bake (see texopt.prepare_view_samples)

    @property
    def height(self) -> int:
        return int(self.image.shape[1])

    @property
    def width(self) -> int:
        return int(self.image.shape[2])


def non_white_mask(normal_map: torch.Tensor, threshold: float = OFFICIAL_MASK_THRESHOLD) -> torch.Tensor:
    """Official view mask: a pixel belongs to the subject when any channel of its normal map is below
    ``threshold`` (230/255). ``normal_map`` ``[..., 3, H, W]`` → ``[..., H, W]`` bool."""
    return (normal_map < threshold).any(dim=-3)


def _as_chw(x: torch.Tensor, name: str, batch: int | None) -> torch.Tensor:
    """Accept ``[B,3,H,W]`` / ``[3,H,W]`` or channel-last ``[B,H,W,3]`` / ``[H,W,3]`` (ComfyUI IMAGE)."""
    x = torch.as_tensor(x)
    want = 4 if batch is not None else 3
    if x.ndim != want:
        shape = f"[{batch}, 3, H, W]" if batch is not None else "[3, H, W]"
        raise InputImageError(f"{name} must have shape {shape} (channel-last also accepted), got {tuple(x.shape)}")
    if x.shape[-3] != 3 and x.shape[-1] == 3:
        x = x.movedim(-1, -3)
    if x.shape[-3] != 3:
        raise InputImageError(f"{name} must have 3 color channels, got shape {tuple(x.shape)}")
    if batch is not None and x.shape[0] != batch:
        raise InputImageError(f"{name} must hold {batch} views (front, right, back, left), got {x.shape[0]}")
    x = x.detach().to(torch.float32)
    if not torch.isfinite(x).all():
        raise InputImageError(f"{name} contains NaN or Inf")
    return x.clamp(0.0, 1.0)


def _erode(mask: torch.Tensor, px: int) -> torch.Tensor:
    """Shrink a ``[..., H, W]`` bool mask by ``px`` pixels (square structuring element)."""
    if px <= 0:
        return mask
    m = (~mask).float().reshape(-1, 1, *mask.shape[-2:])
    grown = F.max_pool2d(m, kernel_size=2 * px + 1, stride=1, padding=px) > 0
    return (~grown).reshape(mask.shape)


def views_from_generated(
    colors: torch.Tensor,
    *,
    face: torch.Tensor | None = None,
    normals: torch.Tensor | None = None,
    face_normal: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
    face_mask: torch.Tensor | None = None,
    mask_threshold: float = OFFICIAL_MASK_THRESHOLD,
    mask_erode_px: int = 1,
    face_weight: float = 4.0,
    face_feather: float = 0.08,
    device: torch.device | str | None = None,
) -> list[BakeView]:
    """Turn generated views into :class:`BakeView` s (views 2 and 3 flipped back, face view last).

    Masks: explicit ``masks [4, H, W]`` / ``face_mask [Hf, Wf]`` win; otherwise non-white pixels of the
    normal maps; otherwise every pixel (the mesh silhouette still limits what is used). Masks are eroded
    by ``mask_erode_px`` to drop anti-aliased background at the outline. ``face_weight`` favours the
    sharper close-up inside its window; ``face_feather`` (fraction of the face image) fades it out at the
    window border so no seam appears.
    """
    cols = _as_chw(colors, "color views", NUM_BODY_VIEWS)
    _, _, h, w = cols.shape
    if masks is not None:
        m = torch.as_tensor(masks).detach()
        if m.shape != (NUM_BODY_VIEWS, h, w):
            raise InputImageError(f"view masks must have shape [4, {h}, {w}], got {tuple(m.shape)}")
        m = m > 0.5 if m.is_floating_point() else m.bool()
    elif normals is not None:
        nrm = _as_chw(normals, "normal views", NUM_BODY_VIEWS)
        if nrm.shape[-2:] != (h, w):
            raise InputImageError(f"normal views must match the color views ({h}x{w}), got {tuple(nrm.shape)}")
        m = non_white_mask(nrm, mask_threshold)
    else:
        m = torch.ones(NUM_BODY_VIEWS, h, w, dtype=torch.bool)
    m = _erode(m, mask_erode_px)
    cols_true = generated_to_true_orientation(cols)
    m_true = generated_to_true_orientation(m)
    views = [
        BakeView(camera=body_view_camera(i), image=cols_true[i].to(device), mask=m_true[i].to(device))
        for i in range(NUM_BODY_VIEWS)
    ]
    if face is not None:
        fc = _as_chw(face, "face view", None)
        fh, fw = fc.shape[-2:]
        if face_mask is not None:
            fm = torch.as_tensor(face_mask).detach()
            if fm.shape != (fh, fw):
                raise InputImageError(f"face mask must have shape [{fh}, {fw}], got {tuple(fm.shape)}")
            fm = fm > 0.5 if fm.is_floating_point() else fm.bool()
        elif face_normal is not None:
            fn = _as_chw(face_normal, "face normal", None)
            if fn.shape[-2:] != (fh, fw):
                raise InputImageError(f"face normal must match the face view ({fh}x{fw}), got {tuple(fn.shape)}")
            fm = non_white_mask(fn, mask_threshold)
        else:
            fm = torch.ones(fh, fw, dtype=torch.bool)
        fm = _erode(fm, mask_erode_px)
        views.append(
            BakeView(
                camera=face_view_camera(),
                image=fc.to(device),
                mask=fm.to(device),
                weight=face_weight,
                feather_px=face_feather * min(fh, fw),
            )
        )
    return views
