"""The whole chain as compositions of the stage functions: :func:`reconstruct` (tensors in memory) and
:func:`reconstruct_to_files` (one input to files: what the CLI and the batch runner call per input)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..errors import SyncHumanError
from ..model_source import ModelSource, as_model_source
from ..samplers import SamplerSettings, make_generator
from .data import Reconstruction
from .export import export_reconstruction, export_settings, mesh_arrays
from .stage1 import prepare_conditioning, preprocess, run_stage1
from .stage2 import run_stage2, stage2_defaults

__all__ = ["reconstruct", "reconstruct_to_files"]


def _unpack(models: Any) -> tuple[ModelSource, Any, Callable[[str], dict[str, Any]]]:
    """``(model source, context manager, stage -> keyword arguments)`` for a model source or a
    :class:`synchuman_core.memory.TierRun` (its residency hook, VAE slicing, CFG batching and attention
    query chunk apply)."""
    from ..memory import TierRun

    if isinstance(models, TierRun):
        return models.models, models.active(), models.kwargs
    return as_model_source(models), contextlib.nullcontext(), lambda stage: {}


@torch.no_grad()
def reconstruct(
    models: Any,
    image: Any,
    mask: Any = None,
    *,
    seed: int = 43,
    stage1_settings: SamplerSettings | None = None,
    stage2_settings: SamplerSettings | None = None,
    callback: Callable[[str, int, int], None] | None = None,
    on_stage_done: Callable[[str], None] | None = None,
    decode_mesh: bool = True,
    decode_gaussians: bool = True,
) -> Reconstruction:
    """Input image (RGBA cut-out, or image + person mask) -> both stage outputs.

    ``models``: a :class:`~synchuman_core.model_source.ModelSource` or a
    :class:`~synchuman_core.memory.TierRun` (``apply_tier(...)``). Each stage draws its noise from its own
    generator seeded with ``seed`` (as the two sampler nodes do). ``callback(stage, step, total)``
    reports sampling progress (``stage`` = "stage1" or "stage2") and may raise to interrupt.
    ``on_stage_done`` is called after the TierRun's own residency hook.
    """
    source, scope, kwargs = _unpack(models)
    cb1 = (lambda i, n, x: callback("stage1", i, n)) if callback else None
    cb2 = (lambda i, n, x: callback("stage2", i, n)) if callback else None

    def hooks(stage: str) -> dict[str, Any]:
        kw = kwargs(stage)
        own = kw.pop("on_stage_done", None)
        if own is not None or on_stage_done is not None:
            kw["on_stage_done"] = lambda event: [h(event) for h in (own, on_stage_done) if h is not None]
        return kw

    with scope:
        pre = preprocess(source, image, mask)
        inputs = prepare_conditioning(source, pre, **hooks("conditioning"))
        s1 = run_stage1(source, inputs, stage1_settings, make_generator(seed), cb1, **hooks("stage1"))
        s2 = run_stage2(source, s1, stage2_settings, make_generator(seed), cb2, decode_mesh=decode_mesh,
                        decode_gaussians=decode_gaussians, **hooks("stage2"))
    return Reconstruction(stage1=s1, stage2=s2, extras={"rgba": pre.rgba, "prepared": pre})


def reconstruct_to_files(
    models: Any,
    image: Any,
    mask: Any,
    out_path: str | Path,
    *,
    seed: int = 43,
    steps1: int | None = None,
    steps2: int | None = None,
    texture_size: int = 1024,
    color_mode: str = "texture",
    bake_mode: str = "official",
    gaussians: bool = True,
    turntable: int = 0,
    save_views: bool = False,
    device: torch.device | str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    export_progress: Callable[[str, float], None] | None = None,
    export_steps: Callable[[str, int, int, str], None] | None = None,
    what: str = "-o/--output",
) -> dict[str, Any]:
    """One input (image + optional mask) -> files named after ``out_path``: the mesh (format from the
    suffix: .glb, .obj, .ply), with ``gaussians`` ``<stem>_gaussians.ply`` (and, with ``turntable`` N > 0,
    ``<stem>_turntable.gif``: N frames of the Gaussians around the subject), with ``save_views`` the ten
    views and the two input framings as PNG (:mod:`synchuman_core.export.views`). Returns a summary:
    ``files``, ``timings_s``, ``voxels``, ``faces``, ``memory_tier``, ``precision``.

    The names are reserved before any compute (:func:`synchuman_core.export.writer.reserve_stem`: a taken
    name gets ``_00001``..., ``what`` names the option in errors) and the files are placed only when all
    are written, so a failure leaves nothing behind. ``models``: a loaded
    :class:`~synchuman_core.memory.TierRun` (load once, call per input) or a model source. Stage 1 uses the
    official settings with ``steps1`` steps, stage 2 the checkpoint's ``pipeline.json`` with ``steps2``
    steps; the export uses :func:`~.export.export_settings`.
    """
    from ..export.api import mesh_suffixes
    from ..export.views import VIEW_SUFFIXES, view_images
    from ..export.writer import reserve_stem
    from ..memory import TierRun
    from ..stage2.gaussians import gaussians_ply_bytes

    out_path = Path(out_path)
    fmt = out_path.suffix.lower().lstrip(".") or "glb"
    settings = export_settings(fmt, color_mode, texture_size, bake_mode)
    suffixes = mesh_suffixes((fmt,)) + (("_gaussians.ply",) if gaussians else ()) + (VIEW_SUFFIXES if save_views else ())
    suffixes += ("_turntable.gif",) if gaussians and turntable > 0 else ()
    source, _, _ = _unpack(models)
    s1 = SamplerSettings.stage1(**({"steps": steps1} if steps1 else {}))
    s2 = stage2_defaults(source)[0]
    if steps2:
        s2 = replace(s2, steps=steps2)
    timings: dict[str, float] = {}
    t0 = last = time.perf_counter()

    def timed(event: str) -> None:
        nonlocal last
        now = time.perf_counter()
        timings[event] = now - last
        last = now

    with reserve_stem(out_path.parent, out_path.name, suffixes, what=what) as out:
        rec = reconstruct(models, image, mask, seed=seed, stage1_settings=s1, stage2_settings=s2, callback=progress,
                          on_stage_done=timed, decode_gaussians=gaussians)
        if rec.stage2.mesh is None:
            raise SyncHumanError("the mesh decoder produced no mesh")
        t = time.perf_counter()
        v, f, colors = mesh_arrays(rec.stage2.mesh)
        if f.shape[0] == 0:
            raise SyncHumanError("the mesh decoder produced no surface; try another seed")
        dev = device if device is not None else (models.device if isinstance(models, TierRun) else None)
        result = export_reconstruction(v, f, vertex_colors=colors, color_views=rec.stage1.color_views,
                                       normal_views=rec.stage1.normal_views, settings=settings, output=out,
                                       device=dev, progress=export_progress, gaussians=rec.stage2.gaussians,
                                       on_step=export_steps)
        if rec.stage2.gaussians is not None:
            out.write_bytes("_gaussians.ply", gaussians_ply_bytes(rec.stage2.gaussians))
            if turntable > 0:
                from ..geometry.turntable import render_turntable, save_gif

                frames = render_turntable(rec.stage2.gaussians, turntable, device=dev, progress=export_steps)
                out.write_with("_turntable.gif", lambda p: save_gif(frames, p))
        if save_views:
            images = view_images(rec.stage1.color_views, rec.stage1.normal_views, rec.extras["prepared"])
            for suffix, im in images.items():
                out.write_with(suffix, lambda p, im=im: im.save(p, format="PNG"))
        timings["export"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return {
        "files": [str(p) for p in out.paths],
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "voxels": int(rec.stage1.coords.shape[0]),
        "faces": int(result.mesh.faces.shape[0]),
        "memory_tier": models.tier.name if isinstance(models, TierRun) else None,
        "precision": models.precision if isinstance(models, TierRun) else None,
    }
