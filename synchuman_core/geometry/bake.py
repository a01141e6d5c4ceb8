"""Texture and vertex-color baking from the generated views, in plain PyTorch (CPU or GPU).

``fast`` mode (projection): every texel inside a UV chart is lifted to its surface point and normal
(UV-space rasterisation), projected into each view, tested against that view's z-buffer (our rasteriser)
and coloured by the views that see it, weighted by ``max(n·d, 0)^power`` (d = direction to the camera),
the view's weight and the bilinearly sampled mask. Texels no view sees get colors diffused over the
mesh surface; texels outside the charts get a pull-push fill so bilinear lookups never meet black.

``opt`` mode: the official optimisation (:mod:`.texopt`): one observation per step, mip-mapped
lookups, L1 + 0.01 TV, Adam, cosine learning rate, from a zero texture (official) or the fast result.
With the official observation set (:mod:`.observations`: the five generated views plus 95 renders of
the decoded Gaussians) this is the official ``bake_texture(mode='opt')``. Chart texels that no
observation covers take colours diffused over the surface (the official leaves them at the zero
initialisation); texels outside the charts are inpainted with OpenCV's TELEA (radius 3), as the
official does, or pull-push filled (``inpaint='pull_push'``, no OpenCV).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .mesh import mesh_edges, welded_vertex_normals
from .raster import Rasterization, rasterize
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

ProgressFn = Callable[[str, int, int, str], None]  # (phase, done, total, unit)


@dataclass
class BakeSettings:
    """Texture bake settings (official: 1024² texture, ``mode='opt'``, 1000 Adam steps, lr 1e-2, TV 0.01)."""

    texture_size: int = 1024
    mode: Literal["fast", "opt"] = "fast"
    weight_power: float = 2.0  # sharpness of the preference for views facing the surface
    min_cos: float = 0.05  # surface/view angles with cos below this do not contribute
    depth_tolerance_px: float = 3.0  # visibility slack, in pixels of the view
    opt_steps: int = 1000
    opt_lr: float = 1e-2
    opt_lr_end: float = 3e-5
    opt_tv_weight: float = 0.01
    opt_focus_from: float = 0.931  # fraction of the steps after which only the front/back views are drawn
    opt_init: Literal["zeros", "fast"] = "zeros"  # official: zeros
    inpaint: Literal["telea", "pull_push"] = "telea"  # fill of the texels outside the UV charts
    seed: int = 0  # the view schedule of the optimisation

    def validate(self) -> None:
        if not 64 <= self.texture_size <= 4096:
            raise ConfigError(f"texture_size must be between 64 and 4096, got {self.texture_size}")
        if self.mode not in ("fast", "opt"):
            raise ConfigError(f"bake mode must be 'fast' or 'opt', got {self.mode!r}")
        if self.weight_power < 0 or not 0 <= self.min_cos < 1 or self.depth_tolerance_px < 0:
            raise ConfigError("weight_power >= 0, 0 <= min_cos < 1 and depth_tolerance_px >= 0 are required")
        if self.opt_steps < 0 or self.opt_lr <= 0 or self.opt_tv_weight < 0 or not 0 < self.opt_lr_end <= self.opt_lr:
            raise ConfigError("opt_steps >= 0, opt_lr > 0, 0 < opt_lr_end <= opt_lr and opt_tv_weight >= 0 are required")
        if not 0.0 <= self.opt_focus_from <= 1.0:
            raise ConfigError(f"opt_focus_from must be in [0, 1], got {self.opt_focus_from}")
        if self.opt_init not in ("zeros", "fast") or self.inpaint not in ("telea", "pull_push"):
            raise ConfigError("opt_init must be 'zeros' or 'fast' and inpaint 'telea' or 'pull_push'")


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
        cos = (normals * cam.directions_to_camera(points)).sum(dim=-1).clamp(min=0.0)
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


def fill_unseen_texels(
    color: torch.Tensor,
    seen: torch.Tensor,
    tri: torch.Tensor,
    bary: torch.Tensor,
    vertices: torch.Tensor,
    faces: torch.Tensor,
) -> torch.Tensor:
    """Chart texels (``color [N, 3]``, ``seen [N]``, their triangle ``tri [N]`` and barycentrics
    ``bary [N, 3]``) that no view saw get colours diffused over the mesh surface from the seen ones:
    seen texels are splatted onto the (welded) vertices, the vertex colours diffused along the edges and
    read back at the unseen texels. Seen texels are returned unchanged."""
    if bool(seen.all()):
        return color
    node, edges = _welded_edges(vertices, faces)
    dev = color.device
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
    out = color.clone()
    miss = torch.nonzero(~seen).squeeze(1)
    out[miss] = (bary[miss, :, None] * vcol[node[faces[tri[miss]]]]).sum(dim=1)
    return out


def inpaint_outside_charts(texture: torch.Tensor, inside: torch.Tensor, method: str = "telea") -> torch.Tensor:
    """Fill texels outside the UV charts so bilinear / mip-mapped lookups at chart borders never meet
    black. ``telea``: OpenCV ``cv2.inpaint(..., 3, cv2.INPAINT_TELEA)`` on the 8-bit texture (official);
    ``pull_push``: :func:`pull_push_fill` in float."""
    if method == "pull_push" or bool(inside.all()) or not bool(inside.any()):
        return pull_push_fill(texture, inside)
    import cv2
    import numpy as np

    img = (texture.detach().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    hole = (~inside).cpu().numpy().astype(np.uint8)
    filled = cv2.inpaint(np.ascontiguousarray(img), hole, 3, cv2.INPAINT_TELEA)
    out = torch.from_numpy(filled).to(texture.device, torch.float32) / 255.0
    return torch.where(inside[..., None], texture, out)


def bake_texture(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    uvs: torch.Tensor,
    views: list[BakeView],
    settings: BakeSettings | None = None,
    *,
    vertex_colors: torch.Tensor | None = None,
    focus_views: tuple[int, ...] = (0, 2),
    progress: ProgressFn | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Bake a ``[T, T, 3]`` base-color texture for a UV-mapped mesh.

    ``fast``: projection of ``views`` (see the module docstring). ``opt``: the official optimisation
    over ``views`` (index order = the schedule's; ``focus_views`` are drawn alone at the end, official
    front = 0 and back = 2). With no ``views``, ``vertex_colors [V, 3]`` are interpolated into the texture.
    Runs on the device of ``vertices``; returns the texture there plus stats (``texel_coverage`` = share
    of chart texels seen by at least one view). ``progress(phase, done, total, unit)`` reports the work.
    """
    s = settings or BakeSettings()
    s.validate()
    if not views and vertex_colors is None:
        raise ConfigError("texture baking needs views or vertex colors; pass the generated color views")
    report = progress or (lambda phase, done, total, unit: None)
    t = s.texture_size
    dev = vertices.device
    rast = uv_rasterize(faces, uvs.to(dev), t)
    inside = rast.mask  # [T, T]
    idx = torch.nonzero(inside.view(-1)).squeeze(1)
    tri = rast.tri_id.view(-1)[idx]
    bary = rast.bary.view(-1, 3)[idx]
    del rast  # [T, T] buffers: 400 MB at 4096²
    stats: dict[str, float] = {"chart_texels": float(idx.numel()), "texture_size": float(t), "views": float(len(views))}
    use_opt = s.mode == "opt" and bool(views) and s.opt_steps > 0

    color = torch.zeros(idx.numel(), 3, dtype=torch.float32, device=dev)
    if not views:
        vc = vertex_colors.to(dev, torch.float32)
        color = (bary[:, :, None] * vc[faces[tri]]).sum(dim=1)
        stats["texel_coverage"] = 1.0
    elif not use_opt or s.opt_init == "fast":
        vn = welded_vertex_normals(vertices, faces)
        prepared = _prepare_views(vertices, faces, views, s)
        seen = torch.zeros(idx.numel(), dtype=torch.bool, device=dev)
        for i in range(0, idx.numel(), _CHUNK):
            tc, bc = tri[i : i + _CHUNK], bary[i : i + _CHUNK, :, None]
            pos = (bc * vertices[faces[tc]]).sum(dim=1)  # [n, 3]
            nrm = F.normalize((bc * vn[faces[tc]]).sum(dim=1), dim=-1)
            csum, wsum = _accumulate(pos, nrm, prepared, s)
            ok = wsum > 1e-8
            color[i : i + _CHUNK][ok] = csum[ok] / wsum[ok, None]
            seen[i : i + _CHUNK] = ok
            report("bake: project", min(i + _CHUNK, idx.numel()), idx.numel(), "texel")
        del prepared
        stats["texel_coverage"] = float(seen.float().mean()) if seen.numel() else 0.0
        color = fill_unseen_texels(color, seen, tri, bary, vertices, faces)
    texture = torch.zeros(t * t, 3, dtype=torch.float32, device=dev)
    texture[idx] = color
    texture = texture.view(t, t, 3)

    if use_opt:
        from .texopt import OptSchedule, coverage, optimize_texture, prepare_view_samples

        if s.opt_init == "fast":
            texture = pull_push_fill(texture, inside)  # no black gutters for the TV term
        samples = []
        uv_dev = uvs.to(dev)
        for i, view in enumerate(views):
            samples.append(prepare_view_samples(vertices, faces, uv_dev, view, t))
            report("bake: rasterise views", i + 1, len(views), "view")
        sched = OptSchedule(
            steps=s.opt_steps, lr=s.opt_lr, lr_end=s.opt_lr_end, tv_weight=s.opt_tv_weight,
            focus_from=s.opt_focus_from, focus_views=focus_views, seed=s.seed,
        )
        texture = optimize_texture(
            texture, samples, sched, on_step=lambda d, n: report("bake: optimise", d, n, "step")
        )
        covered = coverage([smp for smp in samples if smp is not None], t, dev).view(-1)[idx]
        del samples
        stats["texel_coverage"] = float(covered.float().mean()) if covered.numel() else 0.0
        flat = texture.reshape(-1, 3)
        flat[idx] = fill_unseen_texels(flat[idx], covered, tri, bary, vertices, faces)
    del tri, bary, idx, color
    texture = inpaint_outside_charts(texture, inside, s.inpaint if use_opt else "pull_push")
    return texture.clamp_(0.0, 1.0), stats


def refine_texture(
    texture: torch.Tensor,
    vertices: torch.Tensor,
    faces: torch.Tensor,
    uvs: torch.Tensor,
    views: list[BakeView],
    settings: BakeSettings,
    *,
    focus_views: tuple[int, ...] = (0, 2),
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Optimise an existing ``texture [T, T, 3]`` against ``views`` with the official schedule of
    ``settings`` (see :mod:`.texopt`). Safe under ``torch.inference_mode()``."""
    from .texopt import OptSchedule, optimize_texture, prepare_view_samples

    t = texture.shape[0]
    samples = [prepare_view_samples(vertices, faces, uvs.to(vertices.device), v, t) for v in views]
    sched = OptSchedule(
        steps=settings.opt_steps, lr=settings.opt_lr, lr_end=settings.opt_lr_end,
        tv_weight=settings.opt_tv_weight, focus_from=settings.opt_focus_from, focus_views=focus_views,
        seed=settings.seed,
    )
    on_step = None if progress is None else (lambda d, n: progress("bake: optimise", d, n, "step"))
    return optimize_texture(texture, samples, sched, on_step=on_step)
