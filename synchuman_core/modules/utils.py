"""Helpers shared by the TRELLIS-family models."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FP16_MODULE_TYPES", "convert_to_fp16", "first_param_dtype"]

# Primitive layers whose parameters TRELLIS's ``convert_to_fp16`` turns to half (norms stay fp32).
FP16_MODULE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)


def convert_to_fp16(root: nn.Module, extra_types: tuple[type[nn.Module], ...] = ()) -> None:
    """Reproduce TRELLIS ``use_fp16``: parameters of every Linear/Conv (and ``extra_types``, e.g. sparse
    convs) under ``root`` become fp16; everything else (norms, RMS gammas, buffers) keeps its dtype.
    Works on the meta device."""
    types = FP16_MODULE_TYPES + tuple(extra_types)
    for m in root.modules():
        if isinstance(m, types):
            for p in m.parameters(recurse=False):
                p.data = p.data.half()


def first_param_dtype(module: nn.Module, default: torch.dtype = torch.float32) -> torch.dtype:
    """dtype of the first floating parameter of ``module`` (``default`` if it has none)."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return default
