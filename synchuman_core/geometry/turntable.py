"""Turntable renders of the decoded Gaussians (previews, videos): frames as an IMAGE-style batch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import ConfigError
from .cameras import OFFICIAL_FOV_DEG, OFFICIAL_RADIUS, turntable_cameras
from .splat import GaussianCloud, SplatSettings, render_gaussians

__all__ = ["render_turntable", "save_gif"]


def render_turntable(
    gaussians,
    frames: int,
    *,
    resolution: int = 512,
    pitch_deg: float = 15.0,
    radius: float = OFFICIAL_RADIUS,
    fov_deg: float = OFFICIAL_FOV_DEG,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    device: torch.device | str | None = None,
    progress: Callable[[str, int, int, str], None] | None = None,
) -> torch.Tensor:
    """``frames`` renders on a circle around the subject, starting in front of it (official camera
    distance and field of view). Returns ``[frames, H, W, 3]`` float32 in [0, 1] on the CPU."""
    if frames < 1 or frames > 3600:
        raise ConfigError(f"turntable frames must be between 1 and 3600, got {frames}")
    if not 16 <= resolution <= 4096:
        raise ConfigError(f"turntable resolution must be between 16 and 4096, got {resolution}")
    if not -89.0 <= pitch_deg <= 89.0:
        raise ConfigError(f"turntable pitch must be between -89 and 89 degrees, got {pitch_deg}")
    cloud = gaussians if isinstance(gaussians, GaussianCloud) else GaussianCloud.from_gaussians(gaussians)
    if device is not None:
        cloud = cloud.to(device)
    splat = SplatSettings(background=tuple(float(b) for b in background))
    out = []
    cams = turntable_cameras(frames, pitch_deg=pitch_deg, radius=radius, fov_deg=fov_deg)
    for i, cam in enumerate(cams):
        img = render_gaussians(cloud, cam, resolution, resolution, splat).color
        out.append(img.clamp(0, 1).permute(1, 2, 0).cpu())
        if progress is not None:
            progress("turntable", i + 1, frames, "frame")
    return torch.stack(out)


def save_gif(frames: torch.Tensor, path: str | Path, *, fps: float = 24.0) -> None:
    """Write ``[N, H, W, 3]`` frames in [0, 1] as a looping GIF (Pillow)."""
    from PIL import Image

    arr = (frames.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    images = [Image.fromarray(a) for a in arr]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=max(1, int(round(1000 / fps))))
