"""Per-voxel sparse layers: linear, activations, group / layer norms (TRELLIS names and parameter keys).

Every layer takes and returns a :class:`SparseTensor`; coordinates and caches pass through untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .tensor import SparseTensor

__all__ = [
    "SparseGELU",
    "SparseGroupNorm",
    "SparseGroupNorm32",
    "SparseLayerNorm",
    "SparseLayerNorm32",
    "SparseLinear",
    "SparseReLU",
    "SparseSiLU",
]


class SparseLinear(nn.Linear):
    """``nn.Linear`` on every voxel: ``feats [N, in] -> [N, out]``. Keys ``weight [out, in]``, ``bias [out]``."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace(F.linear(x.feats, self.weight, self.bias))


class SparseReLU(nn.ReLU):
    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace(F.relu(x.feats))


class SparseSiLU(nn.SiLU):
    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace(F.silu(x.feats))


class SparseGELU(nn.GELU):
    """GELU on every voxel (``approximate="tanh"`` in the TRELLIS feed-forward nets)."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace(F.gelu(x.feats, approximate=self.approximate))


_GN_ROWS_PER_CHUNK = 1 << 16


def _group_norm_rows(
    x: torch.Tensor, groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """GroupNorm of one batch item whose voxels are rows: ``x [n, C] -> [n, C]``.

    Statistics are taken over all voxels of the item and the channels of a group (biased variance),
    exactly what ``nn.GroupNorm`` does on the ``[1, C, n]`` view TRELLIS builds.
    """
    n, c = x.shape
    if n == 0:
        return x.clone()
    per = c // groups
    # column sums (fast outer reductions), then two-pass variance; one [n, C] allocation in total
    mean = (x.sum(0) / n).view(groups, per).mean(1).repeat_interleave(per)  # [C] group mean per channel
    y = x - mean  # [n, C], becomes the output
    sq = sum(chunk.square().sum(0) for chunk in y.split(_GN_ROWS_PER_CHUNK))  # [C]
    var = (sq / (n * per)).view(groups, per).sum(1).repeat_interleave(per)  # [C]
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    y.mul_(scale)
    if bias is not None:
        y.add_(bias)
    return y


class SparseGroupNorm(nn.GroupNorm):
    """GroupNorm over the voxels of each batch item separately (TRELLIS ``SparseGroupNorm``).

    Keys ``weight [C]``, ``bias [C]`` (when affine). ``feats [N, C] -> [N, C]``.
    """

    def _compute_dtype(self, x: SparseTensor) -> torch.dtype:
        return x.dtype

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        feats = x.feats
        if feats.ndim != 2 or feats.shape[1] != self.num_channels:
            raise ValueError(f"{type(self).__name__}({self.num_channels}) got feats {tuple(feats.shape)}")
        ct = self._compute_dtype(x)
        w = None if self.weight is None else self.weight.to(ct)
        b = None if self.bias is None else self.bias.to(ct)
        if x.batch_size == 1:
            out = _group_norm_rows(feats.to(ct), self.num_groups, w, b, self.eps)
        else:
            out = torch.empty(feats.shape, dtype=ct, device=feats.device)
            for sl in x.layout:
                if sl.stop > sl.start:
                    out[sl] = _group_norm_rows(feats[sl].to(ct), self.num_groups, w, b, self.eps)
        return x.replace(out.to(x.dtype))


class SparseGroupNorm32(SparseGroupNorm):
    """:class:`SparseGroupNorm` computed in fp32 (input, weight and bias upcast), output in the input dtype."""

    def _compute_dtype(self, x: SparseTensor) -> torch.dtype:
        return torch.promote_types(x.dtype, torch.float32)


class SparseLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of every voxel: ``feats [N, C] -> [N, C]``.

    (TRELLIS's own ``SparseLayerNorm`` applies ``nn.LayerNorm(C)`` to a ``[1, C, n]`` view, which only
    runs when ``n == C``; no shipped model uses it. This is the per-voxel channel norm.)
    """

    def _compute_dtype(self, x: SparseTensor) -> torch.dtype:
        return x.dtype

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        ct = self._compute_dtype(x)
        w = None if self.weight is None else self.weight.to(ct)
        b = None if self.bias is None else self.bias.to(ct)
        y = F.layer_norm(x.feats.to(ct), self.normalized_shape, w, b, self.eps)
        return x.replace(y.to(x.dtype))


class SparseLayerNorm32(SparseLayerNorm):
    """:class:`SparseLayerNorm` computed in fp32, output in the input dtype."""

    def _compute_dtype(self, x: SparseTensor) -> torch.dtype:
        return torch.promote_types(x.dtype, torch.float32)
