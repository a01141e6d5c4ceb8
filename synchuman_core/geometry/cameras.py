"""Orthographic cameras of the SyncHuman views and the mirror quirk of the generated back/left images.

World frame: unit cube ``[-0.5, 0.5]^3``, z up (ARCHITECTURE §3.4). A camera maps a world point ``p`` to
continuous pixel coordinates: ``col = (p·right - u_min) / (u_max - u_min) * W``,
``row = (v_max - p·up) / (v_max - v_min) * H`` (row 0 = top = max ``p·up``) and ``depth = p·forward``
(larger = farther). Pixel ``(r, c)`` has its centre at ``(c + 0.5, r + 0.5)``.

The cameras below are *true* renders (``right = forward × up``). The generated views 2 and 3 are
horizontally mirrored with respect to these cameras; :func:`generated_to_true_orientation` undoes that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "FACE_REGION",
    "NUM_BODY_VIEWS",
    "OrthoCamera",
    "body_view_camera",
    "face_view_camera",
    "generated_to_true_orientation",
    "mirrored_generated_views",
    "sphere_cameras",
    "true_to_generated_orientation",
]

NUM_BODY_VIEWS = 4
# Face close-up = the front view's rows [0, H/3) and cols [H/3, 2H/3), zoomed ×3 (ARCHITECTURE §3.4):
# in world units x in [-1/6, 1/6], z in [1/6, 1/2].
FACE_REGION = (-1.0 / 6.0, 1.0 / 6.0, 1.0 / 6.0, 0.5)  # (x_min, x_max, z_min, z_max)


@dataclass(frozen=True)
class OrthoCamera:
    """Orthographic camera: image axes ``right``/``up``, viewing direction ``forward`` and a world window."""

    right: tuple[float, float, float]
    up: tuple[float, float, float]
    forward: tuple[float, float, float]
    window: tuple[float, float, float, float] = (-0.5, 0.5, -0.5, 0.5)  # (u_min, u_max, v_min, v_max)

    def project(self, points: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``points [N, 3]`` → ``[N, 3]`` = (col, row, depth) in continuous pixel units."""
        basis = torch.tensor([self.right, self.up, self.forward], dtype=points.dtype, device=points.device)
        uvd = points @ basis.T  # [N, 3]
        u_min, u_max, v_min, v_max = self.window
        col = (uvd[:, 0] - u_min) * (width / (u_max - u_min))
        row = (v_max - uvd[:, 1]) * (height / (v_max - v_min))
        return torch.stack([col, row, uvd[:, 2]], dim=-1)

    def view_direction(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``[3]`` unit vector from the surface towards the camera (``-forward``)."""
        return -torch.tensor(self.forward, dtype=torch.float32, device=device)

    def pixel_size(self, height: int, width: int) -> float:
        """World length of one pixel (the larger of the two axes)."""
        u_min, u_max, v_min, v_max = self.window
        return max((u_max - u_min) / width, (v_max - v_min) / height)


# (right, forward) of the true render of each body view; up is always +z.
_BODY_VIEWS: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = (
    ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),  # 0 front: camera at -Y looking +Y, column = x
    ((0.0, 1.0, 0.0), (-1.0, 0.0, 0.0)),  # 1 "right": camera at +X looking -X, column = y
    ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),  # 2 back: camera at +Y looking -Y, true column = -x
    ((0.0, -1.0, 0.0), (1.0, 0.0, 0.0)),  # 3 "left": camera at -X looking +X, true column = -y
)


def body_view_camera(index: int) -> OrthoCamera:
    """True (unmirrored) orthographic camera of body view ``index`` in 0..3, window ``[-0.5, 0.5]^2``."""
    if not 0 <= index < NUM_BODY_VIEWS:
        raise IndexError(f"body view index must be in 0..3, got {index}")
    right, forward = _BODY_VIEWS[index]
    return OrthoCamera(right=right, up=(0.0, 0.0, 1.0), forward=forward)


def face_view_camera() -> OrthoCamera:
    """Camera of the face close-up: the front camera restricted to :data:`FACE_REGION` (rows top third,
    middle columns of view 0, magnified ×3)."""
    x0, x1, z0, z1 = FACE_REGION
    front = body_view_camera(0)
    return OrthoCamera(right=front.right, up=front.up, forward=front.forward, window=(x0, x1, z0, z1))


def mirrored_generated_views() -> tuple[int, ...]:
    """Indices of the generated views that are mirror images of a true render: 2 (back) and 3 (left).

    The generated back view has column = +x and the left view column = +y (the same column axis as the
    front / right views), i.e. they are horizontally flipped relative to a camera behind / left of the
    subject. The official Stage-2 bake flips them back (``[:, ::-1]``); the Stage-1/2 networks were trained
    with this layout, so the generated images keep it (ARCHITECTURE §3.4, §12.9).
    """
    return (2, 3)


def generated_to_true_orientation(images: torch.Tensor) -> torch.Tensor:
    """``[4, C, H, W]`` (or ``[4, H, W]``) generated body views → true renders of :func:`body_view_camera`.

    Flips the width axis of the mirrored views (see :func:`mirrored_generated_views`). Its own inverse.
    """
    if images.shape[0] != NUM_BODY_VIEWS:
        raise ValueError(f"expected {NUM_BODY_VIEWS} body views, got {images.shape[0]}")
    out = images.clone()
    for i in mirrored_generated_views():
        out[i] = images[i].flip(-1)
    return out


def true_to_generated_orientation(images: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`generated_to_true_orientation` (the same flip)."""
    return generated_to_true_orientation(images)


def _basis_from_forward(forward: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Right/up vectors for a viewing direction, with up as close to +z as possible."""
    helper = torch.tensor([0.0, 0.0, 1.0], dtype=forward.dtype)
    if abs(float(forward @ helper)) > 0.99:
        helper = torch.tensor([0.0, 1.0, 0.0], dtype=forward.dtype)
    right = torch.nn.functional.normalize(torch.cross(forward, helper, dim=0), dim=0)
    up = torch.cross(right, forward, dim=0)
    return right, up


def sphere_cameras(count: int, *, half_extent: float = 0.8661) -> list[OrthoCamera]:
    """``count`` orthographic cameras looking at the origin from a Fibonacci sphere of directions.

    The window ``±half_extent`` (default: the circumradius of the unit cube) sees the whole cube from any
    direction. Used for the visibility test of the clean-up.
    """
    cams = []
    golden = math.pi * (3.0 - math.sqrt(5.0))
    for i in range(count):
        z = 1.0 - 2.0 * (i + 0.5) / count
        r = math.sqrt(max(0.0, 1.0 - z * z))
        phi = golden * i
        d = torch.tensor([r * math.cos(phi), r * math.sin(phi), z], dtype=torch.float64)
        forward = -d  # camera sits at +d and looks towards the origin
        right, up = _basis_from_forward(forward)
        e = half_extent
        cams.append(
            OrthoCamera(
                right=tuple(float(x) for x in right),
                up=tuple(float(x) for x in up),
                forward=tuple(float(x) for x in forward),
                window=(-e, e, -e, e),
            )
        )
    return cams
