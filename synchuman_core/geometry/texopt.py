"""The official optimisation bake (``bake_texture(mode='opt')``, docs/ARCHITECTURE.md §8.5) in plain PyTorch.

Per step one observation is drawn (uniformly from all views for the first 93.1 % of the steps, then
only from the front/back views), the texture is rendered into it through the mesh's per-pixel UVs and
the loss ``L1(render[mask], observation[mask]) + λ_TV · TV_L1(texture)`` takes one Adam step
(β 0.5/0.9, learning rate cosine-annealed from 1e-2 to 3e-5).

Texture lookups are **mip-mapped** like nvdiffrast's ``dr.texture(tex, uv, uv_da)``: every pixel's UV
footprint (from the screen-space UV derivatives of its triangle) selects a level of detail, and the
pixel reads the two bracketing levels of an average-pooled pyramid of the texture (trilinear). A plain
bilinear lookup only touches the 2 × 2 texels under each pixel centre; where a view has fewer pixels on
a surface than the texture has texels, every other texel then gets no data term and the optimiser pulls
the touched 2 × 2 blocks towards their pixels alone: a regular grid of isolated 2 × 2 specks inside the
charts (the speckle of earlier versions). With footprint-matched lookups every texel under a pixel
shares its gradient.

Cost: the per-view UV/footprint rasterisation once (views × faces), then per step one view's pixels
plus the texture pyramid (texture size²), i.e. steps × (pixels of one view + texture²).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .raster import interpolate, rasterize
from .views import BakeView

__all__ = ["OptSchedule", "ViewSamples", "optimize_texture", "prepare_view_samples", "sample_mipmapped"]

logger = logging.getLogger(__name__)

StepFn = Callable[[int, int], None]


@dataclass
class OptSchedule:
    """Optimisation settings; defaults are the official values."""

    steps: int = 1000
    lr: float = 1e-2
    lr_end: float = 3e-5
    tv_weight: float = 0.01
    betas: tuple[float, float] = (0.5, 0.9)
    focus_from: float = 0.931  # steps >= round(focus_from * steps) draw only the focus views (official 931)
    focus_views: tuple[int, ...] = (0, 2)  # front and back stage-1 views
    seed: int = 0


@dataclass
class ViewSamples:
    """The masked pixels of one observation, ready for texture lookups (sorted by mip level)."""

    grid: torch.Tensor  # [1, 1, P, 2] uv * 2 - 1
    frac: torch.Tensor  # [P, 1] blend towards the next coarser level
    target: torch.Tensor  # [P, 3] uint8 observed colours
    levels: list[tuple[int, int, int]]  # (level, start, end) runs of pixels
    weight: float = 1.0


def _face_lod(screen: torch.Tensor, uvs: torch.Tensor, faces: torch.Tensor, size: int) -> torch.Tensor:
    """``[F]`` log2 of the texels covered by one pixel step (isotropic footprint, like nvdiffrast)."""
    s = screen[faces][..., :2]  # [F, 3, 2] pixels
    t = uvs[faces] * size  # [F, 3, 2] texels
    ds = torch.stack([s[:, 1] - s[:, 0], s[:, 2] - s[:, 0]], dim=-1)  # [F, 2, 2] columns = edges
    dt = torch.stack([t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]], dim=-1)
    det = ds[:, 0, 0] * ds[:, 1, 1] - ds[:, 0, 1] * ds[:, 1, 0]
    ok = det.abs() > 1e-12
    det = torch.where(ok, det, torch.ones_like(det))
    inv = torch.stack([torch.stack([ds[:, 1, 1], -ds[:, 0, 1]], -1), torch.stack([-ds[:, 1, 0], ds[:, 0, 0]], -1)], 1)
    jac = dt @ (inv / det[:, None, None])  # [F, 2, 2]: d(texel) / d(pixel)
    foot = torch.maximum(jac[:, :, 0].norm(dim=-1), jac[:, :, 1].norm(dim=-1))
    return torch.where(ok, torch.log2(foot.clamp(min=1e-8)), torch.zeros_like(foot))


def num_levels(size: int) -> int:
    return int(math.ceil(math.log2(max(size, 1)))) + 1


def prepare_view_samples(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    uvs: torch.Tensor,
    view: BakeView,
    texture_size: int,
    *,
    depth_tolerance: float = 0.01,
) -> ViewSamples | None:
    """Rasterise the mesh in ``view`` and keep the pixels that are both covered and inside its mask.

    Views that carry the depth they saw (renders of the Gaussians) also drop pixels where the mesh
    surface lies more than ``depth_tolerance`` (world units) from it: in creases (armpits, between the
    legs) a splat render shows the nearer limb's Gaussians where the mesh shows the surface behind.
    The official bake keeps them; they bleed the limb's colour into the crease.
    """
    h, w = view.height, view.width
    screen = view.camera.project(vertices, h, w)
    rast = rasterize(screen, faces, h, w)
    valid = rast.mask & view.mask.to(vertices.device)
    if view.depth is not None and depth_tolerance > 0:
        valid &= (rast.depth - view.depth.to(vertices.device)).abs() <= depth_tolerance
    if not bool(valid.any()):
        return None
    uv = interpolate(uvs, faces, rast)[valid]  # [P, 2]
    lod = _face_lod(screen, uvs, faces, texture_size)[rast.tri_id[valid]]
    lod = lod.clamp(0.0, num_levels(texture_size) - 1.0)
    level = lod.floor().long()
    order = torch.argsort(level, stable=True)
    level, lod, uv = level[order], lod[order], uv[order]
    target = view.image.to(vertices.device).permute(1, 2, 0)[valid][order]
    target = (target.clamp(0, 1) * 255.0).round().to(torch.uint8)
    counts = torch.bincount(level, minlength=num_levels(texture_size)).tolist()
    runs, start = [], 0
    for lvl, c in enumerate(counts):
        if c:
            runs.append((lvl, start, start + c))
            start += c
    return ViewSamples(
        grid=(uv * 2 - 1).view(1, 1, -1, 2).contiguous(),
        frac=(lod - level.to(lod.dtype))[:, None].contiguous(),
        target=target.contiguous(),
        levels=runs,
        weight=float(view.weight),
    )


def mip_pyramid(texture: torch.Tensor) -> list[torch.Tensor]:
    """``[1, C, T, T]`` → levels down to 1 × 1 (2 × 2 average pooling, differentiable)."""
    levels = [texture]
    while max(levels[-1].shape[-2:]) > 1:
        levels.append(F.avg_pool2d(levels[-1], kernel_size=2, stride=2, ceil_mode=True))
    return levels


def sample_mipmapped(pyramid: list[torch.Tensor], samples: ViewSamples) -> torch.Tensor:
    """Trilinear lookup of every pixel of ``samples`` → ``[P, C]``."""
    parts = []
    top = len(pyramid) - 1
    for lvl, s, e in samples.levels:
        g = samples.grid[:, :, s:e]
        a = F.grid_sample(pyramid[lvl], g, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0].T
        if lvl < top:
            b = F.grid_sample(pyramid[lvl + 1], g, mode="bilinear", padding_mode="border", align_corners=False)
            f = samples.frac[s:e]
            a = a * (1 - f) + b[0, :, 0].T * f
        parts.append(a)
    return torch.cat(parts, dim=0)


def coverage(samples: list[ViewSamples], texture_size: int, device) -> torch.Tensor:
    """``[T, T]`` bool: texels inside the footprint of at least one observed pixel."""
    n = num_levels(texture_size)
    maps = [torch.zeros(math.ceil(texture_size / 2**lv), math.ceil(texture_size / 2**lv), dtype=torch.bool,
                        device=device) for lv in range(n)]
    for smp in samples:
        uv = (smp.grid[0, 0] + 1) * 0.5
        for lvl, s, e in smp.levels:
            # the two bracketing levels both contribute; marking the finer one's texels is enough for the
            # bilinear support, which spans the 2 x 2 texels around the sample point
            size = maps[lvl].shape[0]
            p = uv[s:e] * size - 0.5
            c0, r0 = p[:, 0].floor().long(), p[:, 1].floor().long()
            for dr in (0, 1):
                for dc in (0, 1):
                    maps[lvl][(r0 + dr).clamp(0, size - 1), (c0 + dc).clamp(0, size - 1)] = True
    out = maps[-1]
    for lvl in range(n - 2, -1, -1):
        size = maps[lvl].shape[0]
        up = out.repeat_interleave(2, 0).repeat_interleave(2, 1)[:size, :size]
        out = maps[lvl] | up
    return out


def _tv_l1(tex: torch.Tensor) -> torch.Tensor:
    """Official ``tv_loss``: mean absolute difference of vertical plus horizontal neighbours."""
    return (tex[..., 1:, :] - tex[..., :-1, :]).abs().mean() + (tex[..., :, 1:] - tex[..., :, :-1]).abs().mean()


class _Adam:
    """Adam for one tensor (``torch.optim.Adam`` imports ``torch._dynamo`` on first use: seconds on CPU)."""

    def __init__(self, param: torch.Tensor, betas: tuple[float, float], eps: float = 1e-8) -> None:
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
        denom = (self.v / (1 - self.b2**self.t)).sqrt_().add_(self.eps)
        self.param.addcdiv_(self.m, denom, value=-lr / (1 - self.b1**self.t))


def view_schedule(num_views: int, sched: OptSchedule) -> list[int]:
    """The observation drawn at every step (seeded): uniform over all views, then only the focus views."""
    gen = torch.Generator().manual_seed(int(sched.seed))
    focus = [i for i in sched.focus_views if 0 <= i < num_views] or list(range(num_views))
    switch = int(round(sched.focus_from * sched.steps))
    out = []
    for step in range(sched.steps):
        if step < switch:
            out.append(int(torch.randint(0, num_views, (1,), generator=gen)))
        else:
            out.append(focus[int(torch.randint(0, len(focus), (1,), generator=gen))])
    return out


def optimize_texture(
    init: torch.Tensor,
    samples: list[ViewSamples | None],
    sched: OptSchedule,
    *,
    on_step: StepFn | None = None,
) -> torch.Tensor:
    """Run the official optimisation from ``init [T, T, 3]`` over the prepared views (``None`` entries are
    views that see nothing; when drawn, only the TV term acts, so the schedule keeps the official
    indices). Returns ``[T, T, 3]`` in [0, 1]. Safe under ``torch.inference_mode()``."""
    steps = sched.steps
    with torch.inference_mode(False), torch.enable_grad():
        param = init.detach().clone().permute(2, 0, 1)[None].contiguous().requires_grad_(True)  # [1, 3, T, T]
        # clones made here are normal tensors even when the caller runs under inference mode
        samples = [
            None if s is None else ViewSamples(s.grid.clone(), s.frac.clone(), s.target, s.levels, s.weight)
            for s in samples
        ]
        targets = [None if s is None else s.target.to(torch.float32) / 255.0 for s in samples]
        adam = _Adam(param, sched.betas)
        lr = sched.lr
        last = float("nan")
        for step, idx in enumerate(view_schedule(len(samples), sched)):
            param.grad = None
            loss = sched.tv_weight * _tv_l1(param) if sched.tv_weight > 0 else param.sum() * 0.0
            smp = samples[idx]
            if smp is not None:
                render = sample_mipmapped(mip_pyramid(param), smp)
                loss = loss + (render - targets[idx]).abs().mean()
            loss.backward()
            adam.step(lr)
            lr = sched.lr_end + 0.5 * (sched.lr - sched.lr_end) * (1 + math.cos(math.pi * step / max(steps, 1)))
            last = float(loss.detach())
            if on_step is not None:
                on_step(step + 1, steps)
        out = param.detach()[0].permute(1, 2, 0).clamp(0.0, 1.0).clone()
    logger.info("texture optimisation: %d steps over %d views, final loss %.4f", steps, len(samples), last)
    return out
