"""Submanifold sparse 3D convolution in plain PyTorch, weight-compatible with spconv 2.x ``SubMConv3d``.

Semantics (what spconv computes, checked against the official fixtures): stride 1, the output lives on
the input's active sites, inactive neighbours count as zero, and with the spconv weight layout
``KRSC = [out, kx, ky, kz, in]`` the result equals a dense cross-correlation
``F.conv3d(dense, weight.permute(0, 4, 1, 2, 3), padding=k // 2)`` read at the active sites: kernel
index ``(a, b, c)`` multiplies the neighbour at ``(x + a - k//2, y + b - k//2, z + c - k//2)``.

Implementation: a *neighbour map* lists, for every kernel offset, the (input row, output row) pairs of
active voxels that are that offset apart. Coordinates are linearised into int64 keys on a padded grid;
neighbours are found with a dense lookup table when the padded grid is small enough, else with
``torch.searchsorted`` on the sorted keys. Pairs for offset ``-o`` are the swapped pairs of ``o``, so
only half of the offsets are searched. The map is cached in the tensor's spatial cache (key
``("submconv", kernel, dilation)``) and shared by every conv on the same coordinates. The convolution
is then one dense GEMM for the centre tap plus, per other offset, gather -> GEMM -> ``index_add_``,
in chunks of bounded size.

A conv applied directly to the output of :class:`~synchuman_core.sparse.SparseSubdivide` (the mesh
decoder's up-sampling blocks) is computed from the parent voxels instead
(:func:`_conv_of_subdivision`): same result, about 2.5x fewer operations, and the 8x larger child
features are never materialised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from .tensor import SparseTensor

__all__ = [
    "NeighbourMap",
    "SparseConv3d",
    "SubMConv3dKernel",
    "dense_equivalent_weight",
    "neighbour_map",
    "spconv_1x1_matrix",
    "submanifold_conv3d",
]

Triple = tuple[int, int, int]

# Padded grids with at most this many cells use a dense int32 lookup table (4 bytes per cell).
_DENSE_TABLE_MAX_CELLS = 1 << 25
# Gathered rows x channels per GEMM chunk (bounds the temporary memory of one conv step).
_CHUNK_ELEMENTS = 1 << 23


def _triple(v: int | tuple[int, ...], name: str) -> Triple:
    t = (v, v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 3 or not all(isinstance(i, int) and i >= 1 for i in t):
        raise ConfigError(f"{name} must be a positive int or 3 positive ints, got {v!r}")
    return t  # type: ignore[return-value]


@dataclass(frozen=True)
class NeighbourMap:
    """Active-voxel pairs of a submanifold conv.

    ``pairs[t] = (in_rows, out_rows)`` (int32, equal length) for every kernel tap ``t`` (flat index of
    ``(a, b, c)`` in a ``kx*ky*kz`` kernel) except the centre tap ``centre``, whose pairs are the
    identity. ``out = sum_t W_t^T in[in_rows]`` scattered to ``out_rows``.
    """

    kernel_size: Triple
    dilation: Triple
    centre: int
    pairs: dict[int, tuple[torch.Tensor, torch.Tensor]]

    def num_pairs(self) -> int:
        return sum(int(i.shape[0]) for i, _ in self.pairs.values())


class _KeyLookup:
    """Row index of the active voxel with a given linear key, or -1 (dense table or binary search)."""

    def __init__(self, keys: torch.Tensor, total_cells: int) -> None:
        n = keys.shape[0]
        self.n = n
        if total_cells <= _DENSE_TABLE_MAX_CELLS:
            self.table: torch.Tensor | None = torch.full((total_cells,), -1, dtype=torch.int32, device=keys.device)
            self.table[keys] = torch.arange(n, dtype=torch.int32, device=keys.device)
        else:
            self.table = None
            self.sorted_keys, perm = torch.sort(keys)
            self.perm = perm.to(torch.int32)

    def __call__(self, query: torch.Tensor) -> torch.Tensor:
        if self.table is not None:
            return self.table[query]
        pos = torch.searchsorted(self.sorted_keys, query).clamp_(max=self.n - 1)
        found = self.sorted_keys[pos] == query
        return torch.where(found, self.perm[pos], torch.full_like(self.perm[pos], -1))


def _build_neighbour_map(coords: torch.Tensor, kernel_size: Triple, dilation: Triple) -> NeighbourMap:
    radius = [(k // 2) * d for k, d in zip(kernel_size, dilation)]
    n = coords.shape[0]
    centre = (kernel_size[0] // 2 * kernel_size[1] + kernel_size[1] // 2) * kernel_size[2] + kernel_size[2] // 2
    pairs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    if n == 0:
        empty = torch.zeros(0, dtype=torch.int32, device=coords.device)
        for t in range(math.prod(kernel_size)):
            if t != centre:
                pairs[t] = (empty, empty)
        return NeighbourMap(kernel_size, dilation, centre, pairs)

    c = coords.long()
    xyz = c[:, 1:] - c[:, 1:].min(0).values + torch.tensor(radius, device=c.device)
    dims = (xyz.max(0).values + 1 + torch.tensor(radius, device=c.device)).tolist()  # padded extent
    batch = int(c[:, 0].max().item()) + 1
    keys = ((c[:, 0] * dims[0] + xyz[:, 0]) * dims[1] + xyz[:, 1]) * dims[2] + xyz[:, 2]
    del xyz
    lookup = _KeyLookup(keys, batch * dims[0] * dims[1] * dims[2])

    kx, ky, kz = kernel_size
    for t in range(kx * ky * kz):
        if t <= centre:
            continue  # the mirrored tap (already done) gives these pairs; the centre is the identity
        a, rem = divmod(t, ky * kz)
        b, cc = divmod(rem, kz)
        off = ((a - kx // 2) * dilation[0], (b - ky // 2) * dilation[1], (cc - kz // 2) * dilation[2])
        delta = (off[0] * dims[1] + off[1]) * dims[2] + off[2]
        nb = lookup(keys + delta)  # [N] row of the voxel at coords + off, or -1
        out_rows = torch.nonzero(nb >= 0).squeeze(1).to(torch.int32)
        in_rows = nb[out_rows.long()].to(torch.int32)
        pairs[t] = (in_rows, out_rows)
        # tap t' = mirror of t: the voxel at coords - off; same pairs with the roles swapped
        pairs[2 * centre - t] = (out_rows, in_rows)
    return NeighbourMap(kernel_size, dilation, centre, pairs)


def neighbour_map(x: SparseTensor, kernel_size: Triple, dilation: Triple = (1, 1, 1)) -> NeighbourMap:
    """The (cached) neighbour map of ``x``'s coordinates for a kernel (odd sizes only)."""
    key = ("submconv", kernel_size, dilation)
    nm = x.get_spatial_cache(key)
    if nm is None:
        nm = _build_neighbour_map(x.coords, kernel_size, dilation)
        x.register_spatial_cache(key, nm)
    return nm


def spconv_1x1_matrix(weight: torch.Tensor) -> torch.Tensor:
    """The ``[in, out]`` matrix spconv 2.x actually multiplies by for a 1x1x1 ``SubMConv3d``.

    spconv stores the weight as ``[out, 1, 1, 1, in]`` but its 1x1 fast path computes
    ``features @ weight.view(in, out)``: the flat memory is *re-read* as an ``[in, out]`` matrix, not
    transposed (spconv issue #450; docs/ARCHITECTURE.md §2.3). The released SyncHuman mesh decoder weights
    were trained through this path (``upsample.{0,1}.skip_connection``), so it must be reproduced.
    """
    out_ch, in_ch = weight.shape[0], weight.shape[-1]
    return weight.reshape(-1).view(in_ch, out_ch)


def _child_parent_taps(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``M[o, d + 1, t + 1] = 1`` when a child at offset ``o`` (0/1) inside its parent reaches, with a
    fine kernel tap ``t`` (-1/0/1), a child of the parent at offset ``d`` (``floor((o + t) / 2)``). ``[2, 3, 3]``."""
    m = torch.zeros(2, 3, 3, dtype=dtype, device=device)
    for o in (0, 1):
        for t in (-1, 0, 1):
            m[o, (o + t) // 2 + 1, t + 1] = 1
    return m


def _conv_of_subdivision(
    parent: SparseTensor, w: torch.Tensor, bias: torch.Tensor | None, spconv_1x1_quirk: bool
) -> torch.Tensor:
    """Submanifold conv of ``SparseSubdivide(parent)`` computed from the parents: ``[8 Np, out]``.

    The 8 children of a parent share its features, and a child position is active exactly when its
    parent is. So a 3x3x3 conv at child ``o`` of parent ``p`` is a 2x2x2 conv over parents
    ``p + d`` with merged weights ``W'(o, d) = sum of the fine taps t with floor((o + t) / 2) = d``:
    8 instead of up to 27 gathered rows per child. A 1x1x1 conv is done per parent and repeated.
    """
    feats = parent.feats  # [Np, in]
    dt = feats.dtype
    acc_dt = torch.promote_types(dt, torch.float32)
    in_ch, out_ch = w.shape[-1], w.shape[0]
    if w.shape[1:4] == (1, 1, 1):
        mat = spconv_1x1_matrix(w) if spconv_1x1_quirk else w[:, 0, 0, 0, :].t()
        out = feats @ mat
        if bias is not None:
            out = out + bias.to(dt)
        return out.repeat_interleave(8, dim=0)

    n_par = parent.num_voxels
    nm = neighbour_map(parent, (3, 3, 3))
    taps = w.permute(1, 2, 3, 4, 0)  # [3(tx), 3(ty), 3(tz), in, out]
    m = _child_parent_taps(w.device, dt)
    child_index = torch.arange(8, device=feats.device).view(2, 2, 2)
    out = torch.zeros(8 * n_par, out_ch, dtype=acc_dt, device=feats.device)
    if bias is not None:
        out += bias.to(acc_dt)
    for t in range(27):
        d = (t // 9, (t // 3) % 3, t % 3)  # parent offset + 1
        sel = [torch.nonzero(m[:, di].any(dim=1)).squeeze(1) for di in d]  # children reaching it, per axis
        ms = [m[s, di] for s, di in zip(sel, d)]  # [n_axis, 3]
        merged = torch.einsum("ax,by,cz,xyzio->abcio", ms[0], ms[1], ms[2], taps)  # [na, nb, nc, in, out]
        n_kids = merged.shape[0] * merged.shape[1] * merged.shape[2]
        w_cat = merged.reshape(n_kids, in_ch, out_ch).permute(1, 0, 2).reshape(in_ch, n_kids * out_ch)
        kids = child_index[sel[0]][:, sel[1]][:, :, sel[2]].reshape(-1)  # [n_kids] child slot 0..7
        if t == nm.centre:
            in_rows = out_rows = None
            n_pairs = n_par
        else:
            in_rows, out_rows = nm.pairs[t]
            n_pairs = in_rows.shape[0]
        step = max(1024, _CHUNK_ELEMENTS // max(in_ch, n_kids * out_ch))
        for s in range(0, n_pairs, step):
            if in_rows is None:
                g = feats[s : s + step]
                dst = torch.arange(s, min(s + step, n_par), device=feats.device)
            else:
                g = feats.index_select(0, in_rows[s : s + step])
                dst = out_rows[s : s + step].long()
            y = (g @ w_cat).reshape(-1, out_ch)  # [P * n_kids, out]
            rows = (dst[:, None] * 8 + kids[None, :]).reshape(-1)
            out.index_add_(0, rows, y.to(acc_dt))
    return out.to(dt)


def submanifold_conv3d(
    x: SparseTensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    dilation: Triple = (1, 1, 1),
    *,
    spconv_1x1_quirk: bool = False,
) -> torch.Tensor:
    """Submanifold conv of ``x`` with a KRSC weight ``[out, kx, ky, kz, in]``: returns ``[N, out]``.

    Computed in ``x.dtype`` (parameters are cast to it); half-precision inputs accumulate in fp32.
    ``spconv_1x1_quirk`` selects :func:`spconv_1x1_matrix` for 1x1x1 kernels.
    """
    if weight.ndim != 5 or len(x.shape) != 2 or x.shape[1] != weight.shape[-1]:
        raise ValueError(f"conv weight {tuple(weight.shape)} does not fit features {tuple(x.shape)} (B, C)")
    kernel_size: Triple = tuple(weight.shape[1:4])  # type: ignore[assignment]
    if any(k % 2 == 0 for k in kernel_size):
        raise ConfigError(f"submanifold conv needs odd kernel sizes, got {kernel_size}")
    dt = x.dtype
    w = weight.to(dt)
    parent = x.subdivided_from
    if parent is not None and kernel_size in ((1, 1, 1), (3, 3, 3)) and dilation == (1, 1, 1):
        return _conv_of_subdivision(parent, w, bias, spconv_1x1_quirk)
    feats = x.feats
    acc_dt = torch.promote_types(dt, torch.float32)
    out_ch = weight.shape[0]

    if kernel_size == (1, 1, 1):
        mat = spconv_1x1_matrix(w) if spconv_1x1_quirk else w[:, 0, 0, 0, :].t()
        out = feats @ mat
        return out if bias is None else out + bias.to(dt)

    nm = neighbour_map(x, kernel_size, dilation)
    taps = w.permute(1, 2, 3, 4, 0).reshape(-1, w.shape[-1], out_ch)  # [K, in, out]
    out = (feats @ taps[nm.centre]).to(acc_dt)  # centre tap: every voxel is its own neighbour
    if bias is not None:
        out += bias.to(acc_dt)
    rows_per_chunk = max(1024, _CHUNK_ELEMENTS // max(feats.shape[1], out_ch))
    for t, (in_rows, out_rows) in nm.pairs.items():
        for s in range(0, in_rows.shape[0], rows_per_chunk):
            idx_in = in_rows[s : s + rows_per_chunk]
            idx_out = out_rows[s : s + rows_per_chunk]
            contrib = feats.index_select(0, idx_in) @ taps[t]  # [P, out]
            out.index_add_(0, idx_out, contrib.to(acc_dt))
    return out.to(dt)


class SubMConv3dKernel(nn.Module):
    """Parameter holder with spconv's names and layout: ``weight [out, kx, ky, kz, in]``, ``bias [out]``.

    It is the ``conv`` child of :class:`SparseConv3d`, so state-dict keys read ``<name>.conv.weight``.
    TRELLIS's ``use_fp16`` converts these parameters to half (include this type in fp16 conversion).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Triple,
        bias: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        fk = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, *kernel_size, in_channels, **fk))
        self.bias = nn.Parameter(torch.empty(out_channels, **fk)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.in_channels * math.prod(self.kernel_size)
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, bias={self.bias is not None}"


class SparseConv3d(nn.Module):
    """Submanifold 3D convolution (spconv ``SubMConv3d`` / TRELLIS ``SparseConv3d`` with stride 1).

    Args:
        in_channels, out_channels: feature channels.
        kernel_size: odd int or 3 odd ints.
        dilation: int or 3 ints.
        bias: whether ``conv.bias`` exists.
        spconv_1x1_quirk: for 1x1x1 kernels, compute ``feats @ weight.view(in, out)`` as spconv 2.x does
            (:func:`spconv_1x1_matrix`); the SyncHuman mesh decoder's skip convs need it on.

    Only stride 1 (submanifold) convolutions exist in the SyncHuman models; others are not provided.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int],
        dilation: int | tuple[int, int, int] = 1,
        bias: bool = True,
        *,
        spconv_1x1_quirk: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        ks = _triple(kernel_size, "kernel_size")
        if any(k % 2 == 0 for k in ks):
            raise ConfigError(f"SparseConv3d supports odd kernel sizes only, got {kernel_size!r}")
        self.dilation = _triple(dilation, "dilation")
        self.spconv_1x1_quirk = spconv_1x1_quirk
        self.conv = SubMConv3dKernel(in_channels, out_channels, ks, bias, device=device, dtype=dtype)

    @property
    def in_channels(self) -> int:
        return self.conv.in_channels

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = submanifold_conv3d(
            x, self.conv.weight, self.conv.bias, self.dilation, spconv_1x1_quirk=self.spconv_1x1_quirk
        )
        return x.replace(out)

    def extra_repr(self) -> str:
        return f"dilation={self.dilation}, spconv_1x1_quirk={self.spconv_1x1_quirk}"


def dense_equivalent_weight(weight: torch.Tensor) -> torch.Tensor:
    """KRSC ``[out, kx, ky, kz, in]`` -> ``nn.Conv3d`` weight ``[out, in, kx, ky, kz]``."""
    return weight.permute(0, 4, 1, 2, 3)

