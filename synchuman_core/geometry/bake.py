"""Texture and vertex-color baking from the generated views, in plain PyTorch (CPU or GPU).

``fast`` mode (projection): every texel inside a UV chart is lifted to its surface point and normal
(UV-space rasterisation), projected into each view, tested against that view's z-buffer (our rasteriser)
and coloured by the views that see it, weighted by ``max(n·d, 0)^power`` (d = direction to the camera),
the view's weight and the bilinearly sampled mask. Texels no view sees get colors diffused over the
mesh surface; texels outside the charts get a pull-push fill so bilinear lookups never meet black.

``opt`` mode: the fast result refined like the official bake (Adam on the texture, L1 between rendered
and observed views on masked pixels + TV, cosine learning-rate decay), only with the five generated
views (the official also renders 95 Gaussian-splat views, which the export does not have).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .mesh import mesh_edges, welded_vertex_normals
from .raster import Rasterization, interpolate, rasterize
from .views import BakeView

__all__ = [
    "BakeSettings",
    "bake_texture",
    "bake_vertex_colors",
    "diffuse_vertex_colors",
    "project_views",
    "pull_push_fill",
    "refine_texture",
    "uv_rasterize",
]

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]


@dataclass
class BakeSettings:
    """Texture bake settings (official: 1024² texture, ``mode='opt'``, 1000 Adam steps, lr 1e-2, TV 0.01)."""

    texture_size: int = 1024
    mode: Literal["fast", "opt"] = "fast"
    weight_power: float = 2.0  # sharpness of the preference for views facing the surface
    min_cos: float = 0.05  # surface/view angles with cos below this do not contribute
    depth_tolerance_px: float = 3.0  # visibility slack, in pixels of the view
    opt_steps: int = 200
    opt_lr: float = 1e-2
    opt_tv_weight: float = 0.01

    def validate(self) -> None:
        if not 512 <= self.texture_size <= 4096:
            raise ConfigError(f"texture_size must be between 512 and 4096, got {self.texture_size}")
        if self.mode not in ("fast", "opt"):
            raise ConfigError(f"bake mode must be 'fast' or 'opt', got {self.mode!r}")
        if self.weight_power < 0 or not 0 <= self.min_cos < 1 or self.depth_tolerance_px < 0:
            raise ConfigError("weight_power >= 0, 0 <= min_cos < 1 and depth_tolerance_px >= 0 are required")
        if self.opt_steps < 0 or self.opt_lr <= 0 or self.opt_tv_weight < 0:
            raise ConfigError("opt_steps >= 0, opt_lr > 0 and opt_tv_weight >= 0 are required")


# ----------------------------------------------------------------------------------------------------------
# texture space


def uv_rasterize(faces: torch.Tensor, uvs: torch.Tensor, size: int) -> Rasterization:
    """Rasterise the UV layout into a ``size²`` texel grid (texel ``(r, c)`` centre = uv ``((c+.5)/T, (r+.5)/T)``)."""
    screen = torch.cat([uvs * size, torch.zeros_like(uvs[:, :1])], dim=1)
    return rasterize(screen, faces, size, size)


def pull_push_fill(image: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Fill unknown pixels of ``image [H, W, C]`` from the known ones (``known [H, W]`` bool).

    Pull: build a pyramid of premultiplied averages; push: fill each level's holes with the upsampled
    coarser level. Smooth, O(HW), no seams at chart borders. Known pixels are returned unchanged.
    """
    if bool(known.all()) or not bool(known.any()):
        return image
    k = known[None, None].to(image.dtype)  # [1, 1, H, W]
    level0 = torch.cat([image.permute(2, 0, 1)[None] * k, k], dim=1)  # [1, C+1, H, W] premultiplied
    pyramid = [F.avg_pool2d(level0, kernel_size=2, stride=2, ceil_mode=True)]
    del level0, k
    while min(pyramid[-1].shape[-2:]) > 1:
        pyramid.append(F.avg_pool2d(pyramid[-1], kernel_size=2, stride=2, ceil_mode=True))
    filled = pyramid[-1][:, :-1] / pyramid[-1][:, -1:].clamp(min=1e-12)
    for level in reversed(pyramid[:-1]):
        up = F.interpolate(filled, size=level.shape[-2:], mode="bilinear", align_corners=False)
        w = level[:, -1:]
        color = level[:, :-1] / w.clamp(min=1e-12)
        wc = w.clamp(max=1.0)
        filled = torch.where(w > 0, color * wc + up * (1 - wc), up)
    # finest level: known pixels keep their value, the rest take the upsampled fill
    up = F.interpolate(filled, size=image.shape[:2], mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
    out = image.clone()
    out[~known] = up[~known]
    return out


def diffuse_vertex_colors(
    colors: torch.Tensor, known: torch.Tensor, edges: torch.Tensor, *, smooth_iters: int = 20
) -> torch.Tensor:
    """Give unknown vertices colors from known neighbours (breadth-first front over ``edges [E, 2]``),
    then relax the filled ones with ``smooth_iters`` Jacobi averaging steps. Components without any known
    vertex get the mean known color (grey if nothing is known)."""
    col = colors.clone()
    known = known.clone()
    unknown0 = ~known
    if not bool(unknown0.any()):
        return col
    if not bool(known.any()):
        return torch.full_like(col, 0.5)
    a, b = edges[:, 0], edges[:, 1]
    n = col.shape[0]
    for _ in range(n):
        if bool(known.all()):
            break
        kf = known.to(col.dtype)[:, None]
        s = torch.zeros_like(col).index_add_(0, a, col[b] * kf[b]).index_add_(0, b, col[a] * kf[a])
        c = torch.zeros(n, 1, dtype=col.dtype, device=col.device).index_add_(0, a, kf[b]).index_add_(0, b, kf[a])
        newly = (~known) & (c[:, 0] > 0)
        if not bool(newly.any()):
            break
        col[newly] = s[newly] / c[newly]
        known |= newly
    if not bool(known.all()):
        col[~known] = col[known].mean(dim=0)
    deg = torch.zeros(n, 1, dtype=col.dtype, device=col.device)
    deg.index_add_(0, a, torch.ones_like(a, dtype=col.dtype)[:, None]).index_add_(
        0, b, torch.ones_like(b, dtype=col.dtype)[:, None]
    )
    for _ in range(smooth_iters):
        s = torch.zeros_like(col).index_add_(0, a, col[b]).index_add_(0, b, col[a])
        avg = s / deg.clamp(min=1)
        col = torch.where(unknown0[:, None] & (deg > 0), avg, col)
    return col


def _welded_edges(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertices that share a position (UV seams) become one node: returns (node of vertex [V], edges)."""
    _, node = torch.unique(vertices, dim=0, return_inverse=True)
    return node, mesh_edges(node[faces])


# ----------------------------------------------------------------------------------------------------------
# projection


def _border_weight(col: torch.Tensor, row: torch.Tensor, h: int, w: int, feather: float) -> torch.Tensor:
    """1 inside the image, fading linearly to 0 within ``feather`` pixels of its border."""
    if feather <= 0:
        return torch.ones_like(col)
    d = torch.minimum(torch.minimum(col, w - col), torch.minimum(row, h - row))
    return (d / feather).clamp(0.0, 1.0)


@dataclass
class _PreparedView:
    """A view with its z-buffer and premultiplied color+mask stack, ready for lookups."""

    view: BakeView
    stack: torch.Tensor  # [1, 4, H, W]: color * valid, valid
    depth: torch.Tensor  # [H, W] z-buffer of the mesh seen by this view
    tol: float  # visibility slack in world units


def _prepare_views(
    vertices: torch.Tensor, faces: torch.Tensor, views: list[BakeView], settings: BakeSettings
) -> list[_PreparedView]:
    out = []
    for view in views:
        h, w, cam = view.height, view.width, view.camera
        rast = rasterize(cam.project(vertices, h, w), faces, h, w)
        valid = (view.mask.to(vertices.device) & rast.mask).to(torch.float32)  # [H, W]
        stack = torch.cat([view.image.to(vertices.device) * valid, valid[None]], dim=0)[None]
        tol = settings.depth_tolerance_px * cam.pixel_size(h, w)
        out.append(_PreparedView(view=view, stack=stack, depth=rast.depth, tol=tol))
    return out


def _accumulate(
    points: torch.Tensor, normals: torch.Tensor, prepared: list[_PreparedView], settings: BakeSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    n = points.shape[0]
    csum = torch.zeros(n, 3, dtype=torch.float32, device=points.device)
    wsum = torch.zeros(n, dtype=torch.float32, device=points.device)
    for pv in prepared:
        view, cam = pv.view, pv.view.camera
        h, w = view.height, view.width
        p = cam.project(points, h, w)  # [N, 3] (col, row, depth)
        col, row, depth = p[:, 0], p[:, 1], p[:, 2]
        inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        ci = col.floor().long().clamp(0, w - 1)
        ri = row.floor().long().clamp(0, h - 1)
        visible = inside & (depth <= pv.depth[ri, ci] + pv.tol)
        # bilinear lookup of premultiplied color and mask
        grid = torch.stack([col / w * 2 - 1, row / h * 2 - 1], dim=-1).view(1, 1, n, 2)
        sampled = F.grid_sample(pv.stack, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, :, 0]
        alpha = sampled[3]  # [N]
        cos = (normals @ cam.view_direction(points.device)).clamp(min=0.0)
        facing = torch.where(cos > settings.min_cos, cos.pow(settings.weight_power), torch.zeros_like(cos))
        wgt = facing * visible * view.weight * _border_weight(col, row, h, w, view.feather_px)  # [N]
        # sampled color is premultiplied by alpha: color * alpha * wgt without a division
        csum += sampled[:3].T * wgt[:, None]
        wsum += alpha * wgt
    return csum, wsum


_CHUNK = 1 << 20  # surface points per projection batch (bounds memory at 4096² textures)


def project_views(
    points: torch.Tensor,
    normals: torch.Tensor,
    vertices: torch.Tensor,
    faces: torch.Tensor,
    views: list[BakeView],
    settings: BakeSettings,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted colors of surface ``points [N, 3]`` with unit ``normals [N, 3]`` seen in ``views``.

    Returns ``(color_sum [N, 3], weight_sum [N])``; the color is ``color_sum / weight_sum`` where the
    weight is positive. Each view's z-buffer comes from rasterising the mesh (``vertices``, ``faces``).
    """
    prepared = _prepare_views(vertices, faces, views, settings)
    parts = [
        _accumulate(points[i : i + _CHUNK], normals[i : i + _CHUNK], prepared, settings)
        for i in range(0, points.shape[0], _CHUNK)
    ]
    if not parts:
        return points.new_zeros(0, 3), points.new_zeros(0)
    return torch.cat([c for c, _ in parts]), torch.cat([w for _, w in parts])


def bake_vertex_colors(
    vertices: torch.Tensor, faces: torch.Tensor, views: list[BakeView], settings: BakeSettings | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-vertex colors ``[V, 3]`` from the views (the fast path without UVs or a texture)."""
    s = settings or BakeSettings()
    vn = welded_vertex_normals(vertices, faces)
    csum, wsum = project_views(vertices, vn, vertices, faces, views, s)
    seen = wsum > 1e-8
    colors = torch.zeros_like(vertices)
    colors[seen] = csum[seen] / wsum[seen, None]
    node, edges = _welded_edges(vertices, faces)
    colors = diffuse_vertex_colors(colors, seen, edges)
    stats = {"vertex_coverage": float(seen.float().mean()) if seen.numel() else 0.0}
    return colors.clamp(0.0, 1.0), stats


# ----------------------------------------------------------------------------------------------------------
# texture


def bake_texture(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    uvs: torch.Tensor,
    views: list[BakeView],
    settings: BakeSettings | None = None,
    *,
    vertex_colors: torch.Tensor | None = None,
    progress: ProgressFn | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Bake a ``[T, T, 3]`` base-color texture for a UV-mapped mesh.

    With no ``views``, ``vertex_colors [V, 3]`` are interpolated into the texture instead. Runs on the
    device of ``vertices``; returns the texture there plus stats (``texel_coverage`` = share of chart
    texels seen by at least one view).
    """
    s = settings or BakeSettings()
    s.validate()
    if not views and vertex_colors is None:
        raise ConfigError("texture baking needs views or vertex colors; pass the generated color views")
    t = s.texture_size
    dev = vertices.device
    rast = uv_rasterize(faces, uvs.to(dev), t)
    inside = rast.mask  # [T, T]
    idx = torch.nonzero(inside.view(-1)).squeeze(1)
    tri = rast.tri_id.view(-1)[idx]
    bary = rast.bary.view(-1, 3)[idx]
    del rast  # [T, T] buffers: 400 MB at 4096²
    texture = torch.zeros(t * t, 3, dtype=torch.float32, device=dev)
    stats: dict[str, float] = {"chart_texels": float(idx.numel()), "texture_size": float(t)}

    node, edges = _welded_edges(vertices, faces)
    if views:
        vn = welded_vertex_normals(vertices, faces)
        prepared = _prepare_views(vertices, faces, views, s)
        color = torch.zeros(idx.numel(), 3, dtype=torch.float32, device=dev)
        seen = torch.zeros(idx.numel(), dtype=torch.bool, device=dev)
        for i in range(0, idx.numel(), _CHUNK):
            tc, bc = tri[i : i + _CHUNK], bary[i : i + _CHUNK, :, None]
            pos = (bc * vertices[faces[tc]]).sum(dim=1)  # [n, 3]
            nrm = F.normalize((bc * vn[faces[tc]]).sum(dim=1), dim=-1)
            csum, wsum = _accumulate(pos, nrm, prepared, s)
            ok = wsum > 1e-8
            color[i : i + _CHUNK][ok] = csum[ok] / wsum[ok, None]
            seen[i : i + _CHUNK] = ok
        stats["texel_coverage"] = float(seen.float().mean()) if seen.numel() else 0.0
        if not bool(seen.all()):
            # splat seen texels onto welded vertices, diffuse over the surface, read back unseen texels
            n_nodes = int(node.max()) + 1
            vsum = torch.zeros(n_nodes, 3, dtype=torch.float32, device=dev)
            vw = torch.zeros(n_nodes, dtype=torch.float32, device=dev)
            for k in range(3):
                corner_k = node[faces[tri, k]]
                wk = bary[:, k] * seen
                vsum.index_add_(0, corner_k, color * wk[:, None])
                vw.index_add_(0, corner_k, wk)
            vknown = vw > 1e-6
            vcol = torch.zeros_like(vsum)
            vcol[vknown] = vsum[vknown] / vw[vknown, None]
            vcol = diffuse_vertex_colors(vcol, vknown, edges)
            miss = torch.nonzero(~seen).squeeze(1)
            corner = node[faces[tri[miss]]]  # [M, 3]
            color[miss] = (bary[miss, :, None] * vcol[corner]).sum(dim=1)
    else:
        vc = vertex_colors.to(dev, torch.float32)
        color = (bary[:, :, None] * vc[faces[tri]]).sum(dim=1)
        stats["texel_coverage"] = 1.0
    texture[idx] = color
    del color, tri, bary, idx
    texture = texture.view(t, t, 3)
    if progress is not None:
        progress(1, 2)

    texture = pull_push_fill(texture, inside)
    if s.mode == "opt" and views and s.opt_steps > 0:
        # gutters are filled first so the TV term does not drag chart borders towards black
        texture = refine_texture(texture, vertices, faces, uvs, views, s, progress=progress)
        texture = pull_push_fill(texture, inside)
    if progress is not None:
        progress(2, 2)
    return texture.clamp_(0.0, 1.0), stats


def _tv_l1(tex: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation (mean absolute neighbour difference) of ``[1, C, H, W]``."""
    return (tex[..., 1:, :] - tex[..., :-1, :]).abs().mean() + (tex[..., :, 1:] - tex[..., :, :-1]).abs().mean()


class _Adam:
    """Adam for one tensor (``torch.optim.Adam`` imports ``torch._dynamo`` on first use: seconds on CPU)."""

    def __init__(self, param: torch.Tensor, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.param, self.b1, self.b2, self.eps = param, betas[0], betas[1], eps
        self.m = torch.zeros_like(param)
        self.v = torch.zeros_like(param)
        self.t = 0

    @torch.no_grad()
    def step(self, lr: float) -> None:
        g = self.param.grad
        self.t += 1
        self.m.mul_(self.b1).add_(g, alpha=1 - self.b1)
        self.v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
        bc1 = 1 - self.b1**self.t
        bc2 = 1 - self.b2**self.t
        denom = (self.v / bc2).sqrt_().add_(self.eps)
        self.param.addcdiv_(self.m, denom, value=-lr / bc1)


def refine_texture(
    texture: torch.Tensor,
    vertices: torch.Tensor,
    faces: torch.Tensor,
    uvs: torch.Tensor,
    views: list[BakeView],
    settings: BakeSettings,
    *,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Optimise ``texture [T, T, 3]`` so renders match the views: L1 on masked pixels + TV, Adam(β 0.5, 0.9),
    cosine learning rate from ``opt_lr`` down to ``opt_lr * 0.003`` (official 1e-2 → 3e-5).

    Safe under ``torch.inference_mode()`` (ComfyUI runs nodes in it): the step runs with inference mode
    off and gradients on, on clones made there.
    """
    with torch.inference_mode(False), torch.enable_grad():
        v = vertices.detach().clone()
        f = faces.detach().clone()
        uv = uvs.detach().clone().to(v.device)
        targets: list[tuple[torch.Tensor, torch.Tensor, float]] = []
        for view in views:
            h, w = view.height, view.width
            rast = rasterize(view.camera.project(v, h, w), f, h, w)
            valid = rast.mask & view.mask.to(v.device)
            if not bool(valid.any()):
                continue
            pix_uv = interpolate(uv, f, rast)[valid]  # [P, 2]
            grid = (pix_uv * 2 - 1).view(1, 1, -1, 2)
            target = view.image.detach().clone().to(v.device).permute(1, 2, 0)[valid]  # [P, 3]
            targets.append((grid, target, float(view.weight)))
        if not targets:
            return texture
        total_w = sum(wt for _, _, wt in targets)
        # one lookup for all views: per-pixel weights make each view's term a mean, weighted by the view
        grid = torch.cat([g for g, _, _ in targets], dim=2)  # [1, 1, P, 2]
        target = torch.cat([tg for _, tg, _ in targets], dim=0)  # [P, 3]
        pix_w = torch.cat(
            [torch.full((tg.shape[0],), wt / total_w / tg.shape[0], device=v.device) for _, tg, wt in targets]
        )[:, None]
        param = texture.detach().clone().permute(2, 0, 1)[None].contiguous().requires_grad_(True)  # [1, 3, T, T]
        adam = _Adam(param, betas=(0.5, 0.9))
        steps = settings.opt_steps
        lr_min = settings.opt_lr * 0.003
        last_loss = float("nan")
        for step in range(steps):
            lr = lr_min + 0.5 * (settings.opt_lr - lr_min) * (1 + math.cos(math.pi * step / max(steps, 1)))
            param.grad = None
            render = F.grid_sample(param, grid, mode="bilinear", padding_mode="border", align_corners=False)
            loss = settings.opt_tv_weight * _tv_l1(param) + ((render[0, :, 0].T - target).abs() * pix_w).sum()
            loss.backward()
            adam.step(lr)
            last_loss = float(loss.detach())
            if progress is not None and (step + 1) % 25 == 0:
                progress(step + 1, steps)
        out = param.detach()[0].permute(1, 2, 0).clamp(0.0, 1.0)
    logger.info("texture refinement: %d steps, final loss %.4f", steps, last_loss)
    return out.clone()
