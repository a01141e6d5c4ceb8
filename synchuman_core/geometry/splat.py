"""A 3D Gaussian splatting rasteriser in plain PyTorch (forward only; CPU or GPU).

The official export renders the decoded Gaussians with ``diff_gaussian_rasterization`` from the
mip-splatting fork (``kernel_size 0.1``). This module follows the same forward pass:

1. project the means; cull Gaussians with camera depth <= 0.2 (perspective cameras);
2. 2D covariance ``J W Σ Wᵀ Jᵀ`` (``Σ = R S Sᵀ Rᵀ``; ``x/z``, ``y/z`` clamped to 1.3 × the half field of
   view for the Jacobian), plus the mip-splatting 2D filter: ``kernel_size`` added to the diagonal and
   the opacity multiplied by ``sqrt(max(2.5e-5, det(Σ2D) / det(Σ2D + k·I)))``;
3. radius ``ceil(3 sqrt(λ_max))``: every Gaussian is binned into the pixels of its 3σ box (the 3DGS
   kernels bin into 16 × 16 tiles and test every pixel of a tile; on a CPU the per-pixel lists are
   far cheaper for the small Gaussians of a decoded human, with the same result);
4. per pixel, depth-sorted front-to-back alpha compositing: ``α = min(0.99, o · exp(-½ dᵀ Σ⁻¹ d))``,
   skipped below 1/255, the pixel stops once its transmittance would drop below 1e-4;
   ``C = Σ c α T + T · bg``.

Colours are SH degree 0: ``max(0.5 + C0 · dc, 0)``. Gaussians are processed in depth-ordered chunks of
a bounded number of (Gaussian, pixel) pairs, so memory stays bounded at any resolution.
Where ``gsplat`` is installed and the device is CUDA, ``backend="auto"`` hands the work to it (same
camera and filter); any failure there falls back to this implementation with a warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .cameras import Camera, PerspectiveCamera

__all__ = ["GaussianCloud", "SplatRender", "SplatSettings", "render_gaussians"]

logger = logging.getLogger(__name__)

SH_C0 = 0.28209479177387814
_NEAR_CULL = 0.2  # 3DGS in_frustum: camera-space z <= 0.2 is culled
_ALPHA_MIN = 1.0 / 255.0
_T_MIN = 1e-4


@dataclass
class GaussianCloud:
    """Activated Gaussian parameters in the SyncHuman world frame (z up)."""

    means: torch.Tensor  # [G, 3]
    scales: torch.Tensor  # [G, 3] standard deviations along the local axes
    quats: torch.Tensor  # [G, 4] unit quaternions (w, x, y, z)
    opacities: torch.Tensor  # [G]
    colors: torch.Tensor  # [G, 3] (>= 0)

    @classmethod
    def from_gaussians(cls, gs) -> GaussianCloud:
        """From :class:`synchuman_core.stage2.gaussians.Gaussians` (raw TRELLIS parameters)."""
        dc = gs.features_dc.reshape(gs.features_dc.shape[0], -1)[:, :3].float()
        return cls(
            means=gs.get_xyz.float(),
            scales=gs.get_scaling.float(),
            quats=gs.get_rotation.float(),
            opacities=gs.get_opacity.float().reshape(-1),
            colors=(0.5 + SH_C0 * dc).clamp(min=0.0),
        )

    @property
    def num(self) -> int:
        return int(self.means.shape[0])

    def to(self, device) -> GaussianCloud:
        return GaussianCloud(*(t.to(device) for t in (self.means, self.scales, self.quats, self.opacities, self.colors)))


@dataclass
class SplatSettings:
    """Rasteriser settings. Official (TRELLIS ``render_multiview``): kernel 0.1, black background."""

    kernel_size: float = 0.1  # mip-splatting 2D filter variance in pixels² (3DGS without it: 0.3, no scaling)
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    budget: int = 1 << 22  # Gaussian-pixel pairs evaluated per step (memory knob, ~100 bytes each)
    backend: str = "auto"  # auto (gsplat on CUDA when installed, else torch), torch, gsplat

    def validate(self) -> None:
        if self.kernel_size < 0:
            raise ConfigError(f"kernel_size must be >= 0, got {self.kernel_size}")
        if self.budget < 1024:
            raise ConfigError(f"budget must be >= 1024 (Gaussian-pixel pairs per step), got {self.budget}")
        if self.backend not in ("auto", "torch", "gsplat"):
            raise ConfigError(f"backend must be 'auto', 'torch' or 'gsplat', got {self.backend!r}")


@dataclass
class SplatRender:
    color: torch.Tensor  # [3, H, W] (background blended in)
    alpha: torch.Tensor  # [H, W] accumulated opacity (1 - final transmittance)
    depth: torch.Tensor | None = None  # [H, W] opacity-weighted mean camera depth (inf where alpha ~ 0)


def _quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """``[N, 4]`` unit quaternions (w, x, y, z) → ``[N, 3, 3]`` rotation matrices."""
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).view(-1, 3, 3)


@dataclass
class _Projected:
    mean: torch.Tensor  # [N, 2] pixel coordinates, pixel centres at integers
    conic: torch.Tensor  # [N, 3] (a, b, c) of the inverse 2D covariance
    opacity: torch.Tensor  # [N]
    color: torch.Tensor  # [N, 3]
    depth: torch.Tensor  # [N]
    radius: torch.Tensor  # [N] pixels


def _project(cloud: GaussianCloud, camera: Camera, height: int, width: int, kernel: float) -> _Projected:
    means = cloud.means.float()
    proj = camera.project(means, height, width)  # (col, row, depth)
    depth = proj[:, 2]
    keep = torch.isfinite(proj).all(dim=1)
    if isinstance(camera, PerspectiveCamera):
        keep &= depth > _NEAR_CULL
    jac = camera.jacobian(means, height, width)  # [N, 2, 3]
    m = _quat_to_matrix(F.normalize(cloud.quats.float(), dim=-1)) * cloud.scales.float()[:, None, :]
    t = jac @ m  # [N, 2, 3]
    cov = t @ t.transpose(1, 2)  # J Σ Jᵀ
    a, b, c = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    det0 = a * c - b * b
    a, c = a + kernel, c + kernel
    det = a * c - b * b
    keep &= det > 0
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    scale = torch.sqrt((det0 / det_safe).clamp(min=2.5e-5)) if kernel > 0 else torch.ones_like(det)
    opacity = cloud.opacities.float().reshape(-1) * scale
    mid = 0.5 * (a + c)
    lam = mid + torch.sqrt((mid * mid - det).clamp(min=0.1))
    radius = torch.ceil(3.0 * torch.sqrt(lam))
    conic = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    mean = proj[:, :2] - 0.5  # our pixel centres sit at +0.5; 3DGS puts them at integers
    # off-screen Gaussians
    keep &= (mean[:, 0] + radius >= 0) & (mean[:, 0] - radius <= width - 1)
    keep &= (mean[:, 1] + radius >= 0) & (mean[:, 1] - radius <= height - 1)
    keep &= (radius > 0) & (opacity >= _ALPHA_MIN)  # fainter ones never pass the per-pixel alpha test
    idx = torch.nonzero(keep).squeeze(1)
    return _Projected(mean[idx], conic[idx], opacity[idx], cloud.colors.float()[idx], depth[idx], radius[idx])


def _composite(
    p: _Projected, height: int, width: int, s: SplatSettings
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Front-to-back compositing of the (Gaussian, pixel) pairs inside every Gaussian's 3σ box.

    Gaussians are taken in depth order, in chunks of at most ``budget`` pairs; inside a chunk the pairs
    are sorted by pixel (stable, so depth order is kept) and each pixel's run is composited with a
    segmented scan of ``log(1 - α)`` (float64); transmittance and the stop flag carry over chunks.
    """
    dev = p.mean.device
    num_pix = height * width
    color = torch.zeros(num_pix, 4, device=dev)  # rgb + weighted depth
    trans = torch.ones(num_pix, device=dev)
    done = torch.zeros(num_pix, dtype=torch.bool, device=dev)
    n = p.mean.shape[0]
    if n:
        order = torch.argsort(p.depth, stable=True)
        mean, conic, opac, rad = p.mean[order], p.conic[order], p.opacity[order], p.radius[order]
        col = torch.cat([p.color, p.depth[:, None]], dim=1)[order]  # depth rides along as a 4th channel
        x0 = torch.ceil(mean[:, 0] - rad).clamp(0, width - 1).long()
        x1 = torch.floor(mean[:, 0] + rad).clamp(0, width - 1).long()
        y0 = torch.ceil(mean[:, 1] - rad).clamp(0, height - 1).long()
        y1 = torch.floor(mean[:, 1] + rad).clamp(0, height - 1).long()
        bw, bh = (x1 - x0 + 1).clamp(min=0), (y1 - y0 + 1).clamp(min=0)
        area = bw * bh
        ends = torch.cumsum(area, 0)
        start = 0
        while start < n:
            # the largest run of Gaussians (at least one) whose pairs fit the budget
            base = int(ends[start - 1]) if start else 0
            stop = int(torch.searchsorted(ends, torch.tensor(base + s.budget, device=dev), right=True))
            stop = max(stop, start + 1)
            _composite_chunk(mean, conic, opac, col, x0, y0, bw, area, start, min(stop, n), width,
                             color, trans, done)
            start = stop
    bg = torch.tensor(s.background, dtype=torch.float32, device=dev)
    img = (color[:, :3] + trans[:, None] * bg).T.reshape(3, height, width)
    alpha = 1 - trans
    depth = torch.where(alpha > 1e-4, color[:, 3] / alpha.clamp(min=1e-4), torch.full_like(alpha, float("inf")))
    return img.contiguous(), alpha.view(height, width), depth.view(height, width)


def _composite_chunk(
    mean: torch.Tensor,
    conic: torch.Tensor,
    opac: torch.Tensor,
    col: torch.Tensor,
    x0: torch.Tensor,
    y0: torch.Tensor,
    bw: torch.Tensor,
    area: torch.Tensor,
    g0: int,
    g1: int,
    width: int,
    color: torch.Tensor,
    trans: torch.Tensor,
    done: torch.Tensor,
) -> None:
    dev = mean.device
    cnt = area[g0:g1]
    if int(cnt.sum()) == 0:
        return
    g = torch.repeat_interleave(torch.arange(g0, g1, device=dev), cnt)  # depth order
    first = torch.cumsum(cnt, 0) - cnt
    local = torch.arange(g.shape[0], device=dev) - first[g - g0]
    px = x0[g] + local % bw[g]
    py = y0[g] + torch.div(local, bw[g], rounding_mode="floor")
    dx = mean[g, 0] - px.float()
    dy = mean[g, 1] - py.float()
    c = conic[g]
    power = -0.5 * (c[:, 0] * dx * dx + c[:, 2] * dy * dy) - c[:, 1] * dx * dy
    alpha = (opac[g] * torch.exp(power)).clamp(max=0.99)
    pix = py * width + px
    keep = (power <= 0) & (alpha >= _ALPHA_MIN) & ~done[pix]
    if not bool(keep.any()):
        return
    g, pix, alpha = g[keep], pix[keep], alpha[keep]
    pix, srt = torch.sort(pix, stable=True)
    g, alpha = g[srt], alpha[srt]
    log1m = torch.log1p(-alpha.double())
    cs = torch.cumsum(log1m, 0)
    new_seg = torch.ones_like(pix, dtype=torch.bool)
    new_seg[1:] = pix[1:] != pix[:-1]
    seg_id = torch.cumsum(new_seg.long(), 0) - 1
    seg_base = (cs - log1m)[new_seg]  # sum before each pixel's run
    excl = cs - log1m - seg_base[seg_id]
    t_excl = trans[pix].double() * torch.exp(excl)
    t_incl = t_excl * (1 - alpha.double())
    stopped = t_incl < _T_MIN  # transmittance only falls: the stopped pairs are a suffix of each run
    w = torch.where(stopped, torch.zeros_like(t_excl), alpha.double() * t_excl).float()
    color.index_add_(0, pix, w[:, None] * col[g])
    ok = ~stopped
    trans.scatter_reduce_(0, pix[ok], t_incl[ok].float(), "amin", include_self=True)
    done[pix[stopped]] = True


def _render_gsplat(cloud: GaussianCloud, camera: PerspectiveCamera, h: int, w: int, s: SplatSettings) -> SplatRender:
    import gsplat  # optional fast backend

    dev = cloud.means.device
    rot = camera.rotation(torch.float32, dev)
    eye = torch.tensor(camera.eye, dtype=torch.float32, device=dev)
    view = torch.eye(4, device=dev)
    view[:3, :3] = rot
    view[:3, 3] = -rot @ eye
    k = torch.tensor(
        [[camera.focal * w, 0, w / 2], [0, camera.focal * h, h / 2], [0, 0, 1]], dtype=torch.float32, device=dev
    )
    colors, alphas, _ = gsplat.rasterization(
        cloud.means, cloud.quats, cloud.scales, cloud.opacities, cloud.colors,
        view[None], k[None], w, h, near_plane=_NEAR_CULL, eps2d=s.kernel_size,
        rasterize_mode="antialiased",
        backgrounds=torch.tensor(s.background, dtype=torch.float32, device=dev)[None],
    )
    return SplatRender(color=colors[0].permute(2, 0, 1).contiguous(), alpha=alphas[0, ..., 0].contiguous())


def _gsplat_usable(device: torch.device, camera: Camera) -> bool:
    if device.type != "cuda" or not isinstance(camera, PerspectiveCamera):
        return False
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def render_gaussians(
    gaussians, camera: Camera, height: int, width: int, settings: SplatSettings | None = None
) -> SplatRender:
    """Render ``gaussians`` (:class:`GaussianCloud` or stage-2 ``Gaussians``) seen by ``camera``.

    Runs on the device of the Gaussians. Returns the colour image ``[3, H, W]`` with the background
    blended in and the accumulated opacity ``[H, W]``.
    """
    s = settings or SplatSettings()
    s.validate()
    if height < 1 or width < 1:
        raise ConfigError(f"render size must be positive, got {height}x{width}")
    cloud = gaussians if isinstance(gaussians, GaussianCloud) else GaussianCloud.from_gaussians(gaussians)
    dev = cloud.means.device
    if s.backend == "gsplat" or (s.backend == "auto" and _gsplat_usable(dev, camera)):
        if not isinstance(camera, PerspectiveCamera):
            raise ConfigError("the gsplat backend renders perspective cameras only; use backend 'torch'")
        try:
            return _render_gsplat(cloud, camera, height, width, s)
        except ImportError:
            if s.backend == "gsplat":
                raise ConfigError("backend 'gsplat' needs the gsplat package; install it or use 'torch'") from None
        except Exception as exc:  # noqa: BLE001 - optional backend; the PyTorch path is always correct
            if s.backend == "gsplat":
                raise
            logger.warning("gsplat failed (%s); rendering with the PyTorch rasteriser", exc)
    with torch.no_grad():
        proj = _project(cloud, camera, height, width, s.kernel_size)
        color, alpha, depth = _composite(proj, height, width, s)
    return SplatRender(color=color, alpha=alpha, depth=depth)
