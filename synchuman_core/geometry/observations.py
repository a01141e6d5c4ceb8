"""The official observation set of the texture bake (docs/ARCHITECTURE.md §8.4).

100 observations: 0-3 the stage-1 colour views (orthographic, views 2/3 un-mirrored), 4 the face
close-up, 5-99 renders of the decoded 3D Gaussians from the 95-point Hammersley sphere (r = 2,
fov 40°, 1024², mip-splatting kernel 0.1, black background), quantised to 8 bits like the official
``render_frames``; their masks are the non-black pixels (any channel >= 1/255).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .cameras import OFFICIAL_FOV_DEG, OFFICIAL_RADIUS, hammersley_cameras
from .splat import GaussianCloud, SplatSettings, render_gaussians
from .views import BakeView

__all__ = ["ObservationSettings", "gaussian_observations", "official_observations"]

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int, str], None]


@dataclass
class ObservationSettings:
    """How many Gaussian renders join the generated views, and how. Defaults: official."""

    gaussian_views: int = 95  # official: 100 observations - the 5 generated views
    resolution: int = 1024
    radius: float = OFFICIAL_RADIUS
    fov_deg: float = OFFICIAL_FOV_DEG
    kernel_size: float = 0.1
    backend: str = "auto"

    def validate(self) -> None:
        if self.gaussian_views < 0:
            raise ConfigError(f"gaussian_views must be >= 0, got {self.gaussian_views}")
        if not 16 <= self.resolution <= 4096:
            raise ConfigError(f"observation resolution must be between 16 and 4096, got {self.resolution}")
        if self.radius <= 0.9 or not 1.0 <= self.fov_deg < 179.0:
            raise ConfigError("the observation cameras need radius > 0.9 (outside the unit cube) and 1 <= fov < 179")
        SplatSettings(kernel_size=self.kernel_size, backend=self.backend).validate()


def gaussian_observations(
    gaussians,
    settings: ObservationSettings | None = None,
    *,
    device: torch.device | str | None = None,
    progress: ProgressFn | None = None,
) -> list[BakeView]:
    """Render ``gaussians`` from the Hammersley cameras → bake views (image, non-black mask)."""
    s = settings or ObservationSettings()
    s.validate()
    cloud = gaussians if isinstance(gaussians, GaussianCloud) else GaussianCloud.from_gaussians(gaussians)
    if device is not None:
        cloud = cloud.to(device)
    splat = SplatSettings(kernel_size=s.kernel_size, backend=s.backend)
    out = []
    cams = hammersley_cameras(s.gaussian_views, s.radius, s.fov_deg)
    for i, cam in enumerate(cams):
        r = render_gaussians(cloud, cam, s.resolution, s.resolution, splat)
        q = (r.color.clamp(0, 1) * 255.0).floor()  # official: np.clip(x * 255, 0, 255).astype(np.uint8)
        out.append(BakeView(camera=cam, image=q / 255.0, mask=(q > 0).any(dim=0), depth=r.depth))
        if progress is not None:
            progress("render Gaussians", i + 1, len(cams), "view")
    return out


def official_observations(
    generated: list[BakeView],
    gaussians,
    settings: ObservationSettings | None = None,
    *,
    device: torch.device | str | None = None,
    progress: ProgressFn | None = None,
) -> list[BakeView]:
    """``generated`` (from :func:`views_from_generated`: 4 body views, optionally the face) followed by
    the Gaussian renders. With the face view this is the official order 0-99."""
    if len(generated) < 4:
        raise ConfigError("the official observations need the 4 generated body views")
    if gaussians is None:
        return list(generated)
    extra = gaussian_observations(gaussians, settings, device=device, progress=progress)
    logger.info("observations: %d generated + %d Gaussian renders", len(generated), len(extra))
    return list(generated) + extra
