"""Dense grid <-> patch / token reshapes of the TRELLIS 3D models."""

from __future__ import annotations

import torch
from einops import rearrange

__all__ = ["grid_to_tokens", "patchify3d", "pixel_shuffle_3d", "tokens_to_grid", "unpatchify3d"]


def patchify3d(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``[B, C, X, Y, Z] -> [B, C*p^3, X/p, Y/p, Z/p]``; channel ``c*p^3 + (i*p^2 + j*p + k)`` holds the
    voxel at offset ``(i, j, k)`` inside its patch (TRELLIS ``patchify``)."""
    if any(s % patch_size for s in x.shape[2:]):
        raise ValueError(f"spatial size {tuple(x.shape[2:])} is not divisible by patch size {patch_size}")
    p = patch_size
    return rearrange(x, "b c (x i) (y j) (z k) -> b (c i j k) x y z", i=p, j=p, k=p)


def unpatchify3d(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Inverse of :func:`patchify3d`: ``[B, C*p^3, X, Y, Z] -> [B, C, X*p, Y*p, Z*p]``."""
    p = patch_size
    return rearrange(x, "b (c i j k) x y z -> b c (x i) (y j) (z k)", i=p, j=p, k=p)


def pixel_shuffle_3d(x: torch.Tensor, scale_factor: int) -> torch.Tensor:
    """3D pixel shuffle ``[B, C*s^3, H, W, D] -> [B, C, H*s, W*s, D*s]``: channel ``c*s^3 + (i*s^2+j*s+k)``
    goes to spatial offset ``(i, j, k)`` on dims (H, W, D) (same layout as :func:`unpatchify3d`)."""
    return unpatchify3d(x, scale_factor)


def grid_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, X, Y, Z] -> [B, X*Y*Z, C]``; token index ``x*Y*Z + y*Z + z`` (row-major over dims 2,3,4)."""
    return x.flatten(2).transpose(1, 2).contiguous()


def tokens_to_grid(h: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of :func:`grid_to_tokens`: ``[B, X*Y*Z, C] -> [B, C, X, Y, Z]``."""
    return h.transpose(1, 2).reshape(h.shape[0], h.shape[2], *size)
