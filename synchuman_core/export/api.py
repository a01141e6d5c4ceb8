"""``export_mesh``: FlexiCubes mesh + generated views → cleaned, UV-mapped, textured mesh (+ files)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from ..errors import ConfigError, InputImageError
from ..geometry.bake import BakeSettings, bake_texture, bake_vertex_colors
from ..geometry.cleanup import CleanupSettings, cleanup_mesh
from ..geometry.mesh import TexturedMesh, as_mesh_tensors
from ..geometry.uv import unwrap_uv
from ..geometry.views import OFFICIAL_MASK_THRESHOLD, views_from_generated
from .axes import UpAxis
from .glb import write_glb
from .obj import write_obj
from .paths import check_output_target, resolve_output_path
from .ply import write_ply

__all__ = ["FORMATS", "ExportResult", "ExportSettings", "export_mesh", "save_mesh"]

logger = logging.getLogger(__name__)

FORMATS = ("glb", "obj", "ply")
ColorMode = Literal["texture", "vertex", "none"]
ProgressFn = Callable[[str, float], None]


@dataclass
class ExportSettings:
    """Everything the user controls in the export. ``ExportSettings.official()`` = the official ``to_glb``."""

    cleanup: CleanupSettings = field(default_factory=CleanupSettings)
    bake: BakeSettings = field(default_factory=BakeSettings)
    color_mode: ColorMode = "texture"  # texture bake, vertex colors (fast, no UVs), or geometry only
    face_weight: float = 4.0  # preference for the face close-up inside its window
    mask_threshold: float = OFFICIAL_MASK_THRESHOLD  # normal-map pixels darker than this are subject
    mask_erode_px: int = 1
    formats: tuple[str, ...] = ("glb",)
    up_axis: UpAxis = "y"

    @classmethod
    def official(cls) -> ExportSettings:
        """Official values: remove 70% of faces, fill holes ≤ 136 edges, 1024² texture, optimisation bake
        (1000 steps, lr 1e-2, TV 0.01)."""
        return cls(
            cleanup=CleanupSettings(decimate_ratio=0.7, max_hole_edges=136),
            bake=BakeSettings(texture_size=1024, mode="opt", opt_steps=1000, opt_lr=1e-2, opt_tv_weight=0.01),
        )

    def validate(self) -> None:
        self.cleanup.validate()
        self.bake.validate()
        if self.color_mode not in ("texture", "vertex", "none"):
            raise ConfigError(f"color_mode must be 'texture', 'vertex' or 'none', got {self.color_mode!r}")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise ConfigError(f"formats must be a non-empty subset of {FORMATS}, got {self.formats!r}")
        if self.up_axis not in ("y", "z"):
            raise ConfigError(f"up_axis must be 'y' or 'z', got {self.up_axis!r}")
        if self.face_weight < 0 or self.mask_erode_px < 0 or not 0 < self.mask_threshold <= 1:
            raise ConfigError("face_weight >= 0, mask_erode_px >= 0 and 0 < mask_threshold <= 1 are required")


@dataclass
class ExportResult:
    mesh: TexturedMesh
    files: dict[str, list[Path]] = field(default_factory=dict)  # format → written files
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


def save_mesh(
    mesh: TexturedMesh,
    output_dir: str | Path,
    filename: str = "synchuman",
    *,
    formats: tuple[str, ...] = ("glb",),
    subfolder: str = "",
    up_axis: UpAxis = "y",
    overwrite: bool = False,
) -> dict[str, list[Path]]:
    """Write ``mesh`` in each of ``formats`` under ``output_dir/subfolder`` (names sanitised, no escapes)."""
    out: dict[str, list[Path]] = {}
    for fmt in formats:
        if fmt not in FORMATS:
            raise ConfigError(f"unknown mesh format {fmt!r}; choose from {FORMATS}")
        path = resolve_output_path(output_dir, filename, f".{fmt}", subfolder=subfolder, overwrite=overwrite)
        if fmt == "glb":
            out[fmt] = [write_glb(mesh, path, up_axis=up_axis)]
        elif fmt == "obj":
            out[fmt] = write_obj(mesh, path, up_axis=up_axis)
        else:
            out[fmt] = [write_ply(mesh, path, up_axis=up_axis)]
    return out


def export_mesh(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    *,
    vertex_colors: torch.Tensor | None = None,
    views: torch.Tensor | None = None,
    face_view: torch.Tensor | None = None,
    normal_views: torch.Tensor | None = None,
    face_normal: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
    face_mask: torch.Tensor | None = None,
    settings: ExportSettings | None = None,
    output_dir: str | Path | None = None,
    filename: str = "synchuman",
    subfolder: str = "",
    device: torch.device | str | None = None,
    progress: ProgressFn | None = None,
) -> ExportResult:
    """Clean up, UV-unwrap and color a mesh, and optionally write it.

    Args:
        vertices, faces: ``[V, 3]`` float / ``[F, 3]`` int64 in the unit cube, z up (FlexiCubes output;
            a leading batch of one is accepted).
        vertex_colors: optional ``[V, C>=3]`` in [0, 1] (first three channels used); colours the mesh
            when no views are given.
        views: generated body colors ``[4, 3, H, W]`` in [0, 1], views 2/3 mirrored as generated.
        face_view: generated face close-up ``[3, Hf, Wf]``. normal_views / face_normal: masks
            (non-white). masks / face_mask: explicit masks (win over normals).
        settings: :class:`ExportSettings`.
        output_dir: when given, files are written there (``filename``, ``subfolder`` sanitised).
        device: where rasterisation and baking run (default CPU); results come back on CPU.
        progress: ``progress(stage, fraction_done)``.
    """
    s = settings or ExportSettings()
    s.validate()
    dev = torch.device(device) if device is not None else torch.device("cpu")
    report = progress or (lambda stage, frac: None)
    timings: dict[str, float] = {}
    v, f = as_mesh_tensors(vertices, faces)
    vc = None
    if vertex_colors is not None:
        vc = torch.as_tensor(vertex_colors).detach().float()
        if vc.ndim == 3 and vc.shape[0] == 1:
            vc = vc[0]
        if vc.ndim != 2 or vc.shape[0] != v.shape[0] or vc.shape[1] < 3:
            raise InputImageError(f"vertex_colors must have shape [{v.shape[0]}, >=3], got {tuple(vc.shape)}")
        vc = vc[:, :3].clamp(0.0, 1.0)
    if f.shape[0] == 0:
        raise InputImageError("the mesh has no faces; the surface extraction produced nothing to export")
    if s.color_mode == "texture" and views is None and vc is None:
        raise ConfigError(
            "color_mode 'texture' needs the generated color views (or vertex colors); pass views or use "
            "color_mode 'none' for geometry only"
        )

    if output_dir is not None:
        check_output_target(output_dir, filename, subfolder=subfolder)  # fail before minutes of work

    t0 = time.perf_counter()
    report("cleanup", 0.0)
    v, f, vc, stats = cleanup_mesh(v, f, vc, s.cleanup, device=dev)
    timings["cleanup"] = time.perf_counter() - t0
    if f.shape[0] == 0:
        raise InputImageError("clean-up removed every face; lower floater_min_fraction or disable remove_invisible")

    bake_views = None
    if views is not None and s.color_mode != "none":
        bake_views = views_from_generated(
            views,
            face=face_view,
            normals=normal_views,
            face_normal=face_normal,
            masks=masks,
            face_mask=face_mask,
            mask_threshold=s.mask_threshold,
            mask_erode_px=s.mask_erode_px,
            face_weight=s.face_weight,
            device=dev,
        )

    if s.color_mode == "none":
        mesh = TexturedMesh(v, f)
    elif s.color_mode == "vertex":
        t0 = time.perf_counter()
        report("vertex colors", 0.5)
        if bake_views is not None:
            colors, bstats = bake_vertex_colors(v.to(dev), f.to(dev), bake_views, s.bake)
            stats.update(bstats)
            vc = colors.cpu()
        mesh = TexturedMesh(v, f, vertex_colors=vc)
        timings["colors"] = time.perf_counter() - t0
    else:
        t0 = time.perf_counter()
        report("uv", 0.3)
        v2, f2, uvs, (vc2,) = unwrap_uv(v, f, [vc], texture_size=s.bake.texture_size)
        timings["uv"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        report("bake", 0.5)

        def bake_progress(done: int, total: int) -> None:
            report("bake", 0.5 + 0.45 * done / max(total, 1))

        texture, bstats = bake_texture(
            v2.to(dev),
            f2.to(dev),
            uvs.to(dev),
            bake_views or [],
            s.bake,
            vertex_colors=None if vc2 is None else vc2.to(dev),
            progress=bake_progress,
        )
        stats.update(bstats)
        mesh = TexturedMesh(v2, f2, uvs=uvs, texture=texture.cpu())
        timings["bake"] = time.perf_counter() - t0
    mesh.stats = dict(stats)
    files: dict[str, list[Path]] = {}
    if output_dir is not None:
        t0 = time.perf_counter()
        report("write", 0.95)
        files = save_mesh(mesh, output_dir, filename, formats=s.formats, subfolder=subfolder, up_axis=s.up_axis)
        timings["write"] = time.perf_counter() - t0
    report("done", 1.0)
    logger.info("export: %d faces, timings %s", mesh.num_faces, {k: round(x, 2) for k, x in timings.items()})
    return ExportResult(mesh=mesh, files=files, timings=timings)
