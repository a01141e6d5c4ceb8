"""Applying a memory tier to a set of models: dtypes, residency, compilation, attention chunking.

::

    run = apply_tier("low", "/models/synchuman", device="cuda")      # load once
    rec = pipeline.reconstruct(run, rgba, seed=43)                     # per input (tier kwargs + chunking)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..model_source import as_model_source, first_float_parameter
from .residency import ManagedModels
from .tiers import MemoryTier, dtype_plan, get_tier, resolve_precision, stage_kwargs

__all__ = ["TierRun", "apply_tier", "compile_heavy_modules"]

_COMPILED_ATTR = "_synchuman_compiled"


def compile_heavy_modules(models: Any, **compile_kwargs: Any) -> list[str]:
    """``torch.compile`` the blocks of the joint model in place (``nn.Module.compile``: state-dict keys
    unchanged): every UNet down/mid/up block and every 3D transformer block, compiled one region at
    a time (faster to compile than the whole forward, no graph break at the NaN check). The joint
    model does ~97% of the stage-1 work (50 steps x 1-2 calls); one-shot encoders and the sparse
    stage-2 models (data-dependent shapes) are left eager. Returns the compiled module names."""
    joint = getattr(models, "wrapped", models).get("joint")  # the real module (peek may be weightless), not placed
    if getattr(joint, _COMPILED_ATTR, False):
        return []
    names = []
    for attr in ("down_blocks", "up_blocks", "blocks"):
        for i, blk in enumerate(getattr(joint, attr, ())):
            blk.compile(**compile_kwargs)
            names.append(f"{attr}.{i}")
    mid = getattr(joint, "mid_block", None)
    if isinstance(mid, nn.Module):
        mid.compile(**compile_kwargs)
        names.append("mid_block")
    setattr(joint, _COMPILED_ATTR, True)
    return names


@dataclass
class TierRun:
    """A tier applied to one set of models: the wrapped models (a ``ModelSource`` with the tier's
    residency), the keyword arguments of each pipeline stage and the process-wide settings (:meth:`active`).
    :func:`synchuman_core.pipeline.reconstruct` and ``reconstruct_to_files`` take it in place of models."""

    tier: MemoryTier
    device: torch.device
    precision: str
    models: ManagedModels
    dtypes: dict[str, torch.dtype | None] = field(default_factory=dict)

    @property
    def on_stage_done(self):  # noqa: ANN201 - Callable[[str], None]
        return self.models.on_stage_done

    def kwargs(self, stage: str) -> dict[str, Any]:
        """Keyword arguments of pipeline stage ``stage`` (:func:`.tiers.stage_kwargs`) plus the residency hook."""
        return {**stage_kwargs(self.tier, stage), "on_stage_done": self.on_stage_done}

    def conditioning_kwargs(self) -> dict[str, Any]:
        return self.kwargs("conditioning")

    def stage1_kwargs(self) -> dict[str, Any]:
        return self.kwargs("stage1")

    def stage2_kwargs(self) -> dict[str, Any]:
        return self.kwargs("stage2")

    @contextlib.contextmanager
    def active(self) -> Iterator[TierRun]:
        """The tier's attention query chunk for the enclosed code (restored afterwards; process-wide,
        so do not run two tiers concurrently in one process)."""
        from ..attention import query_chunk

        with query_chunk(self.tier.attention_query_chunk):
            yield self


def apply_tier(
    tier: str | MemoryTier,
    models: Any,
    *,
    device: torch.device | str | None = None,
    offload_device: torch.device | str = "cpu",
    cast: bool = True,
) -> TierRun:
    """Apply ``tier`` to ``models``: a model folder (path; a ``SyncHumanModels`` is created with the
    tier's dtypes) or a model source (``SyncHumanModels`` or any :class:`~synchuman_core.model_source.ModelSource`).

    * dtypes: a new ``SyncHumanModels`` is built with :func:`.tiers.dtype_plan`; for an existing source,
      components not yet loaded get the plan (its ``dtypes`` dict) and, with ``cast``, loaded
      half-precision components are cast (``module.to(dtype)``);
    * residency: the models are wrapped in :class:`~.residency.ManagedModels`; under
      ``"offload"``/``"sequential"`` a new ``SyncHumanModels`` loads onto ``offload_device`` and
      components move to ``device`` when used;
    * ``compile``: :func:`compile_heavy_modules`.

    ``device`` defaults to CUDA when available, else CPU.
    """
    t = get_tier(tier)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(t.precision, dev)
    plan = dtype_plan(precision, dev)
    if isinstance(models, (str, os.PathLike)):
        from ..io import SyncHumanModels

        load_dev = dev if t.residency == "resident" else torch.device(offload_device)
        models = SyncHumanModels(models, device=load_dev, dtypes=plan)
    else:
        if isinstance(models, ManagedModels):
            models = models.wrapped
        models = as_model_source(models, "apply_tier's models")
        if isinstance(getattr(models, "dtypes", None), dict):
            models.dtypes.update(plan)
        if cast:
            _cast_loaded(models, plan)
    managed = ManagedModels(models, dev, residency=t.residency, offload_device=offload_device,
                            drop_after_use=t.drop_after_use)
    if t.compile:
        compile_heavy_modules(managed)
    return TierRun(tier=t, device=dev, precision=precision, models=managed, dtypes=plan)


def _loaded_components(models: Any) -> Iterable[str]:
    loaded = getattr(models, "loaded", None)
    return list(loaded) if isinstance(loaded, list) else []


def _cast_loaded(models: Any, plan: Mapping[str, torch.dtype | None]) -> None:
    for name in _loaded_components(models):
        dt = plan.get(name)
        module = models.peek(name)
        p = first_float_parameter(module)
        if dt is not None and p is not None and p.dtype != dt:
            module.to(dtype=dt)
