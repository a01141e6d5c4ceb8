"""Coordinate-changing sparse ops: down-sample (pooling), the matching up-sample, and subdivision."""

from __future__ import annotations

from fractions import Fraction

import torch
from torch import nn

from ..errors import ConfigError
from .tensor import SparseTensor, _layout_from_coords

__all__ = ["SparseDownsample", "SparseSubdivide", "SparseUpsample", "trellis_mean_pool"]


def _factor3(factor: int | tuple[int, ...] | list[int]) -> tuple[int, int, int]:
    f = (factor, factor, factor) if isinstance(factor, int) else tuple(factor)
    if len(f) != 3 or not all(isinstance(i, int) and i >= 1 for i in f):
        raise ConfigError(f"factor must be a positive int or 3 positive ints, got {factor!r}")
    return f  # type: ignore[return-value]


def trellis_mean_pool(
    feats: torch.Tensor, index: torch.Tensor, num_out: int, *, count_zero: bool = True,
    counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """Average ``feats [N, C]`` into ``num_out`` rows by ``index [N]``.

    TRELLIS's ``SparseDownsample`` does ``torch.scatter_reduce(zeros, ..., reduce="mean")`` with the
    default ``include_self=True``, so the zero it starts from is counted as one more element: each
    coarse voxel gets ``sum / (count + 1)``, not the plain mean. The SLat flow weights were trained
    with that, so ``count_zero=True`` (the default) reproduces it; ``False`` gives the plain mean.
    ``counts [num_out]`` (rows per output, e.g. cached) saves the ``bincount``, a host sync on CUDA.
    """
    c = feats.shape[1]
    total = feats.new_zeros((num_out, c)).index_add_(0, index, feats)
    count = (torch.bincount(index, minlength=num_out) if counts is None else counts).to(feats.dtype)
    if count_zero:
        count = count + 1
    return total / count.unsqueeze(1)


class SparseDownsample(nn.Module):
    """Pool each ``factor^3`` block of voxels into one coarse voxel at ``coords // factor``.

    Output coords are sorted row-major by ``(batch, x, y, z)`` (the unique codes TRELLIS builds), and
    the mapping back is cached for :class:`SparseUpsample`. Features are averaged the TRELLIS way
    (:func:`trellis_mean_pool`, ``count_zero`` = ``trellis_mean_quirk``).

    The coarse coordinates, the fine -> coarse index, the counts and the coarse layout depend on the
    coordinates only, so they are kept in the input's spatial cache: a sampler that calls the model on
    the same voxels every step derives them once (they cost ``unique`` and three host syncs).
    """

    def __init__(self, factor: int | tuple[int, int, int] = 2, *, trellis_mean_quirk: bool = True) -> None:
        super().__init__()
        self.factor = _factor3(factor)
        self.trellis_mean_quirk = trellis_mean_quirk

    def _coarse(self, x: SparseTensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[slice]]:
        key = ("downsample", self.factor)
        cached = x.get_spatial_cache(key)
        if cached is not None:
            return cached
        f = torch.tensor(self.factor, device=x.device)
        c = x.coords.long()
        coarse = torch.cat([c[:, :1], torch.div(c[:, 1:], f, rounding_mode="floor")], dim=1)
        ext = (coarse[:, 1:].max(0).values + 1).tolist() if x.num_voxels else [1, 1, 1]
        code = ((coarse[:, 0] * ext[0] + coarse[:, 1]) * ext[1] + coarse[:, 2]) * ext[2] + coarse[:, 3]
        code, idx = torch.unique(code, sorted=True, return_inverse=True)
        z = code % ext[2]
        rest = code // ext[2]
        y = rest % ext[1]
        rest = rest // ext[1]
        new_coords = torch.stack([rest // ext[0], rest % ext[0], y, z], dim=1).to(torch.int32)
        counts = torch.bincount(idx, minlength=code.shape[0])
        layout = _layout_from_coords(new_coords, x.shape[0])
        value = (new_coords, idx, counts, layout)
        x.register_spatial_cache(key, value)
        return value

    def forward(self, x: SparseTensor) -> SparseTensor:
        new_coords, idx, counts, layout = self._coarse(x)
        feats = trellis_mean_pool(x.feats, idx, new_coords.shape[0], count_zero=self.trellis_mean_quirk,
                                  counts=counts)
        out = SparseTensor(
            feats,
            new_coords,
            (x.shape[0], *feats.shape[1:]),
            layout,
            scale=tuple(s * k for s, k in zip(x.scale, self.factor)),
            spatial_cache=x._spatial_cache,
        )
        out.register_spatial_cache(("upsample", self.factor), (x.coords, x.layout, idx))
        return out

    def extra_repr(self) -> str:
        return f"factor={self.factor}, trellis_mean_quirk={self.trellis_mean_quirk}"


class SparseUpsample(nn.Module):
    """Inverse of the matching :class:`SparseDownsample`: every fine voxel copies its coarse voxel."""

    def __init__(self, factor: int | tuple[int, int, int] = 2) -> None:
        super().__init__()
        self.factor = _factor3(factor)

    def forward(self, x: SparseTensor) -> SparseTensor:
        cached = x.get_spatial_cache(("upsample", self.factor))
        if cached is None:
            raise ValueError(
                "SparseUpsample found no mapping: it must follow a SparseDownsample with the same factor "
                "on a tensor derived from that down-sample's output"
            )
        coords, layout, idx = cached
        return SparseTensor(
            x.feats[idx],
            coords,
            (x.shape[0], *x.feats.shape[1:]),
            layout,
            scale=tuple(Fraction(s) / k for s, k in zip(x.scale, self.factor)),
            spatial_cache=x._spatial_cache,
        )

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def _child_offsets(device: torch.device) -> torch.Tensor:
    """The 8 children offsets in TRELLIS order, ``torch.nonzero(torch.ones(2, 2, 2))``:
    (0,0,0), (0,0,1), (0,1,0), (0,1,1), (1,0,0), ... -> ``[8, 3]``."""
    return torch.nonzero(torch.ones(2, 2, 2, device=device)).to(torch.int32)


class SparseSubdivide(nn.Module):
    """Split every voxel into its 8 children at ``2 * coords + {0,1}^3`` (features copied).

    Rows are parent-major: parent ``i`` becomes rows ``8i .. 8i+7`` in :func:`_child_offsets` order.
    """

    def forward(self, x: SparseTensor) -> SparseTensor:
        off = _child_offsets(x.device)  # [8, 3]
        xyz = (x.coords[:, None, 1:] * 2 + off[None]).reshape(-1, 3)  # [8N, 3]
        batch = x.coords[:, :1].repeat_interleave(8, dim=0)  # [8N, 1]
        coords = torch.cat([batch, xyz], dim=1)
        layout = [slice(s.start * 8, s.stop * 8) for s in x.layout]
        # features (x.feats repeated 8 times) are materialised lazily: convolutions right after a
        # subdivision work on the parents (see SparseTensor.subdivided_from)
        return SparseTensor._lazy_subdivision(x, coords, layout, tuple(Fraction(s) / 2 for s in x.scale))
