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
from ..geometry.observations import ObservationSettings, official_observations
from ..geometry.uv import unwrap_uv
from ..geometry.views import OFFICIAL_MASK_THRESHOLD, views_from_generated
from .axes import UpAxis
from .glb import glb_bytes
from .obj import OBJ_SUFFIXES, obj_files
from .paths import check_output_target, output_folder
from .ply import ply_bytes
from .writer import OutputSet, reserve_stem

__all__ = [
    "FORMATS",
    "RECIPES",
    "ExportResult",
    "ExportSettings",
    "export_mesh",
    "mesh_suffixes",
    "save_mesh",
    "stage_mesh",
]

logger = logging.getLogger(__name__)

FORMATS = ("glb", "obj", "ply")
ColorMode = Literal["texture", "vertex", "none"]
ProgressFn = Callable[[str, float], None]
StepFn = Callable[[str, int, int, str], None]

#: Export recipes. ``official``: the official ``to_glb`` step by step (docs/ARCHITECTURE.md §8): min-cut
#: removal of invisible faces over 1000 views, 100 observations (5 generated views + 95 renders of the
#: decoded Gaussians at 1024²) and the 1000-step optimisation bake. ``fast``: the same clean-up over 100
#: views at 512², and a projection bake of the 5 generated views (seconds; unseen texels diffused).
RECIPES = ("official", "fast")

# share of the export's work per phase (for the overall fraction of ``progress``)
_PHASE_WEIGHT = {"visibility": 0.3, "render Gaussians": 0.2, "bake: rasterise views": 0.1, "bake: optimise": 0.3,
                 "bake: project": 0.2, "uv": 0.03, "write": 0.02}


class _Progress:
    """Turns per-phase step reports into the caller's two callbacks: ``on_step(phase, done, total, unit)``
    and the overall, monotone ``progress(phase, fraction)`` that ends at exactly 1.0."""

    def __init__(self, progress: ProgressFn | None, on_step: StepFn | None) -> None:
        self.progress, self.on_step = progress, on_step
        self.done_weight, self.phase, self.last = 0.0, None, 0.0

    def __call__(self, phase: str, done: int, total: int, unit: str = "step") -> None:
        if phase != self.phase:
            if self.phase is not None:
                self.done_weight += _PHASE_WEIGHT.get(self.phase, 0.02)
            self.phase = phase
        if self.on_step is not None:
            self.on_step(phase, done, total, unit)
        if self.progress is not None:
            frac = self.done_weight + _PHASE_WEIGHT.get(phase, 0.02) * done / max(total, 1)
            self.last = max(self.last, min(frac / (self.done_weight + 1.0), 0.99))
            self.progress(phase, self.last)

    def finish(self) -> None:
        if self.on_step is not None:
            self.on_step("done", 1, 1, "export")
        if self.progress is not None:
            self.progress("done", 1.0)


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
    # renders of the decoded Gaussians that join the generated views (0 = none; official 95 at 1024²)
    observations: ObservationSettings = field(default_factory=lambda: ObservationSettings(gaussian_views=0))

    @classmethod
    def recipe(cls, name: str) -> ExportSettings:
        """The settings of recipe ``name`` (:data:`RECIPES`)."""
        if name == "official":
            return cls(
                cleanup=CleanupSettings(decimate_ratio=0.7, max_hole_edges=136, invisible_method="mincut",
                                        visibility_views=1000, visibility_resolution=1024, max_hole_size=0.04),
                bake=BakeSettings(texture_size=1024, mode="opt", opt_steps=1000, opt_lr=1e-2, opt_lr_end=3e-5,
                                  opt_tv_weight=0.01, opt_init="zeros", inpaint="telea"),
                mask_erode_px=0,  # official masks: non-white normal pixels, as they are
                observations=ObservationSettings(gaussian_views=95, resolution=1024, kernel_size=0.1),
            )
        if name == "fast":
            return cls(
                cleanup=CleanupSettings(decimate_ratio=0.7, max_hole_edges=136, invisible_method="mincut",
                                        visibility_views=100, visibility_resolution=512),
                bake=BakeSettings(texture_size=1024, mode="fast"),
            )
        raise ConfigError(f"unknown export recipe {name!r}; choose from {RECIPES}")

    @classmethod
    def official(cls) -> ExportSettings:
        """The official ``to_glb`` (recipe ``official``)."""
        return cls.recipe("official")

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
        self.observations.validate()


@dataclass
class ExportResult:
    mesh: TexturedMesh
    files: dict[str, list[Path]] = field(default_factory=dict)  # format → written files
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


def mesh_suffixes(formats: tuple[str, ...]) -> tuple[str, ...]:
    """The file suffixes one mesh result needs in ``formats`` (for :func:`~.writer.reserve_stem`)."""
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ConfigError(f"unknown mesh format {bad or formats!r}; choose from {FORMATS}")
    per = {"glb": (".glb",), "obj": OBJ_SUFFIXES, "ply": (".ply",)}
    return tuple(dict.fromkeys(s for f in formats for s in per[f]))


def stage_mesh(out: OutputSet, mesh: TexturedMesh, formats: tuple[str, ...], *, up_axis: UpAxis = "y") -> dict[str, list[Path]]:
    """Write ``mesh`` in ``formats`` into the reserved set ``out`` (placed when ``out`` commits)."""
    files: dict[str, list[Path]] = {}
    for fmt in formats:
        if fmt == "glb":
            files[fmt] = [out.write_bytes(".glb", glb_bytes(mesh, up_axis=up_axis))]
        elif fmt == "obj":
            files[fmt] = [out.write_bytes(s, d) for s, d in obj_files(mesh, out.stem, up_axis=up_axis).items()]
        else:
            files[fmt] = [out.write_bytes(".ply", ply_bytes(mesh, up_axis=up_axis))]
    return files


def save_mesh(
    mesh: TexturedMesh,
    output_dir: str | Path,
    filename: str = "synchuman",
    *,
    formats: tuple[str, ...] = ("glb",),
    subfolder: str = "",
    up_axis: UpAxis = "y",
    what: str = "file name",
) -> dict[str, list[Path]]:
    """Write ``mesh`` in each of ``formats`` under ``output_dir/subfolder``: one cleaned stem for every file
    (numbered together when any of them exists), written through :mod:`.writer` (no overwrite, no partial
    file)."""
    folder, stem = output_folder(output_dir, filename, subfolder)
    with reserve_stem(folder, stem, mesh_suffixes(formats), what=what) as out:
        files = stage_mesh(out, mesh, formats, up_axis=up_axis)
    return files


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
    output: OutputSet | None = None,
    what: str = "file name",
    gaussians=None,
    on_step: StepFn | None = None,
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
        output_dir: when given, files are written there (``filename``, ``subfolder`` sanitised) through
            :mod:`.writer` (one stem, no overwrite, no partial file); ``what`` names the option in errors.
        output: a reserved :class:`~.writer.OutputSet` to stage the files in instead (it must hold
            :func:`mesh_suffixes` of the formats; the caller commits it together with its other files).
        device: where rasterisation and baking run (default CPU); results come back on CPU.
        progress: ``progress(stage, fraction_done)``: overall, monotone, ends at 1.0.
        gaussians: the decoded 3D Gaussians (stage-2 ``Gaussians`` or a ``GaussianCloud``); rendered into
            ``settings.observations.gaussian_views`` extra observations (recipe ``official``: 95).
        on_step: ``on_step(phase, done, total, unit)`` for every unit of work (views, steps, texels).
    """
    s = settings or ExportSettings()
    s.validate()
    dev = torch.device(device) if device is not None else torch.device("cpu")
    report = _Progress(progress, on_step)
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
    wants_gaussians = s.color_mode == "texture" and s.observations.gaussian_views > 0 and views is not None
    if wants_gaussians and gaussians is None:
        raise ConfigError(
            f"the export renders the decoded Gaussians into {s.observations.gaussian_views} of its observations "
            "(recipe 'official'); pass the Gaussian decoder's output as gaussians, or use recipe 'fast'"
        )

    if output_dir is not None:
        check_output_target(output_dir, filename, subfolder=subfolder)  # fail before minutes of work

    t0 = time.perf_counter()
    report("cleanup", 0, 1, "mesh")
    v, f, vc, stats = cleanup_mesh(v, f, vc, s.cleanup, device=dev, progress=report)
    report("cleanup", 1, 1, "mesh")
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
        report("vertex colors", 0, 1, "mesh")
        if bake_views is not None:
            colors, bstats = bake_vertex_colors(v.to(dev), f.to(dev), bake_views, s.bake)
            stats.update(bstats)
            vc = colors.cpu()
        mesh = TexturedMesh(v, f, vertex_colors=vc)
        timings["colors"] = time.perf_counter() - t0
    else:
        t0 = time.perf_counter()
        report("uv", 0, 1, "mesh")
        v2, f2, uvs, (vc2,) = unwrap_uv(v, f, [vc], texture_size=s.bake.texture_size)
        report("uv", 1, 1, "mesh")
        timings["uv"] = time.perf_counter() - t0
        if wants_gaussians and bake_views is not None:
            t0 = time.perf_counter()
            bake_views = official_observations(bake_views, gaussians, s.observations, device=dev, progress=report)
            timings["observations"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        texture, bstats = bake_texture(
            v2.to(dev),
            f2.to(dev),
            uvs.to(dev),
            bake_views or [],
            s.bake,
            vertex_colors=None if vc2 is None else vc2.to(dev),
            progress=report,
        )
        stats.update(bstats)
        mesh = TexturedMesh(v2, f2, uvs=uvs, texture=texture.cpu())
        timings["bake"] = time.perf_counter() - t0
    mesh.stats = dict(stats)
    files: dict[str, list[Path]] = {}
    if output_dir is not None:
        t0 = time.perf_counter()
        report("write", 0, 1, "file set")
        files = save_mesh(mesh, output_dir, filename, formats=s.formats, subfolder=subfolder, up_axis=s.up_axis,
                          what=what)
        report("write", 1, 1, "file set")
        timings["write"] = time.perf_counter() - t0
    elif output is not None:
        t0 = time.perf_counter()
        report("write", 0, 1, "file set")
        files = stage_mesh(output, mesh, s.formats, up_axis=s.up_axis)
        report("write", 1, 1, "file set")
        timings["write"] = time.perf_counter() - t0
    report.finish()
    logger.info("export: %d faces, timings %s", mesh.num_faces, {k: round(x, 2) for k, x in timings.items()})
    return ExportResult(mesh=mesh, files=files, timings=timings)
