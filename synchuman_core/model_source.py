"""The one seam between the pipeline and whoever holds the models: the :class:`ModelSource` protocol.

The stage functions of :mod:`synchuman_core.pipeline` take a ``ModelSource``. Three classes implement it:

* :class:`synchuman_core.io.SyncHumanModels`: one checkpoint folder, each component loaded on first use
  (CLI, batch runner, tests);
* :class:`synchuman_core.memory.ManagedModels`: any source behind a residency policy (memory tiers);
* ``nodes.models.ModelBundle``: the ComfyUI wire, whose components are placed by ComfyUI's model manager;
* :class:`ModuleSet`: components already in memory (tests, benchmarks).

Component names are the model entries of :data:`synchuman_core.io.registry.COMPONENTS` (``joint``,
``structure_decoder``, ``vae``, ``image_encoder``, ``dinov2``, ``slat_flow``, ``mesh_decoder``,
``gs_decoder``; ``text_encoder`` only to recompute prompts).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["ModelSource", "ModuleSet", "as_model_source", "first_float_parameter", "module_device_dtype"]


@runtime_checkable
class ModelSource(Protocol):
    """What the pipeline needs from a set of models.

    * ``get(name)``: the component, placed where it computes (a residency policy may move others off);
    * ``peek(name)``: the component for reading its config and dtype, without placing it; a component not
      loaded yet may come as a weightless meta-device build (never run what ``peek`` returns);
    * ``device_dtype(name)``: ``(device, parameter dtype)`` it computes with, without placing it;
    * ``prompt_embeds()``: the stage-1 view-prompt embeddings, ``{"normal", "color"}`` of ``[5, 77, D]``
      or one ``[10, 77, D]`` tensor (normal views, then colour views);
    * ``settings(name)``: a settings file's contents (``pipeline_stage1``, ``pipeline_stage2``,
      ``feature_extractor``); raises ``ConfigError`` / ``FileNotFoundError`` when it cannot be read.
    """

    def get(self, name: str) -> nn.Module: ...

    def peek(self, name: str) -> nn.Module: ...

    def device_dtype(self, name: str) -> tuple[torch.device, torch.dtype]: ...

    def prompt_embeds(self) -> Mapping[str, torch.Tensor] | torch.Tensor: ...

    def settings(self, name: str) -> dict[str, Any]: ...


def as_model_source(models: Any, what: str = "the models argument") -> ModelSource:
    """``models`` if it implements :class:`ModelSource`, else a :class:`ConfigError` naming what is missing."""
    if isinstance(models, ModelSource):
        return models
    missing = [m for m in ("get", "peek", "device_dtype", "prompt_embeds", "settings")
               if not callable(getattr(models, m, None))]
    raise ConfigError(
        f"{what} must be a model source (synchuman_core.io.SyncHumanModels, memory.apply_tier(...).models or the "
        f"SyncHuman Model Loader's output); {type(models).__name__} lacks {', '.join(missing)}"
    )


def first_float_parameter(module: Any) -> torch.Tensor | None:
    """The first floating-point parameter of ``module`` (None for a non-module or one without any)."""
    if isinstance(module, nn.Module):
        for p in module.parameters():
            if p.is_floating_point():
                return p
    return None


def module_device_dtype(module: Any, default_dtype: torch.dtype = torch.float32) -> tuple[torch.device, torch.dtype]:
    """``(device, dtype)`` of the first floating-point parameter (CPU / ``default_dtype`` if none)."""
    p = first_float_parameter(module)
    if p is None:
        return torch.device("cpu"), default_dtype
    return p.device, p.dtype


class ModuleSet:
    """A :class:`ModelSource` over components already in memory (tests, benchmarks, models built in code).

    ``modules``: ``{component name: module}``; ``prompt_embeds``: the view prompts (see the protocol);
    ``settings``: ``{settings name: contents}`` (missing names raise ``ConfigError``, so the pipeline uses
    the official values). Components stay where they are.
    """

    def __init__(self, modules: Mapping[str, Any], *, prompt_embeds: Mapping[str, torch.Tensor] | torch.Tensor,
                 settings: Mapping[str, dict[str, Any]] | None = None) -> None:
        self.modules = dict(modules)
        self._prompts = prompt_embeds
        self._settings = dict(settings or {})

    @property
    def loaded(self) -> list[str]:
        return list(self.modules)

    def get(self, name: str) -> Any:
        try:
            return self.modules[name]
        except KeyError:
            raise ConfigError(f"this model set has no component {name!r}; it holds {', '.join(self.modules)}") from None

    def peek(self, name: str) -> Any:
        return self.get(name)

    def device_dtype(self, name: str) -> tuple[torch.device, torch.dtype]:
        return module_device_dtype(self.get(name))

    def prompt_embeds(self) -> Mapping[str, torch.Tensor] | torch.Tensor:
        return self._prompts

    def settings(self, name: str) -> dict[str, Any]:
        if name not in self._settings:
            raise ConfigError(f"this model set has no settings file {name!r}")
        return self._settings[name]
