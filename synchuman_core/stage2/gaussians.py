"""3D Gaussians decoded by the stage-2 Gaussian decoder (TRELLIS ``Gaussian`` semantics) and their
export as a standard 3D-Gaussian-splatting PLY.

Parameters are stored raw (pre-activation) as TRELLIS does; the ``get_*`` properties apply the
activations (docs/ARCHITECTURE.md §7 step 5):

* position ``xyz * aabb[3:] + aabb[:3]`` (raw ``xyz`` in the aabb's unit frame);
* scale ``sqrt(act(s + act^-1(scaling_bias))^2 + min_kernel_size^2)``, ``act`` = softplus or exp;
* opacity ``sigmoid(o + logit(opacity_bias))``;
* rotation ``normalize(r + [1, 0, 0, 0])`` (quaternion ``w, x, y, z``);
* colour: SH degree 0 coefficients ``features_dc [G, 1, 3]`` (``rgb = 0.5 + C0 * dc``).

PLY layout (the one 3DGS viewers read): ``x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 opacity scale_0 scale_1
scale_2 rot_0 rot_1 rot_2 rot_3``, float32, with opacity as a logit, scales as logs and the
un-normalised quaternion ``r + [1,0,0,0]``. Like TRELLIS' ``save_ply`` the positions / rotations are
rotated by :data:`OFFICIAL_PLY_TRANSFORM` (z-up world to the y-down frame of 3DGS scenes) unless
``transform=None``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, InputImageError

__all__ = [
    "OFFICIAL_PLY_TRANSFORM",
    "SH_C0",
    "Gaussians",
    "load_gaussians_ply",
    "quaternion_multiply",
    "rotation_matrix_to_quaternion",
    "gaussians_ply_bytes",
    "save_gaussians_ply",
]

# (x, y, z) -> (x, -z, y): TRELLIS ``Gaussian.save_ply`` default.
OFFICIAL_PLY_TRANSFORM: tuple[tuple[float, ...], ...] = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0))
SH_C0 = 0.28209479177387814  # degree-0 real spherical harmonic


def _inverse_activation(name: str, value: float) -> torch.Tensor:
    v = torch.tensor(value, dtype=torch.float32)
    if name == "softplus":
        return v + torch.log(-torch.expm1(-v))
    if name == "exp":
        return torch.log(v)
    raise ConfigError(f"scaling_activation must be 'softplus' or 'exp', got {name!r}")


@dataclass
class Gaussians:
    """A set of ``G`` 3D Gaussians (raw parameters; see the module docstring for the activations)."""

    xyz: torch.Tensor  # [G, 3] in the aabb's unit frame
    features_dc: torch.Tensor  # [G, 1, 3] SH degree 0
    scaling: torch.Tensor  # [G, 3] raw
    rotation: torch.Tensor  # [G, 4] raw (w, x, y, z) before + [1, 0, 0, 0]
    opacity: torch.Tensor  # [G, 1] raw
    aabb: tuple[float, float, float, float, float, float] = (-0.5, -0.5, -0.5, 1.0, 1.0, 1.0)
    min_kernel_size: float = 0.0
    scaling_bias: float = 0.01
    opacity_bias: float = 0.1
    scaling_activation: str = "exp"
    sh_degree: int = 0
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _inverse_activation(self.scaling_activation, self.scaling_bias)  # validates the name
        if self.sh_degree != 0:
            raise ConfigError("only SH degree 0 Gaussians are supported (the SyncHuman decoder emits degree 0)")

    # ------------------------------------------------------------------ activations

    @property
    def num_gaussians(self) -> int:
        return int(self.xyz.shape[0])

    def _bias(self, value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return value.to(device=like.device, dtype=like.dtype)

    @property
    def scale_bias(self) -> torch.Tensor:
        return _inverse_activation(self.scaling_activation, self.scaling_bias)

    @property
    def opacity_logit_bias(self) -> torch.Tensor:
        b = torch.tensor(self.opacity_bias, dtype=torch.float32)
        return torch.log(b / (1 - b))

    @property
    def get_xyz(self) -> torch.Tensor:
        a = torch.tensor(self.aabb, dtype=self.xyz.dtype, device=self.xyz.device)
        return self.xyz * a[None, 3:] + a[None, :3]

    @property
    def get_scaling(self) -> torch.Tensor:
        s = self.scaling + self._bias(self.scale_bias, self.scaling)
        s = F.softplus(s) if self.scaling_activation == "softplus" else torch.exp(s)
        return torch.sqrt(torch.square(s) + self.min_kernel_size**2)

    @property
    def rotation_biased(self) -> torch.Tensor:
        """``rotation + [1, 0, 0, 0]`` (not normalised)."""
        bias = torch.zeros(4, dtype=self.rotation.dtype, device=self.rotation.device)
        bias[0] = 1
        return self.rotation + bias[None]

    @property
    def get_rotation(self) -> torch.Tensor:
        return F.normalize(self.rotation_biased, dim=-1)

    @property
    def get_opacity(self) -> torch.Tensor:
        return torch.sigmoid(self.opacity + self._bias(self.opacity_logit_bias, self.opacity))

    @property
    def get_features(self) -> torch.Tensor:
        return self.features_dc

    @property
    def colors(self) -> torch.Tensor:
        """Base colour ``[G, 3]`` in [0, 1] from the degree-0 SH coefficient."""
        return (0.5 + SH_C0 * self.features_dc[:, 0, :]).clamp(0, 1)

    def to(self, *args, **kwargs) -> Gaussians:
        names = ("xyz", "features_dc", "scaling", "rotation", "opacity")
        return replace(self, **{n: getattr(self, n).to(*args, **kwargs) for n in names})

    def save_ply(self, path: str | Path, transform=OFFICIAL_PLY_TRANSFORM) -> Path:
        return save_gaussians_ply(self, path, transform=transform)


# ---------------------------------------------------------------------------------------------------
# quaternions (w, x, y, z)
# ---------------------------------------------------------------------------------------------------


def quaternion_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a * b`` of quaternions ``[..., 4]`` (w, x, y, z); rotation by b then a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def rotation_matrix_to_quaternion(m) -> torch.Tensor:
    """Unit quaternion (w, x, y, z), float64, of a proper 3x3 rotation matrix (Shepperd's method)."""
    r = torch.as_tensor(m, dtype=torch.float64)
    if r.shape != (3, 3) or not torch.allclose(r @ r.T, torch.eye(3, dtype=torch.float64), atol=1e-6):
        raise ValueError("transform must be a 3x3 rotation matrix")
    if torch.det(r) < 0:
        raise ValueError("transform must be a proper rotation (det +1); reflections would mirror the Gaussians")
    t = float(r.trace())
    if t > 0:
        s = math.sqrt(t + 1.0) * 2
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    else:
        i = int(torch.argmax(torch.diagonal(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = math.sqrt(1.0 + float(r[i, i] - r[j, j] - r[k, k])) * 2
        q = [0.0] * 4
        q[0] = (r[k, j] - r[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (r[j, i] + r[i, j]) / s
        q[1 + k] = (r[k, i] + r[i, k]) / s
    return torch.tensor([float(v) for v in q], dtype=torch.float64)


# ---------------------------------------------------------------------------------------------------
# PLY
# ---------------------------------------------------------------------------------------------------

_PLY_FIELDS = (
    ["x", "y", "z", "nx", "ny", "nz"]
    + [f"f_dc_{i}" for i in range(3)]
    + ["opacity"]
    + [f"scale_{i}" for i in range(3)]
    + [f"rot_{i}" for i in range(4)]
)


def gaussians_ply_bytes(gs: Gaussians, transform=OFFICIAL_PLY_TRANSFORM) -> bytes:
    """``gs`` as a binary little-endian 3DGS PLY (see the module docstring for the fields)."""
    import io

    from plyfile import PlyData, PlyElement

    with torch.no_grad():
        xyz = gs.get_xyz.double().cpu()
        rot = gs.rotation_biased.double().cpu()
        if transform is not None:
            t = torch.as_tensor(transform, dtype=torch.float64)
            q = rotation_matrix_to_quaternion(t)
            xyz = xyz @ t.T
            rot = quaternion_multiply(q.expand_as(rot), rot)
        cols = [
            xyz,
            torch.zeros_like(xyz),
            gs.features_dc.detach().double().cpu().transpose(1, 2).reshape(-1, 3),
            (gs.opacity + gs._bias(gs.opacity_logit_bias, gs.opacity)).double().cpu(),
            torch.log(gs.get_scaling).double().cpu(),
            rot,
        ]
        data = torch.cat(cols, dim=1).float().numpy()
    elements = np.empty(data.shape[0], dtype=[(n, "f4") for n in _PLY_FIELDS])
    for i, n in enumerate(_PLY_FIELDS):
        elements[n] = data[:, i]
    buf = io.BytesIO()
    PlyData([PlyElement.describe(elements, "vertex")]).write(buf)
    return buf.getvalue()


def save_gaussians_ply(gs: Gaussians, path: str | Path, transform=OFFICIAL_PLY_TRANSFORM) -> Path:
    """Write :func:`gaussians_ply_bytes` through the output writer: never replaces an existing file (a
    taken name gets ``_00001``), never leaves a partial file. Returns the path written."""
    from ..export.writer import write_file

    p = Path(path)
    return write_file(p.parent, p.name, ".ply", gaussians_ply_bytes(gs, transform))


def load_gaussians_ply(path: str | Path, transform=OFFICIAL_PLY_TRANSFORM, **params) -> Gaussians:
    """Read a PLY written by :func:`save_gaussians_ply` (or any SH-degree-0 3DGS PLY).

    ``transform`` must be the one used when saving (it is undone). ``params`` set the
    :class:`Gaussians` hyper-parameters (``aabb``, ``min_kernel_size``, ``scaling_bias``,
    ``opacity_bias``, ``scaling_activation``); activated values do not depend on them except where a
    stored scale is below ``min_kernel_size`` (clamped).
    """
    from plyfile import PlyData

    ply = PlyData.read(str(path))
    try:
        v = ply["vertex"]
        cols = {n: torch.from_numpy(np.asarray(v[n], dtype=np.float64)) for n in _PLY_FIELDS if n != "nx"}
    except (KeyError, ValueError) as e:
        raise InputImageError(f"{path} is not a degree-0 3D Gaussian splatting PLY ({e})") from None
    gs = Gaussians(
        xyz=torch.zeros(0, 3), features_dc=torch.zeros(0, 1, 3), scaling=torch.zeros(0, 3),
        rotation=torch.zeros(0, 4), opacity=torch.zeros(0, 1), **params,
    )  # fmt: skip
    xyz = torch.stack([cols["x"], cols["y"], cols["z"]], dim=1)
    rot = torch.stack([cols[f"rot_{i}"] for i in range(4)], dim=1)
    if transform is not None:
        t = torch.as_tensor(transform, dtype=torch.float64)
        q = rotation_matrix_to_quaternion(t)
        q_inv = q * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=torch.float64)
        xyz = xyz @ t  # inverse of xyz @ t.T for a rotation
        rot = quaternion_multiply(q_inv.expand_as(rot), rot)
    aabb = torch.tensor(gs.aabb, dtype=torch.float64)
    scale = torch.exp(torch.stack([cols[f"scale_{i}"] for i in range(3)], dim=1))
    scale = torch.sqrt((scale.square() - gs.min_kernel_size**2).clamp_min(1e-30))
    if gs.scaling_activation == "softplus":
        raw_scale = scale + torch.log(-torch.expm1(-scale))
    else:
        raw_scale = torch.log(scale)
    bias = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    return replace(
        gs,
        xyz=((xyz - aabb[:3]) / aabb[3:]).float(),
        features_dc=torch.stack([cols[f"f_dc_{i}"] for i in range(3)], dim=1)[:, None, :].float(),
        scaling=(raw_scale - gs.scale_bias.double()).float(),
        rotation=(rot - bias).float(),
        opacity=(cols["opacity"][:, None] - gs.opacity_logit_bias.double()).float(),
    )
