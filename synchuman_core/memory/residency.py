"""Residency: which models sit on the compute device while a run goes through the pipeline.

:class:`ManagedModels` wraps any :class:`~synchuman_core.model_source.ModelSource` and is one itself:
``get(name)`` places the component on the compute device (under ``"sequential"`` after moving every
other component off), ``peek``/``device_dtype`` read it without moving it, and :meth:`on_stage_done`
is the ``on_stage_done`` hook of the pipeline functions. Under ``"offload"`` a finished stage event
releases the components whose registry entry names it in ``offload_after`` (:data:`OFFLOAD_AFTER`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..io.registry import COMPONENTS, STEPS, model_names
from ..model_source import as_model_source, first_float_parameter
from .tiers import RESIDENCIES

__all__ = ["OFFLOAD_AFTER", "ManagedModels"]

#: Components each ``on_stage_done`` event releases under the ``offload`` residency (from the registry).
OFFLOAD_AFTER: dict[str, tuple[str, ...]] = {
    event: tuple(n for n in model_names() if event in COMPONENTS[n].offload_after)
    for event in dict.fromkeys(STEPS.values())
}


class ManagedModels:
    """A model source behind a residency policy (``"resident"``, ``"offload"``, ``"sequential"``).

    Other attributes (``folder``, ``unload``, ``dtypes`` ...) are forwarded to the wrapped source.
    ``events`` logs ``("use"|"offload"|"drop", name)`` for tests and benchmarks.
    """

    COMPONENTS = model_names()

    def __init__(
        self,
        models: Any,
        device: torch.device | str | None = None,
        *,
        residency: str = "resident",
        offload_device: torch.device | str = "cpu",
        drop_after_use: bool = False,
    ) -> None:
        if residency not in RESIDENCIES:
            raise ConfigError(f"residency must be one of {RESIDENCIES}, got {residency!r}")
        self._models = as_model_source(models, "ManagedModels' models")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.offload_device = torch.device(offload_device)
        self.residency = residency
        self.drop_after_use = drop_after_use
        self._on_device: list[str] = []
        self.events: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in type(self).COMPONENTS:
            return self.get(name)
        return getattr(self._models, name)

    @property
    def wrapped(self) -> Any:
        return self._models

    @property
    def on_device(self) -> list[str]:
        """Components currently placed on the compute device by this wrapper."""
        return list(self._on_device)

    def _fetch(self, name: str) -> Any:
        return self._models.get(name)

    # -- ModelSource -----------------------------------------------------------------------------
    def get(self, name: str) -> Any:
        """Place ``name`` on the compute device (evicting the others under ``"sequential"``)."""
        if self.residency == "sequential":
            self.release(*[n for n in self._on_device if n != name])
        module = self._fetch(name)
        p = first_float_parameter(module)
        if p is not None and p.device != self.device:
            module.to(self.device)
        if name not in self._on_device:
            self._on_device.append(name)
            self.events.append(("use", name))
        return module

    use = get

    def peek(self, name: str) -> Any:
        """The component for its config and dtype, without changing residency (the wrapped source's
        :meth:`peek`: a file-backed source does not load it for this)."""
        return self._models.peek(name)

    def device_dtype(self, name: str) -> tuple[torch.device, torch.dtype]:
        """``(compute device, parameter dtype)`` the component runs with, without moving it; the wrapped
        source answers the dtype (a file-backed one without loading the component)."""
        return self.device, self._models.device_dtype(name)[1]

    def prompt_embeds(self) -> Mapping[str, torch.Tensor] | torch.Tensor:
        return self._models.prompt_embeds()

    def settings(self, name: str) -> dict[str, Any]:
        return self._models.settings(name)

    # -- policy ----------------------------------------------------------------------------------
    def release(self, *names: str) -> None:
        """Move components off the compute device (or drop them with ``drop_after_use``)."""
        freed = False
        for name in names:
            if name not in self._on_device:
                continue
            self._on_device.remove(name)
            unload = getattr(self._models, "unload", None)
            if self.drop_after_use and callable(unload):
                unload(name)
                self.events.append(("drop", name))
            else:
                module = self._fetch(name)
                if isinstance(module, nn.Module) and self.offload_device != self.device:
                    module.to(self.offload_device)
                self.events.append(("offload", name))
            freed = True
        if freed and self.device.type == "cuda":
            torch.cuda.empty_cache()

    def on_stage_done(self, event: str) -> None:
        """Pipeline hook: release what the finished stage no longer needs (per residency)."""
        if self.residency == "resident":
            return
        if self.residency == "sequential":
            self.release(*self._on_device)
            return
        self.release(*OFFLOAD_AFTER.get(event, ()))

    def __repr__(self) -> str:
        return (f"ManagedModels({self._models!r}, device={self.device}, residency={self.residency}, "
                f"on_device={self._on_device})")
