"""Multiview feature gather of the stage-2 decoders (docs/ARCHITECTURE.md §6.3, §7 step 2).

The decoders inject, into every active voxel of the 64^3 SLat grid, the DINOv2 patch features of the
pixel that voxel projects to in each of the four body views. The feature maps come from
``DINOv2.multiview_features`` (``synchuman_core.encoders.dinov2``) followed by the decoder's
``input_layer_color`` / ``input_layer_normal``: ``[B, V, R, R, C]`` = (batch, view, row, column,
channel), row 0 = top of the image, views in the SyncHuman order 0 front, 1 "right", 2 back, 3 "left"
(the stage-1 outputs as generated, i.e. views 2 and 3 mirrored; see
:func:`synchuman_core.stage1.sync.view_ray_index`).

The voxel -> pixel convention is shared with stage 1: voxel ``(x, y, z)`` is seen at row ``R-1-z`` and
column ``x`` in views 0 and 2, column ``y`` in views 1 and 3 (``R = 64`` here, ``row = 63 - z``). It is
taken from :func:`~synchuman_core.stage1.sync.view_ray_index`, the one definition of that convention.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import ConfigError
from ..stage1.sync import view_ray_index

__all__ = ["MV_CONDITION_VIEWS", "condition_mv", "mv_condition_views", "mv_pixel_index"]

# Which body views each official ``mv_condition_mode`` concatenates, in order.
MV_CONDITION_VIEWS: dict[str, tuple[int, ...]] = {"4_view": (0, 1, 2, 3), "front": (0,), "front&back": (0, 2)}


def mv_condition_views(mode: str) -> tuple[int, ...]:
    """Views gathered by an official ``mv_condition_mode`` (``"4_view"`` in the shipped decoders)."""
    try:
        return MV_CONDITION_VIEWS[mode]
    except KeyError:
        raise ConfigError(
            f"mv_condition_mode {mode!r} is not supported (known: {sorted(MV_CONDITION_VIEWS)})"
        ) from None


def mv_pixel_index(coords: torch.Tensor, map_shape: Sequence[int], views: Sequence[int] = (0, 1, 2, 3)) -> torch.Tensor:
    """Row of ``feats_map.reshape(-1, C)`` that each voxel reads in each view: ``[N, len(views)]`` int64.

    ``map_shape`` = ``(B, V, R, R, C)`` of the feature maps (V >= 4 body views in the SyncHuman order,
    row 0 = top). Voxel ``(b, x, y, z)`` reads row ``R-1-z`` and column ``x`` (views 0, 2) or ``y``
    (views 1, 3) of batch item ``b``.
    """
    if len(map_shape) != 5 or map_shape[2] != map_shape[3]:
        raise ValueError(f"feature maps must be [B, V, R, R, C], got {tuple(map_shape)}")
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise ValueError(f"coords must be [N, 4] (batch, x, y, z), got {tuple(coords.shape)}")
    b, v, r = int(map_shape[0]), int(map_shape[1]), int(map_shape[2])
    views = tuple(int(i) for i in views)
    if not views or min(views) < 0 or max(views) >= min(v, 4):
        raise ValueError(f"views {views} must be body views 0..3 present in the feature maps (V = {v})")
    c64 = coords.long()
    if coords.shape[0] and (
        int(c64[:, 1:].min()) < 0 or int(c64[:, 1:].max()) >= r or int(c64[:, 0].min()) < 0 or int(c64[:, 0].max()) >= b
    ):
        raise ValueError(f"voxel coordinates must lie in [0, {r}) with batch index < {b} to gather {r}x{r} maps")
    vox = (c64[:, 1] * r + c64[:, 2]) * r + c64[:, 3]  # [N] flat voxel id x*R*R + y*R + z
    pix = view_ray_index(r, coords.device).voxel_to_pixels[vox][:, list(views)]  # [N, nv] view*R*R + row*R + col
    return c64[:, :1] * (v * r * r) + pix


def condition_mv(coords: torch.Tensor, feats_map: torch.Tensor, views: Sequence[int] = (0, 1, 2, 3)) -> torch.Tensor:
    """Per-voxel multiview features: the official decoders' ``condition_mv``.

    Args:
        coords: ``[N, 4]`` int (batch, x, y, z) voxel coordinates in ``[0, R)``.
        feats_map: ``[B, V, R, R, C]`` per-view feature maps (V >= 4 body views in the SyncHuman order,
            row 0 = top; see the module docstring).
        views: which views to concatenate (``(0, 1, 2, 3)`` for ``"4_view"``).
    Returns:
        ``[N, len(views) * C]``: for voxel ``(b, x, y, z)`` the concatenation of
        ``feats_map[b, 0, R-1-z, x]``, ``feats_map[b, 1, R-1-z, y]``, ``feats_map[b, 2, R-1-z, x]``,
        ``feats_map[b, 3, R-1-z, y]`` (restricted to ``views``), in the map's dtype.
    """
    idx = mv_pixel_index(coords.to(feats_map.device), feats_map.shape, views)  # [N, nv]
    c = feats_map.shape[-1]
    return feats_map.reshape(-1, c)[idx.reshape(-1)].reshape(coords.shape[0], idx.shape[1] * c)
