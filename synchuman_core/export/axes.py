"""Axis conventions of the written files."""

from __future__ import annotations

from typing import Literal

import torch

from ..errors import ConfigError

__all__ = ["UpAxis", "convert_up_axis", "zup_to_yup"]

UpAxis = Literal["y", "z"]


def zup_to_yup(points: torch.Tensor) -> torch.Tensor:
    """SyncHuman world (z up, subject facing the front camera at -Y) → glTF (y up, subject facing +Z).

    ``(x, y, z) → (x, z, -y)``: the official ``to_glb`` multiplies by ``[[1,0,0],[0,0,-1],[0,1,0]]``
    (docs/ARCHITECTURE.md §8.6). A proper rotation (det +1), so it also maps normals and keeps the winding.
    """
    return torch.stack([points[..., 0], points[..., 2], -points[..., 1]], dim=-1)


def convert_up_axis(points: torch.Tensor, up_axis: UpAxis) -> torch.Tensor:
    """``"y"`` → :func:`zup_to_yup` (glTF, OBJ and most DCC tools); ``"z"`` → unchanged (SyncHuman frame)."""
    if up_axis == "y":
        return zup_to_yup(points)
    if up_axis == "z":
        return points
    raise ConfigError(f"up_axis must be 'y' (glTF convention) or 'z' (SyncHuman frame), got {up_axis!r}")
