"""A vectorised triangle rasteriser with a z-buffer, in plain PyTorch (CPU or GPU).

Algorithm: every triangle enumerates the pixel centres of its screen bounding box. Triangles are bucketed
by their box size rounded up to powers of two (per axis) so one bucket is a dense ``[K, Sh*Sw]`` batch;
buckets are cut into chunks of at most ``max_candidates`` (triangle, pixel) pairs to bound memory. Inside
pixels keep their depth; the z-buffer is ``scatter_reduce(amin)`` of the depths; the winning triangle of a
pixel is the largest triangle id whose depth equals the buffer (exact ties only). Barycentrics of the
winners are recomputed once at the end. Orthographic / affine (no perspective-correct interpolation),
which is all SyncHuman needs (ortho views and UV space).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Rasterization", "interpolate", "rasterize"]

_INSIDE_EPS = 1e-5  # barycentric slack: shared edges are covered by both triangles (no cracks)


@dataclass
class Rasterization:
    """Per-pixel result of :func:`rasterize`."""

    tri_id: torch.Tensor  # [H, W] int64, -1 = background
    bary: torch.Tensor  # [H, W, 3] float32 barycentrics of the winning triangle (0 on background)
    depth: torch.Tensor  # [H, W] float32, +inf on background

    @property
    def mask(self) -> torch.Tensor:
        """``[H, W]`` bool, True where a triangle covers the pixel centre."""
        return self.tri_id >= 0


def _bucket_key(size: torch.Tensor) -> torch.Tensor:
    """ceil(log2(size)) for positive integer sizes (size 1 → 0)."""
    return torch.ceil(torch.log2(size.to(torch.float64))).to(torch.int64)


def rasterize(
    screen: torch.Tensor,
    faces: torch.Tensor,
    height: int,
    width: int,
    *,
    max_candidates: int = 1 << 21,
    cull_backfaces: bool = False,
) -> Rasterization:
    """Rasterise triangles given in screen space.

    Args:
        screen: ``[V, 3]`` vertex positions as (col, row, depth) in continuous pixel units (pixel ``(r, c)``
            has its centre at ``(c + 0.5, r + 0.5)``); smaller depth wins.
        faces: ``[F, 3]`` int64 vertex indices. Both windings are drawn (no back-face culling).
        height, width: output size.
        max_candidates: upper bound on (triangle, pixel) pairs evaluated at once (memory knob).
        cull_backfaces: skip triangles whose counter-clockwise side (as seen by a camera whose image rows
            grow downwards, i.e. the outside of a mesh from :class:`OrthoCamera`) faces away. Halves the
            work for closed meshes.
    """
    device = screen.device
    screen = screen.to(torch.float32)
    num_pix = height * width
    zbuf = torch.full((num_pix,), float("inf"), dtype=torch.float32, device=device)
    tri_buf = torch.full((num_pix,), -1, dtype=torch.int64, device=device)
    empty = Rasterization(
        tri_id=tri_buf.view(height, width),
        bary=torch.zeros(height, width, 3, dtype=torch.float32, device=device),
        depth=zbuf.view(height, width),
    )
    if faces.numel() == 0:
        return empty

    tri = screen[faces]  # [F, 3, 3]
    xs, ys, zs = tri[..., 0], tri[..., 1], tri[..., 2]  # [F, 3] each
    c0 = torch.ceil(xs.min(dim=1).values - 0.5).clamp(min=0)
    c1 = torch.floor(xs.max(dim=1).values - 0.5).clamp(max=width - 1)
    r0 = torch.ceil(ys.min(dim=1).values - 0.5).clamp(min=0)
    r1 = torch.floor(ys.max(dim=1).values - 0.5).clamp(max=height - 1)
    ex1, ey1 = xs[:, 1] - xs[:, 0], ys[:, 1] - ys[:, 0]
    ex2, ey2 = xs[:, 2] - xs[:, 0], ys[:, 2] - ys[:, 0]
    area = ex1 * ey2 - ey1 * ex2  # [F] twice the signed area
    keep = (c0 <= c1) & (r0 <= r1) & (area.abs() > 1e-12) & torch.isfinite(area)
    if cull_backfaces:
        keep &= area < 0  # rows point down, so outward-facing CCW triangles have negative screen area
    ids = torch.nonzero(keep).squeeze(1)
    if ids.numel() == 0:
        return empty

    c0i, r0i = c0[ids].to(torch.int64), r0[ids].to(torch.int64)
    bw = c1[ids].to(torch.int64) - c0i + 1
    bh = r1[ids].to(torch.int64) - r0i + 1
    key = _bucket_key(bw) * 64 + _bucket_key(bh)

    cand_pix: list[torch.Tensor] = []
    cand_z: list[torch.Tensor] = []
    cand_tri: list[torch.Tensor] = []
    for k in torch.unique(key).tolist():
        sel = torch.nonzero(key == k).squeeze(1)
        sw, sh = 1 << (k // 64), 1 << (k % 64)
        dy, dx = torch.meshgrid(torch.arange(sh, device=device), torch.arange(sw, device=device), indexing="ij")
        dx, dy = dx.reshape(1, -1), dy.reshape(1, -1)  # [1, S]
        per_chunk = max(1, max_candidates // (sw * sh))
        for start in range(0, sel.numel(), per_chunk):
            s = sel[start : start + per_chunk]
            t = ids[s]  # [K] triangle ids
            px = c0i[s, None] + dx  # [K, S]
            py = r0i[s, None] + dy
            valid = (dx < bw[s, None]) & (dy < bh[s, None])
            # position of the pixel centre relative to vertex 0 (small numbers: good float32 precision)
            rx = px.to(torch.float32) + 0.5 - xs[t, 0, None]
            ry = py.to(torch.float32) + 0.5 - ys[t, 0, None]
            inv_area = 1.0 / area[t, None]
            b1 = (rx * ey2[t, None] - ry * ex2[t, None]) * inv_area
            b2 = (ex1[t, None] * ry - ey1[t, None] * rx) * inv_area
            b0 = 1.0 - b1 - b2
            inside = valid & (b0 >= -_INSIDE_EPS) & (b1 >= -_INSIDE_EPS) & (b2 >= -_INSIDE_EPS)
            z = b0 * zs[t, 0, None] + b1 * zs[t, 1, None] + b2 * zs[t, 2, None]
            pix = (py * width + px)[inside]
            zin = z[inside]
            zbuf.scatter_reduce_(0, pix, zin, "amin", include_self=True)
            cand_pix.append(pix)
            cand_z.append(zin)
            cand_tri.append(t[:, None].expand_as(px)[inside])

    pix = torch.cat(cand_pix)
    z = torch.cat(cand_z)
    tid = torch.cat(cand_tri)
    win = z == zbuf[pix]
    tri_buf.scatter_reduce_(0, pix[win], tid[win], "amax", include_self=True)

    bary = torch.zeros(num_pix, 3, dtype=torch.float32, device=device)
    covered = torch.nonzero(tri_buf >= 0).squeeze(1)
    if covered.numel():
        t = tri_buf[covered]
        px = (covered % width).to(torch.float32) + 0.5
        py = torch.div(covered, width, rounding_mode="floor").to(torch.float32) + 0.5
        rx, ry = px - xs[t, 0], py - ys[t, 0]
        b1 = (rx * ey2[t] - ry * ex2[t]) / area[t]
        b2 = (ex1[t] * ry - ey1[t] * rx) / area[t]
        b = torch.stack([1.0 - b1 - b2, b1, b2], dim=-1).clamp(min=0.0)
        bary[covered] = b / b.sum(dim=-1, keepdim=True).clamp(min=1e-12)
    return Rasterization(
        tri_id=tri_buf.view(height, width), bary=bary.view(height, width, 3), depth=zbuf.view(height, width)
    )


def interpolate(attr: torch.Tensor, faces: torch.Tensor, rast: Rasterization) -> torch.Tensor:
    """Barycentric interpolation of per-vertex ``attr [V, C]`` → ``[H, W, C]`` (zeros on background)."""
    h, w = rast.tri_id.shape
    out = torch.zeros(h, w, attr.shape[1], dtype=attr.dtype, device=attr.device)
    m = rast.mask
    if bool(m.any()):
        t = rast.tri_id[m]  # [P]
        b = rast.bary[m].to(attr.dtype)  # [P, 3]
        corner = attr[faces[t]]  # [P, 3, C]
        out[m] = (b.unsqueeze(-1) * corner).sum(dim=1)
    return out
