"""The sparse voxel tensor used by every stage-2 model (TRELLIS ``SparseTensor`` semantics, pure PyTorch).

A :class:`SparseTensor` is a set of active voxels of a batch of 3D grids:

* ``feats  [N, *C]`` -- features, one row per active voxel (usually ``[N, C]``);
* ``coords [N, 4]`` int32 -- ``(batch, x, y, z)``; rows of one batch item are contiguous and items come
  in increasing batch order (the order *within* an item is free, ops keep it);
* ``layout`` -- one ``slice`` per batch item into the rows;
* ``shape``  -- ``(B, *C)``, as TRELLIS;
* ``scale``  -- edge length of one voxel in units of the grid the chain of tensors started from
  (down-sampling by 2 doubles it, up-sampling / subdivision halves it). Together with the spatial
  cache it tells ops whether a cached neighbour map or window partition belongs to these coordinates.

The *spatial cache* is a dict ``{scale: {key: value}}`` shared (by reference) between tensors that
derive from each other through feature-only ops (``replace``, elementwise ops, linear layers, norms),
so neighbour maps and window partitions are computed once per coordinate set and reused by every
layer. Ops that change coordinates move to another ``scale`` entry of the same dict (down/up-sampling)
so that e.g. an up-sample can find the mapping stored by its matching down-sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import torch

__all__ = ["SparseTensor", "sparse_batch_broadcast", "sparse_cat"]

Scale = tuple[Fraction, Fraction, Fraction]
_UNIT_SCALE: Scale = (Fraction(1), Fraction(1), Fraction(1))


def _as_scale(scale: Sequence[int | float | Fraction] | None) -> Scale:
    if scale is None:
        return _UNIT_SCALE
    if len(scale) != 3:
        raise ValueError(f"scale must have 3 entries (x, y, z), got {scale!r}")
    return tuple(Fraction(s) for s in scale)  # type: ignore[return-value]


def _layout_from_coords(coords: torch.Tensor, batch_size: int) -> list[slice]:
    counts = torch.bincount(coords[:, 0].long(), minlength=batch_size).tolist() if coords.shape[0] else [0] * batch_size
    layout, start = [], 0
    for n in counts:
        layout.append(slice(start, start + n))
        start += n
    return layout


class SparseTensor:
    """Active voxels of a batch of 3D grids: ``feats [N, *C]`` at ``coords [N, 4]`` = (batch, x, y, z).

    Args:
        feats: ``[N, *C]`` features.
        coords: ``[N, 4]`` integer coordinates (converted to int32), batch-contiguous in increasing
            batch order.
        shape: ``(B, *C)``; computed when omitted (``B = max batch index + 1``).
        layout: one slice per batch item; computed when omitted.
        scale: voxel edge length relative to the original grid (see module docstring).
        spatial_cache: cache dict to share (internal; use ``replace``).
        batch_size: number of batch items when some trailing items are empty.
    """

    __slots__ = ("_coords", "_feats", "_layout", "_scale", "_shape", "_spatial_cache", "_subdivided_from")

    def __init__(
        self,
        feats: torch.Tensor,
        coords: torch.Tensor,
        shape: Sequence[int] | None = None,
        layout: list[slice] | None = None,
        *,
        scale: Sequence[int | float | Fraction] | None = None,
        spatial_cache: dict[Scale, dict[Any, Any]] | None = None,
        batch_size: int | None = None,
    ) -> None:
        if coords.ndim != 2 or coords.shape[1] != 4:
            raise ValueError(f"coords must be [N, 4] (batch, x, y, z), got {tuple(coords.shape)}")
        if coords.is_floating_point() or coords.is_complex():
            raise ValueError(f"coords must be an integer tensor, got {coords.dtype}")
        if feats.ndim < 1 or feats.shape[0] != coords.shape[0]:
            raise ValueError(f"feats {tuple(feats.shape)} and coords {tuple(coords.shape)} disagree on N")
        if coords.dtype != torch.int32:
            coords = coords.to(torch.int32)
        if shape is None:
            if batch_size is None:
                batch_size = int(coords[:, 0].max().item()) + 1 if coords.shape[0] else 1
            shape = (batch_size, *feats.shape[1:])
        shape = torch.Size(shape)
        if layout is None:
            if coords.shape[0] > 1 and not bool((coords[1:, 0] >= coords[:-1, 0]).all()):
                raise ValueError(
                    "coords must be sorted by batch index (rows of one item contiguous, items in order); "
                    "sort them with coords[:, 0].argsort(stable=True) first"
                )
            layout = _layout_from_coords(coords, shape[0])
        self._feats = feats
        self._coords = coords
        self._shape = shape
        self._layout = layout
        self._scale = _as_scale(scale)
        self._spatial_cache: dict[Scale, dict[Any, Any]] = {} if spatial_cache is None else spatial_cache
        self._subdivided_from: SparseTensor | None = None

    # ------------------------------------------------------------------ properties

    @property
    def feats(self) -> torch.Tensor:
        if self._feats is None:  # lazy output of SparseSubdivide: every parent row repeated 8 times
            assert self._subdivided_from is not None
            self._feats = self._subdivided_from.feats.repeat_interleave(8, dim=0)
        return self._feats

    @property
    def subdivided_from(self) -> SparseTensor | None:
        """For the direct output of :class:`SparseSubdivide`: the parent tensor (whose rows, each
        repeated 8 times, are this tensor's features). Ops use it to work on the parents instead of
        the 8x larger children; any op that makes a new tensor drops it."""
        return self._subdivided_from

    @property
    def coords(self) -> torch.Tensor:
        return self._coords

    @property
    def shape(self) -> torch.Size:
        return self._shape

    @property
    def layout(self) -> list[slice]:
        return self._layout

    @property
    def scale(self) -> Scale:
        return self._scale

    @property
    def batch_size(self) -> int:
        return self._shape[0]

    @property
    def num_voxels(self) -> int:
        return self._coords.shape[0]

    @property
    def device(self) -> torch.device:
        return self._coords.device

    @property
    def dtype(self) -> torch.dtype:
        if self._feats is None and self._subdivided_from is not None:
            return self._subdivided_from.dtype
        return self.feats.dtype

    def dim(self) -> int:
        return len(self._shape)

    def seq_lens(self) -> list[int]:
        """Number of voxels of each batch item."""
        return [s.stop - s.start for s in self._layout]

    def batch_index(self) -> torch.Tensor:
        """``[N]`` int64 batch index of every voxel."""
        return self._coords[:, 0].long()

    def __repr__(self) -> str:
        return (
            f"SparseTensor(shape={tuple(self._shape)}, voxels={self.num_voxels}, dtype={self.dtype}, "
            f"device={self.device}, scale={tuple(str(s) for s in self._scale)})"
        )

    # ------------------------------------------------------------------ new tensors

    def replace(self, feats: torch.Tensor, coords: torch.Tensor | None = None) -> SparseTensor:
        """Same voxels (and shared caches) with new features; ``coords`` may be given.

        Caches, layout and scale are kept when ``coords`` is omitted or equal to the current coords;
        different coords start a fresh cache.
        """
        if coords is None or coords is self._coords:
            if feats.shape[0] != self.num_voxels:
                raise ValueError(f"replace: feats has {feats.shape[0]} rows for {self.num_voxels} voxels")
            return SparseTensor(
                feats,
                self._coords,
                (self._shape[0], *feats.shape[1:]),
                self._layout,
                scale=self._scale,
                spatial_cache=self._spatial_cache,
            )
        same = (
            coords.shape == self._coords.shape
            and coords.device == self._coords.device
            and torch.equal(coords.to(torch.int32), self._coords)
        )
        if same:
            return SparseTensor(
                feats,
                coords,
                (self._shape[0], *feats.shape[1:]),
                self._layout,
                scale=self._scale,
                spatial_cache=self._spatial_cache,
            )
        return SparseTensor(feats, coords, scale=self._scale, batch_size=self._shape[0])

    @classmethod
    def _lazy_subdivision(
        cls, parent: SparseTensor, coords: torch.Tensor, layout: list[slice], scale: Sequence[Fraction]
    ) -> SparseTensor:
        """Children of ``parent`` (8 per voxel, parent-major) whose features are materialised on first
        use of ``.feats``; used by :class:`SparseSubdivide`."""
        out = cls.__new__(cls)
        out._feats = None
        out._coords = coords
        out._shape = parent.shape
        out._layout = layout
        out._scale = _as_scale(scale)
        out._spatial_cache = parent._spatial_cache
        out._subdivided_from = parent
        return out

    def to(self, *args: Any, **kwargs: Any) -> SparseTensor:
        """``to(dtype)``, ``to(device)``, ``to(device, dtype)`` or keywords; coords only change device.

        Moving to another device drops the caches (they hold index tensors of the old device).
        """
        device = kwargs.pop("device", None)
        dtype = kwargs.pop("dtype", None)
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        for a in args:
            if isinstance(a, torch.dtype):
                dtype = a
            else:
                device = a
        feats = self.feats.to(device=device, dtype=dtype)
        if feats.device == self.device:
            return self.replace(feats)
        return SparseTensor(
            feats, self._coords.to(feats.device), self._shape[:1] + feats.shape[1:], self._layout, scale=self._scale
        )

    def type(self, dtype: torch.dtype) -> SparseTensor:
        return self.replace(self.feats.type(dtype))

    def float(self) -> SparseTensor:
        return self.replace(self.feats.float())

    def half(self) -> SparseTensor:
        return self.replace(self.feats.half())

    def cpu(self) -> SparseTensor:
        return self.to("cpu")

    def detach(self) -> SparseTensor:
        return self.replace(self.feats.detach())

    def reshape(self, *shape: int) -> SparseTensor:
        """Reshape the per-voxel feature dims: ``[N, *C] -> [N, *shape]``."""
        return self.replace(self.feats.reshape(self.feats.shape[0], *shape))

    def with_scale(self, scale: Sequence[int | float | Fraction]) -> SparseTensor:
        """Same tensor (and cache dict) at another scale entry (used by coordinate-changing ops)."""
        return SparseTensor(
            self.feats, self._coords, self._shape, self._layout, scale=scale, spatial_cache=self._spatial_cache
        )

    def __getitem__(self, idx: int) -> SparseTensor:
        """Batch item ``idx`` as a batch of one (batch column set to 0)."""
        if not isinstance(idx, int):
            raise TypeError(f"SparseTensor indexing takes one int batch index, got {type(idx).__name__}")
        if idx < 0:
            idx += self.batch_size
        sl = self._layout[idx]
        coords = self._coords[sl].clone()
        coords[:, 0] = 0
        return SparseTensor(self.feats[sl], coords, scale=self._scale, batch_size=1)

    def dense(self, spatial_shape: Sequence[int] | None = None) -> torch.Tensor:
        """Scatter into a dense ``[B, *C, X, Y, Z]`` grid (zeros elsewhere); for tests and debugging."""
        if spatial_shape is None:
            spatial_shape = (self._coords[:, 1:].max(0).values + 1).tolist() if self.num_voxels else [1, 1, 1]
        c = self._coords.long()
        feat_shape = self.feats.shape[1:]
        out = self.feats.new_zeros((self.batch_size, *spatial_shape, *feat_shape))
        out[c[:, 0], c[:, 1], c[:, 2], c[:, 3]] = self.feats
        nd = len(feat_shape)
        return out.permute(0, *range(4, 4 + nd), 1, 2, 3).contiguous()

    # ------------------------------------------------------------------ spatial cache

    def register_spatial_cache(self, key: Any, value: Any) -> None:
        """Store ``value`` under ``key`` for the coordinates of this tensor's scale."""
        self._spatial_cache.setdefault(self._scale, {})[key] = value

    def get_spatial_cache(self, key: Any) -> Any:
        """The value stored under ``key`` at this tensor's scale, or None."""
        return self._spatial_cache.get(self._scale, {}).get(key)

    def _merge_cache_from(self, other: SparseTensor) -> None:
        if other._spatial_cache is self._spatial_cache:
            return
        for scale, entries in other._spatial_cache.items():
            mine = self._spatial_cache.setdefault(scale, {})
            for k, v in entries.items():
                mine.setdefault(k, v)

    # ------------------------------------------------------------------ elementwise ops

    def _operand(self, other: Any) -> Any:
        """Per-voxel operand: SparseTensor -> its feats (same coords required); a ``[B, ...]`` tensor
        with ``B != N`` and as many dims as feats is broadcast per batch item (TRELLIS
        ``sparse_batch_broadcast``, used for adaLN modulation); anything else broadcasts as usual."""
        if isinstance(other, SparseTensor):
            if other.num_voxels != self.num_voxels or not (
                other._coords is self._coords or torch.equal(other._coords, self._coords)
            ):
                raise ValueError("elementwise op between SparseTensors with different coordinates")
            self._merge_cache_from(other)
            return other.feats
        if (
            isinstance(other, torch.Tensor)
            and other.ndim == self.feats.ndim
            and other.ndim >= 1
            and other.shape[0] == self.batch_size
            and self.batch_size != self.num_voxels
        ):
            return sparse_batch_broadcast(self, other)
        return other

    def _elementwise(self, other: Any, op: Callable[[Any, Any], torch.Tensor]) -> SparseTensor:
        return self.replace(op(self.feats, self._operand(other)))

    def __neg__(self) -> SparseTensor:
        return self.replace(-self.feats)

    def __add__(self, other: Any) -> SparseTensor:
        return self._elementwise(other, torch.add)

    __radd__ = __add__

    def __sub__(self, other: Any) -> SparseTensor:
        return self._elementwise(other, torch.sub)

    def __rsub__(self, other: Any) -> SparseTensor:
        return self._elementwise(other, lambda a, b: b - a)

    def __mul__(self, other: Any) -> SparseTensor:
        return self._elementwise(other, torch.mul)

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> SparseTensor:
        return self._elementwise(other, torch.div)

    def __rtruediv__(self, other: Any) -> SparseTensor:
        return self._elementwise(other, lambda a, b: b / a)


def sparse_batch_broadcast(x: SparseTensor, values: torch.Tensor) -> torch.Tensor:
    """Repeat per-item rows ``values [B, *C]`` to per-voxel rows ``[N, *C]`` following ``x.layout``."""
    counts = torch.tensor(x.seq_lens(), device=values.device)
    return torch.repeat_interleave(values, counts, dim=0, output_size=x.num_voxels)


def sparse_cat(inputs: Sequence[SparseTensor], dim: int = -1) -> SparseTensor:
    """Concatenate sparse tensors.

    ``dim`` is a feature dim (``-1`` or ``>= 1``): features of tensors with the same coords are
    concatenated (``[h, skip]`` in U-Net style models). ``dim=0`` stacks the batches (batch indices of
    later inputs are offset).
    """
    if not inputs:
        raise ValueError("sparse_cat needs at least one tensor")
    first = inputs[0]
    if dim == 0:
        coords, start = [], 0
        for t in inputs:
            c = t.coords.clone()
            c[:, 0] += start
            coords.append(c)
            start += t.batch_size
        return SparseTensor(torch.cat([t.feats for t in inputs], 0), torch.cat(coords, 0), batch_size=start)
    feats = [first.feats] + [first._operand(t) for t in inputs[1:]]
    return first.replace(torch.cat(feats, dim=dim))
