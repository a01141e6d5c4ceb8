"""A vectorised triangle rasteriser with a z-buffer, in plain PyTorch (CPU or GPU).

Algorithm: every triangle enumerates the pixel centres of its screen bounding box. Triangles are bucketed
by their box size rounded up to 4 steps per octave (per axis) so one bucket is a dense ``[K, Sh*Sw]`` batch;
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


def _bucket_size(size: torch.Tensor) -> torch.Tensor:
    """Round box sizes up to 4 steps per octave (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, ...):
    at most ~25% wasted pixels per axis, and few distinct buckets."""
    e = torch.floor(torch.log2(size.to(torch.float64).clamp(min=1)))
    step = torch.pow(2.0, (e - 2).clamp(min=0))
    return (torch.ceil(size / step) * step).to(torch.int64)


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
    qw, qh = _bucket_size(bw), _bucket_size(bh)
    key = qw * 65536 + qh
    # per triangle: pixel index of the box corner and offset of its first pixel centre from vertex 0
    base = r0i * width + c0i
    ox = c0i.to(torch.float32) + 0.5 - xs[ids, 0]
    oy = r0i.to(torch.float32) + 0.5 - ys[ids, 0]
    t_ex1, t_ey1, t_ex2, t_ey2 = ex1[ids], ey1[ids], ex2[ids], ey2[ids]
    inv_area = 1.0 / area[ids]
    z0 = zs[ids, 0]
    dz1, dz2 = zs[ids, 1] - z0, zs[ids, 2] - z0

    cand_pix: list[torch.Tensor] = []
    cand_z: list[torch.Tensor] = []
    cand_tri: list[torch.Tensor] = []
    for k in torch.unique(key).tolist():
        sel = torch.nonzero(key == k).squeeze(1)
        sw, sh = k // 65536, k % 65536
        dy, dx = torch.meshgrid(torch.arange(sh, device=device), torch.arange(sw, device=device), indexing="ij")
        dx, dy = dx.reshape(1, -1), dy.reshape(1, -1)  # [1, S]
        offs = dy * width + dx
        dxf, dyf = dx.to(torch.float32), dy.to(torch.float32)
        per_chunk = max(1, max_candidates // (sw * sh))
        for start in range(0, sel.numel(), per_chunk):
            s_ = sel[start : start + per_chunk]  # [K] rows of the kept-triangle arrays
            # pixel-centre position relative to vertex 0 (small numbers: good float32 precision)
            rx = dxf + ox[s_, None]  # [K, S]
            ry = dyf + oy[s_, None]
            b1 = (rx * t_ey2[s_, None] - ry * t_ex2[s_, None]) * inv_area[s_, None]
            b2 = (t_ex1[s_, None] * ry - t_ey1[s_, None] * rx) * inv_area[s_, None]
            inside = (b1 >= -_INSIDE_EPS) & (b2 >= -_INSIDE_EPS) & (b1 + b2 <= 1.0 + _INSIDE_EPS)
            inside &= (dx < bw[s_, None]) & (dy < bh[s_, None])
            kk, ss = torch.nonzero(inside, as_tuple=True)
            ts = s_[kk]
            zin = z0[ts] + b1[kk, ss] * dz1[ts] + b2[kk, ss] * dz2[ts]
            pix = base[ts] + offs[0, ss]
            zbuf.scatter_reduce_(0, pix, zin, "amin", include_self=True)
            cand_pix.append(pix)
            cand_z.append(zin)
            cand_tri.append(ids[ts])

    pix = torch.cat(cand_pix)
    cand_pix.clear()
    z = torch.cat(cand_z)
    cand_z.clear()
    tid = torch.cat(cand_tri)
    cand_tri.clear()
    win = z == zbuf[pix]
    tri_buf.scatter_reduce_(0, pix[win], tid[win], "amax", include_self=True)
    del pix, z, tid, win

    bary = torch.zeros(num_pix, 3, dtype=torch.float32, device=device)
    covered = torch.nonzero(tri_buf >= 0).squeeze(1)
    for start in range(0, covered.numel(), max_candidates):
        cov = covered[start : start + max_candidates]
        t = tri_buf[cov]
        rx = (cov % width).to(torch.float32) + 0.5 - xs[t, 0]
        ry = torch.div(cov, width, rounding_mode="floor").to(torch.float32) + 0.5 - ys[t, 0]
        b1 = (rx * ey2[t] - ry * ex2[t]) / area[t]
        b2 = (ex1[t] * ry - ey1[t] * rx) / area[t]
        b = torch.stack([1.0 - b1 - b2, b1, b2], dim=-1).clamp(min=0.0)
        bary[cov] = b / b.sum(dim=-1, keepdim=True).clamp(min=1e-12)
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
