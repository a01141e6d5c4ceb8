"""Pixel-aligned 2D <-> 3D synchronisation bridges of SyncHuman stage 1 (docs/ARCHITECTURE.md §3).

* :class:`DualCrossAttentionSS` (2D -> 3D, ``dual_CrossAttblocks_SS.i``): every voxel token of the
  structure latent attends to the pixels it projects to in the four body views (normal domain only).
* :class:`DualCrossAttentionMV` (3D -> 2D, ``dual_CrossAttblocks_MV.i``): every pixel of the four body
  views attends to the voxels along its viewing ray; normal and color have their own attention, FFN and
  output layers; the face close-up view only gets the residual.

Parameter names are the official ones, typos included (``input_layer_stucture``, ``ffn_stucture``).
All voxel <-> pixel index conventions live in :func:`view_ray_index`.

Batch layouts: the image features are the UNet batch ``[domain 2] x [group G] x [view V]`` (see
:mod:`synchuman_core.stage1.unet_layers`); the structure tokens are ``[G, R^3, C]`` with the same group
order (official CFG run: G = 2, uncond then cond). Token ``i`` of the structure is voxel
``(x, y, z) = (i // R^2, (i // R) % R, i % R)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import attention
from ..errors import ConfigError
from ..modules.norms import GroupNorm32, LayerNorm32
from .unet_layers import GEGLUFeedForward

__all__ = [
    "BODY_VIEWS",
    "DualCrossAttentionMV",
    "DualCrossAttentionSS",
    "RayCrossAttention",
    "SyncBridgeConfig",
    "ViewRayIndex",
    "view_ray_index",
]

# Body views 0..3; the view after them (index 4 in a 5-view batch) is the face close-up, never synced.
BODY_VIEWS = 4
# Voxel axis giving the image column in body views 0..3: x, y, x, y (0 = x, 1 = y).
_COLUMN_AXIS = (0, 1, 0, 1)

# Row chunk for the per-token parts of the bridges (4 slices in the official code); math unchanged.
_MAX_ROWS = 2048


@dataclass(frozen=True)
class ViewRayIndex:
    """Voxel <-> pixel correspondence between an ``R^3`` grid and four ``R x R`` body views.

    ``pixel_to_voxels [4, R, R, R]`` (long): flat voxel id ``x*R*R + y*R + z`` of the ``k``-th voxel on
    the viewing ray of pixel ``(view, row, col)``, ``k`` running along the depth axis in increasing
    coordinate order.
    ``voxel_to_pixels [R^3, 4]`` (long): flat pixel id ``view*R*R + row*R + col`` where voxel ``i`` appears
    in each body view 0..3.
    """

    res: int
    pixel_to_voxels: torch.Tensor
    voxel_to_pixels: torch.Tensor


def view_ray_index(res: int, device: torch.device | str | None = None) -> ViewRayIndex:
    """THE SyncHuman view/voxel convention (docs/ARCHITECTURE.md §3.4), as index tensors.

    Grid axes (x, y, z) are the latent dims (2, 3, 4); z is up. Body view ``v`` sees voxel ``(x, y, z)``
    at image row ``R - 1 - z`` (top row = highest z) and column ``x`` for views 0 (front) and 2 (back),
    ``y`` for views 1 and 3. Views 2 and 3 are therefore mirror images of true renders from behind / the
    other side; the model was trained that way and stage 2 unflips them when texturing. The depth axis of
    a pixel's ray is the other horizontal axis (y for views 0/2, x for views 1/3). The face close-up view
    has no voxel correspondence. Used with R = 16 (SS: pooled images vs the latent) and R = 12 (MV: the
    12x12 UNet level vs the pooled latent).
    """
    return _view_ray_index(int(res), str(torch.device(device if device is not None else "cpu")))


@lru_cache(maxsize=16)
def _view_ray_index(res: int, device: str) -> ViewRayIndex:
    r = res
    ar = torch.arange(r, device=device)
    # pixel -> voxels: for each (view, row, col, depth k)
    row, col, k = torch.meshgrid(ar, ar, ar, indexing="ij")  # [R, R, R] each
    z = r - 1 - row
    rays = []
    for axis in _COLUMN_AXIS:
        x, y = (col, k) if axis == 0 else (k, col)
        rays.append(x * r * r + y * r + z)
    pixel_to_voxels = torch.stack(rays)  # [4, R, R, R]
    # voxel -> pixels: for each voxel (x, y, z) and view
    x, y, z = torch.meshgrid(ar, ar, ar, indexing="ij")
    pix = []
    for v, axis in enumerate(_COLUMN_AXIS):
        c = x if axis == 0 else y
        pix.append(v * r * r + (r - 1 - z) * r + c)
    voxel_to_pixels = torch.stack(pix, dim=-1).reshape(r**3, BODY_VIEWS)  # [R^3, 4]
    return ViewRayIndex(r, pixel_to_voxels, voxel_to_pixels)


@dataclass(frozen=True)
class SyncBridgeConfig:
    """Constructor arguments of one sync bridge (the official ones, dropout excluded: inference only).

    Real model: ``query_dim_mv`` 640 / 1280 (SS) or 1280 (MV), ``query_dim_structure`` 1024, 16 heads x 64,
    5 views.
    """

    query_dim_mv: int
    query_dim_structure: int
    heads: int = 16
    dim_head: int = 64
    num_views: int = 5

    @classmethod
    def from_official(cls, data: Mapping[str, Any]) -> SyncBridgeConfig:
        """From the official constructor kwargs (``query_dim_MV``, ``query_dim_Structure``, ``heads``,
        ``dim_head``, ``dropout``, ``num_views``, ``bias``)."""
        names = {"query_dim_MV": "query_dim_mv", "query_dim_Structure": "query_dim_structure",
                 "heads": "heads", "dim_head": "dim_head", "num_views": "num_views"}
        unknown = sorted(set(data) - set(names) - {"dropout", "bias", "processor"})
        if unknown:
            raise ConfigError(f"sync bridge config keys not supported: {unknown}")
        if data.get("bias", False):
            raise ConfigError("sync bridges with q/k/v biases (bias=True) are not supported")
        missing = [k for k in ("query_dim_MV", "query_dim_Structure") if k not in data]
        if missing:
            raise ConfigError(f"sync bridge config lacks {missing}")
        return cls(**{names[k]: v for k, v in data.items() if k in names})


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------


class RayCrossAttention(nn.Module):
    """Every query token attends to its own small set of key tokens (official ``CrossAttention`` names:
    ``to_q``, ``to_k``, ``to_v`` without bias, ``to_out.0`` with bias).

    :meth:`forward` takes ``x [..., Nq, Cq]``, the key/value source tokens ``ctx [..., Nc, Ckv]`` and
    ``index [Nq, L]`` selecting the ``L`` keys of each query among the ``Nc`` source tokens. Keys and
    values are projected once per source token and then gathered (same values as gathering first).
    """

    def __init__(self, query_dim: int, kv_dim: int, heads: int, dim_head: int, *, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        inner = heads * dim_head
        self.heads = heads
        self.dim_head = dim_head
        self.to_q = nn.Linear(query_dim, inner, bias=False, **kw)
        self.to_k = nn.Linear(kv_dim, inner, bias=False, **kw)
        self.to_v = nn.Linear(kv_dim, inner, bias=False, **kw)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim, **kw)])

    def project_kv(self, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``ctx [G, Nc, Ckv] -> (k, v)`` each ``[G, Nc, inner]``."""
        return self.to_k(ctx), self.to_v(ctx)

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``x [G, Nq, Cq]``, projected ``k, v [G, Nc, inner]``, ``index [Nq, L]`` -> ``[G, Nq, Cq]``."""
        g, nq, _ = x.shape
        lk = index.shape[1]
        outs = []
        for s in range(0, nq, _MAX_ROWS):
            idx = index[s : s + _MAX_ROWS]  # [n, L]
            n = idx.shape[0]
            q = self.to_q(x[:, s : s + n]).reshape(g * n, 1, self.heads, self.dim_head)
            kk = k[:, idx].reshape(g * n, lk, self.heads, self.dim_head)  # [G*n, L, h, d]
            vv = v[:, idx].reshape(g * n, lk, self.heads, self.dim_head)
            o = attention(q, kk, vv).reshape(g, n, -1)
            outs.append(self.to_out[0](o))
        return torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]


class _Downsample(nn.Module):
    """``conv = Sequential(GroupNorm(32, C), Conv{2,3}d(C, C, 3, pad 1), GELU)`` then adaptive average pool.

    NB the official Sequential normalises *before* the convolution (GN eps 1e-5, exact GELU).
    """

    def __init__(self, channels: int, dims: int, *, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.dims = dims
        self.conv = nn.Sequential(
            GroupNorm32(32, channels, eps=1e-5, **kw), conv(channels, channels, 3, padding=1, **kw), nn.GELU()
        )

    def forward(self, x: torch.Tensor, size: int) -> torch.Tensor:
        """``[B, C, *S] -> [B, C, size, size(, size)]``."""
        x = self.conv(x)
        pool = F.adaptive_avg_pool2d if self.dims == 2 else F.adaptive_avg_pool3d
        return pool(x, size)


def _per_rows(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply a per-token function to ``x [G, N, C]`` in row slices (memory bound only)."""
    if x.shape[1] <= _MAX_ROWS:
        return fn(x)
    return torch.cat([fn(x[:, s : s + _MAX_ROWS]) for s in range(0, x.shape[1], _MAX_ROWS)], dim=1)


def _split_views(mv: torch.Tensor, groups: int, num_views: int) -> torch.Tensor:
    """UNet batch ``[2*G*V, C, H, W]`` -> ``[2, G, V, C, H, W]`` (domain, group, view), as a view."""
    if mv.shape[0] != 2 * groups * num_views:
        raise ValueError(
            f"image features must have batch 2 domains x {groups} groups x {num_views} views = "
            f"{2 * groups * num_views} (structure batch {groups}), got {mv.shape[0]}"
        )
    return mv.reshape(2, groups, num_views, *mv.shape[1:])


def _structure_res(structure: torch.Tensor) -> int:
    n = structure.shape[1]
    r = round(n ** (1 / 3))
    if r**3 != n:
        raise ValueError(f"structure tokens must form a cube R^3, got {n}")
    return r


# ------------------------------------------------------------------------------------------------
# Bridges
# ------------------------------------------------------------------------------------------------


class DualCrossAttentionSS(nn.Module):
    """2D -> 3D bridge: ``(mv [2GV, Cm, H, W], structure [G, R^3, Cs]) -> structure' [G, R^3, Cs]``.

    1. Normal-domain body views only (the color half and the face view do not influence the result):
       ``input_layer_mv`` (per pixel) -> ``imagedownsample`` (GN -> conv3x3 -> GELU -> adaptive pool to
       ``R x R``).
    2. ``S = input_layer_stucture(structure)``; each voxel queries (``normStructure1``) its 4 pixels
       (:func:`view_ray_index`); ``S += attn``; ``S += ffn_stucture(normStructure2(S))``.
    3. ``structure + output_layer_stucture(S)``.
    """

    def __init__(self, config: SyncBridgeConfig, *, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.config = config
        cm, cs = config.query_dim_mv, config.query_dim_structure
        heads, dim_head = config.heads, config.dim_head
        self.num_views = config.num_views
        self.normStructure1 = LayerNorm32(cs, elementwise_affine=True, eps=1e-6, **kw)
        self.normStructure2 = LayerNorm32(cs, elementwise_affine=True, eps=1e-6, **kw)
        self.imagedownsample = _Downsample(cm, 2, **kw)
        self.input_layer_mv = nn.Linear(cm, cm, **kw)
        self.input_layer_stucture = nn.Linear(cs, cs, **kw)
        self.output_layer_stucture = nn.Linear(cs, cs, **kw)
        self.ffn_stucture = GEGLUFeedForward(cs, **kw)
        self.cross_attn_MV_to_Structure = RayCrossAttention(cs, cm, heads, dim_head, **kw)

    def forward(self, mv: torch.Tensor, structure: torch.Tensor) -> torch.Tensor:
        g = structure.shape[0]
        r = _structure_res(structure)
        nb = BODY_VIEWS
        normal = _split_views(mv, g, self.num_views)[0, :, :nb]  # [G, 4, Cm, H, W]
        cm, h, w = normal.shape[2:]
        x = self.input_layer_mv(normal.reshape(g * nb, cm, h, w).permute(0, 2, 3, 1))  # [G*4, H, W, Cm]
        x = self.imagedownsample(x.permute(0, 3, 1, 2), r)  # [G*4, Cm, R, R]
        pixels = x.view(g, nb, cm, r, r).permute(0, 1, 3, 4, 2).reshape(g, nb * r * r, cm)  # (view, row, col)
        attn = self.cross_attn_MV_to_Structure
        k, v = attn.project_kv(pixels)  # [G, 4RR, inner]
        index = view_ray_index(r, structure.device).voxel_to_pixels  # [R^3, 4]

        s = self.input_layer_stucture(structure)  # [G, R^3, Cs]
        s = s + attn.attend(self.normStructure1(s), k, v, index)
        s = s + _per_rows(lambda t: self.ffn_stucture(self.normStructure2(t)), s)
        return structure + self.output_layer_stucture(s)


class DualCrossAttentionMV(nn.Module):
    """3D -> 2D bridge: ``(mv [2GV, Cm, H, H], structure [G, R^3, Cs]) -> mv' [2GV, Cm, H, H]``.

    1. Voxels: ``input_layer_stucture`` -> ``voxeldownsample`` (GN -> conv3d -> GELU -> adaptive pool to
       ``H^3``, H = the image side).
    2. Pixels of the body views: ``X = input_layer_mv(mv)`` (shared); per domain (``no`` = normal,
       ``clr`` = color): ``X += attn(LN1(X), ray voxels)`` (:func:`view_ray_index`),
       ``X += ffn(LN2(X))``, ``out = output_layer(X)``. LNs without affine, eps 1e-6.
    3. ``mv + out`` on the body views; the face view is returned unchanged (the official adds zeros).
    """

    def __init__(self, config: SyncBridgeConfig, *, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.config = config
        cm, cs = config.query_dim_mv, config.query_dim_structure
        heads, dim_head = config.heads, config.dim_head
        self.num_views = config.num_views
        self.voxeldownsample = _Downsample(cs, 3, **kw)
        self.normMV_no1 = LayerNorm32(cm, elementwise_affine=False, eps=1e-6, **kw)
        self.normMV_clr1 = LayerNorm32(cm, elementwise_affine=False, eps=1e-6, **kw)
        self.normMV_no2 = LayerNorm32(cm, elementwise_affine=False, eps=1e-6, **kw)
        self.normMV_clr2 = LayerNorm32(cm, elementwise_affine=False, eps=1e-6, **kw)
        self.input_layer_mv = nn.Linear(cm, cm, **kw)
        self.input_layer_stucture = nn.Linear(cs, cs, **kw)
        self.output_layer_no = nn.Linear(cm, cm, **kw)
        self.output_layer_clr = nn.Linear(cm, cm, **kw)
        self.ffn_no = GEGLUFeedForward(cm, **kw)
        self.ffn_clr = GEGLUFeedForward(cm, **kw)
        self.cross_attn_Structure_to_color = RayCrossAttention(cm, cs, heads, dim_head, **kw)
        self.cross_attn_Structure_to_normal = RayCrossAttention(cm, cs, heads, dim_head, **kw)

    def _domain(self, x, attn, ln1, ln2, ffn, out_layer, vox, index) -> torch.Tensor:
        k, v = attn.project_kv(vox)
        x = x + attn.attend(ln1(x), k, v, index)
        x = x + _per_rows(lambda t: ffn(ln2(t)), x)
        return out_layer(x)

    def forward(self, mv: torch.Tensor, structure: torch.Tensor) -> torch.Tensor:
        g = structure.shape[0]
        r = _structure_res(structure)
        nb = BODY_VIEWS
        grid = _split_views(mv, g, self.num_views)  # [2, G, V, Cm, H, W]
        cm, h, w = grid.shape[3:]
        if h != w:
            raise ValueError(f"the 3D->2D bridge needs square feature maps, got {h}x{w}")

        s = self.input_layer_stucture(structure)  # [G, R^3, Cs]
        s = s.transpose(1, 2).reshape(g, -1, r, r, r)  # [G, Cs, x, y, z]
        s = self.voxeldownsample(s, h)  # [G, Cs, H, H, H]
        vox = s.flatten(2).transpose(1, 2)  # [G, H^3, Cs], (x, y, z) order
        index = view_ray_index(h, mv.device).pixel_to_voxels.reshape(nb * h * h, h)  # [4HH, H]

        body = grid[:, :, :nb].permute(0, 1, 2, 4, 5, 3).reshape(2, g, nb * h * w, cm)  # (view, row, col)
        x = self.input_layer_mv(body)  # [2, G, 4HW, Cm]
        out_n = self._domain(x[0], self.cross_attn_Structure_to_normal, self.normMV_no1, self.normMV_no2,
                             self.ffn_no, self.output_layer_no, vox, index)
        out_c = self._domain(x[1], self.cross_attn_Structure_to_color, self.normMV_clr1, self.normMV_clr2,
                             self.ffn_clr, self.output_layer_clr, vox, index)
        upd = torch.stack([out_n, out_c]).view(2, g, nb, h, w, cm).permute(0, 1, 2, 5, 3, 4)
        out = mv.clone()
        out.view(2, g, self.num_views, cm, h, w)[:, :, :nb] += upd
        return out
