"""Orthographic cameras of the SyncHuman views and the mirror quirk of the generated back/left images.

World frame: unit cube ``[-0.5, 0.5]^3``, z up (docs/ARCHITECTURE.md §3.4). A camera maps a world point ``p`` to
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
    "OFFICIAL_FOV_DEG",
    "OFFICIAL_RADIUS",
    "Camera",
    "OrthoCamera",
    "PerspectiveCamera",
    "body_view_camera",
    "hammersley_cameras",
    "official_body_yaws",
    "radical_inverse",
    "sphere_hammersley",
    "turntable_cameras",
    "yaw_pitch_camera",
    "face_view_camera",
    "generated_to_true_orientation",
    "mirrored_generated_views",
    "sphere_cameras",
    "true_to_generated_orientation",
]

NUM_BODY_VIEWS = 4
# Face close-up = the front view's rows [0, H/3) and cols [H/3, 2H/3), zoomed ×3 (docs/ARCHITECTURE.md §3.4):
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

    def directions_to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """``[N, 3]`` unit vectors from ``points`` towards the camera (the same for all points)."""
        return self.view_direction(points.device).to(points.dtype).expand_as(points)

    def jacobian(self, points: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``[N, 2, 3]`` derivative of (col, row) with respect to the world position (constant)."""
        u_min, u_max, v_min, v_max = self.window
        right = torch.tensor(self.right, dtype=points.dtype, device=points.device) * (width / (u_max - u_min))
        up = torch.tensor(self.up, dtype=points.dtype, device=points.device) * (-height / (v_max - v_min))
        return torch.stack([right, up])[None].expand(points.shape[0], 2, 3)

    def pixel_size(self, height: int, width: int) -> float:
        """World length of one pixel (the larger of the two axes)."""
        u_min, u_max, v_min, v_max = self.window
        return max((u_max - u_min) / width, (v_max - v_min) / height)


OFFICIAL_RADIUS = 2.0  # TRELLIS render_multiview / _fill_holes: cameras at distance 2 from the origin
OFFICIAL_FOV_DEG = 40.0  # and a 40° field of view (both axes)


@dataclass(frozen=True)
class PerspectiveCamera:
    """Pinhole camera looking from ``eye`` (TRELLIS / utils3d conventions: OpenCV axes x right, y down,
    z forward; normalised intrinsics ``fx = fy = 0.5 / tan(fov / 2)``, principal point at the centre).

    ``project`` returns (col, row, depth) with the same pixel convention as :class:`OrthoCamera`
    (pixel ``(r, c)`` centre at ``(c + 0.5, r + 0.5)``) and ``depth`` = camera-space z (distance along
    the optical axis). This is the pixel grid of 3DGS renders: ``((ndc + 1) * W - 1) / 2`` with centres
    at integers, shifted by half a pixel.
    """

    eye: tuple[float, float, float]
    right: tuple[float, float, float]  # camera x (image columns grow along it)
    down: tuple[float, float, float]  # camera y (image rows grow along it)
    forward: tuple[float, float, float]  # camera z
    fov_deg: float = OFFICIAL_FOV_DEG

    @property
    def focal(self) -> float:
        """Normalised focal length (fraction of the image size)."""
        return 0.5 / math.tan(math.radians(self.fov_deg) / 2)

    def rotation(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """``[3, 3]`` world-to-camera rotation (rows: right, down, forward)."""
        return torch.tensor([self.right, self.down, self.forward], dtype=dtype, device=device)

    def to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """World ``[N, 3]`` → camera coordinates ``[N, 3]`` (z = depth along the optical axis)."""
        eye = torch.tensor(self.eye, dtype=points.dtype, device=points.device)
        return (points - eye) @ self.rotation(points.dtype, points.device).T

    def project(self, points: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``points [N, 3]`` → ``[N, 3]`` = (col, row, depth) in continuous pixel units."""
        pc = self.to_camera(points)
        z = pc[:, 2]
        zs = torch.where(z.abs() < 1e-9, torch.full_like(z, 1e-9), z)
        col = (self.focal * pc[:, 0] / zs + 0.5) * width
        row = (self.focal * pc[:, 1] / zs + 0.5) * height
        return torch.stack([col, row, z], dim=-1)

    def jacobian(self, points: torch.Tensor, height: int, width: int, *, clamp: float = 1.3) -> torch.Tensor:
        """``[N, 2, 3]`` derivative of (col, row) with respect to the world position.

        Like 3DGS, ``x/z`` and ``y/z`` are clamped to ``clamp`` × the half field of view first, so
        Gaussians far outside the image do not get huge footprints.
        """
        pc = self.to_camera(points)
        z = pc[:, 2].clamp(min=1e-6)
        lim = clamp * math.tan(math.radians(self.fov_deg) / 2)
        tx = (pc[:, 0] / z).clamp(-lim, lim)
        ty = (pc[:, 1] / z).clamp(-lim, lim)
        fx, fy = self.focal * width, self.focal * height
        zero = torch.zeros_like(z)
        j = torch.stack(
            [torch.stack([fx / z, zero, -fx * tx / z], -1), torch.stack([zero, fy / z, -fy * ty / z], -1)], dim=1
        )  # [N, 2, 3] in camera axes
        return j @ self.rotation(points.dtype, points.device)

    def directions_to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """``[N, 3]`` unit vectors from ``points`` towards the eye."""
        eye = torch.tensor(self.eye, dtype=points.dtype, device=points.device)
        return torch.nn.functional.normalize(eye - points, dim=-1)

    def view_direction(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``[3]`` unit vector towards the camera along its optical axis (``-forward``)."""
        return -torch.tensor(self.forward, dtype=torch.float32, device=device)

    def pixel_size(self, height: int, width: int) -> float:
        """World length of one pixel at the distance of the origin (the subject's centre)."""
        dist = math.sqrt(sum(x * x for x in self.eye))
        return dist / (self.focal * min(height, width))


Camera = OrthoCamera | PerspectiveCamera


def _look_at(eye: tuple[float, float, float], fov_deg: float) -> PerspectiveCamera:
    """Camera at ``eye`` looking at the origin with +z up (utils3d ``extrinsics_look_at`` axes)."""
    e = torch.tensor(eye, dtype=torch.float64)
    z = torch.nn.functional.normalize(-e, dim=0)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    x = torch.cross(z, up, dim=0)
    if float(x.norm()) < 1e-9:  # looking straight up or down: any horizontal right vector
        x = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    x = torch.nn.functional.normalize(x, dim=0)
    y = torch.cross(z, x, dim=0)
    t = lambda v: tuple(float(a) for a in v)  # noqa: E731
    return PerspectiveCamera(eye=t(e), right=t(x), down=t(y), forward=t(z), fov_deg=fov_deg)


def yaw_pitch_camera(
    yaw: float, pitch: float, radius: float = OFFICIAL_RADIUS, fov_deg: float = OFFICIAL_FOV_DEG
) -> PerspectiveCamera:
    """TRELLIS ``yaw_pitch_r_fov_to_extrinsics_intrinsics``: eye = ``r·(sin yaw·cos pitch, cos yaw·cos pitch,
    sin pitch)``, looking at the origin, +z up. Yaw -π is the front camera at -Y."""
    eye = (
        radius * math.sin(yaw) * math.cos(pitch),
        radius * math.cos(yaw) * math.cos(pitch),
        radius * math.sin(pitch),
    )
    return _look_at(eye, fov_deg)


def radical_inverse(base: int, n: int) -> float:
    """Van der Corput radical inverse of ``n`` in ``base`` (digits mirrored about the point), the coordinate
    of Hammersley point sets (camera sphere here, the Gaussian decoder's offsets in stage 2)."""
    val, inv = 0.0, 1.0 / base
    f = inv
    while n > 0:
        val += (n % base) * f
        n //= base
        f *= inv
    return val


def sphere_hammersley(index: int, count: int) -> tuple[float, float]:
    """TRELLIS ``sphere_hammersley_sequence(n, N)`` (inference version, no remap, no offset):
    ``u = n/N``, ``v = radical_inverse_2(n)``; returns ``(yaw, pitch) = (2πv, arccos(1 - 2u) - π/2)``."""
    u = index / count
    v = radical_inverse(2, index)
    return 2.0 * math.pi * v, math.acos(1.0 - 2.0 * u) - math.pi / 2.0


def hammersley_cameras(
    count: int, radius: float = OFFICIAL_RADIUS, fov_deg: float = OFFICIAL_FOV_DEG
) -> list[PerspectiveCamera]:
    """The ``count`` cameras of the official Gaussian renders (views 5..99 use ``count = 95``) and of the
    visibility test (``count = 1000``)."""
    return [yaw_pitch_camera(*sphere_hammersley(i, count), radius, fov_deg) for i in range(count)]


def official_body_yaws() -> tuple[float, ...]:
    """Yaws of the official observations 0..4 (pitch 0): front, right, back, left, face (= front)."""
    return (-math.pi, -1.5 * math.pi, 0.0, -0.5 * math.pi, -math.pi)


def turntable_cameras(
    frames: int, *, pitch_deg: float = 15.0, radius: float = OFFICIAL_RADIUS, fov_deg: float = OFFICIAL_FOV_DEG,
    start_yaw: float = -math.pi,
) -> list[PerspectiveCamera]:
    """``frames`` cameras on a circle around the subject (evenly spaced, last frame one step before the
    first, so the sequence loops), starting in front of it."""
    pitch = math.radians(pitch_deg)
    return [yaw_pitch_camera(start_yaw + 2 * math.pi * i / frames, pitch, radius, fov_deg) for i in range(frames)]


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
    with this layout, so the generated images keep it (docs/ARCHITECTURE.md §3.4, §12.9).
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
