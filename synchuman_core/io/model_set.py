"""The models of one SyncHuman folder, each loaded on first use: the library's model source.

:class:`SyncHumanModels` implements :class:`synchuman_core.model_source.ModelSource`, the seam the pipeline
functions take, outside ComfyUI (the CLI, the batch runner, tests). It sits above :mod:`.loading` (one component), :mod:`.verify` (the folder check) and
:mod:`.prompt_cache` (the view-prompt embeddings), so none of those needs to know it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..model_source import module_device_dtype
from .layout import ModelFolder, resolve_model_folder
from .loading import component_skeleton, load_component, read_component_json
from .prompt_cache import load_prompt_embeds
from .registry import COMPONENTS
from .verify import VerifyReport, verify_model_folder

__all__ = ["MODEL_NAMES", "SyncHumanModels"]

#: Every component that is a model (not a settings file), in registry order.
MODEL_NAMES = tuple(n for n, s in COMPONENTS.items() if s.is_module)


class SyncHumanModels:
    """The components of one SyncHuman folder, each loaded on first access.

    ``models.get("joint")`` (or ``models.joint``) loads and returns a component; ``peek(name)`` returns it
    without any placement policy (this class has none: components stay where they were loaded);
    ``device_dtype(name)`` is the device and parameter dtype it runs with. ``dtypes`` maps a component to
    its constructor dtype (``None``: the official per-parameter mix), ``dtype`` is the fallback.
    ``unload(name)`` drops one (or all); ``loaded`` lists them.
    """

    COMPONENTS = MODEL_NAMES

    def __init__(
        self,
        folder: str | os.PathLike | ModelFolder,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        dtypes: Mapping[str, torch.dtype | None] | None = None,
    ) -> None:
        self.folder = resolve_model_folder(folder)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.dtypes = dict(dtypes or {})
        unknown = sorted(set(self.dtypes) - set(MODEL_NAMES))
        if unknown:
            raise ConfigError(f"dtypes names unknown components {unknown}; known: {', '.join(MODEL_NAMES)}")
        self._modules: dict[str, nn.Module] = {}
        self._skeletons: dict[str, nn.Module] = {}  # meta-device builds for peek()
        self._prompts: dict[str, torch.Tensor] | None = None

    # -- components ------------------------------------------------------------------------------
    def _dtype_of(self, name: str) -> torch.dtype | None:
        """The constructor dtype of a known component (``ConfigError`` for an unknown name)."""
        if name not in MODEL_NAMES:
            raise ConfigError(f"unknown component {name!r}; known: {', '.join(MODEL_NAMES)}")
        return self.dtypes.get(name, self.dtype)

    def get(self, name: str) -> nn.Module:
        if name not in self._modules:
            self._modules[name] = load_component(name, self.folder, self.device, self._dtype_of(name))
        return self._modules[name]

    def peek(self, name: str) -> nn.Module:
        """The component for its config and dtype: the loaded module, or, when it is not loaded, a weightless
        meta-device build of its config (the preprocessing reads the joint model's view size; loading it
        there would hold its 3-7 GB from the first stage on)."""
        if name in self._modules:
            return self._modules[name]
        if name not in self._skeletons:
            self._skeletons[name] = component_skeleton(name, self.folder, self._dtype_of(name))
        return self._skeletons[name]

    def device_dtype(self, name: str) -> tuple[torch.device, torch.dtype]:
        """``(device, parameter dtype)`` the component runs with, read from :meth:`peek` (a component not
        loaded yet is not loaded for this)."""
        return self.device, module_device_dtype(self.peek(name))[1]

    def __getattr__(self, name: str) -> nn.Module:
        if name.startswith("_") or name not in MODEL_NAMES:
            raise AttributeError(name)
        return self.get(name)

    @property
    def loaded(self) -> list[str]:
        return list(self._modules)

    def unload(self, name: str | None = None) -> None:
        """Forget one component (or all) so that its memory can be freed."""
        if name is None:
            self._modules.clear()
            self._prompts = None
        else:
            self._modules.pop(name, None)

    # -- files and settings ----------------------------------------------------------------------
    def check(self, names: Iterable[str] | None = None) -> VerifyReport:
        """Verify the folder's files for ``names`` (default: everything needed to run); see :mod:`.verify`."""
        return verify_model_folder(self.folder, names)

    def prompt_embeds(self) -> dict[str, torch.Tensor]:
        """The stage-1 view-prompt embeddings ``{"normal", "color"}`` ``[5, 77, D]`` (see :mod:`.prompt_cache`)."""
        if self._prompts is None:
            self._prompts = load_prompt_embeds(self.folder, self.device)
        return self._prompts

    def settings(self, name: str) -> dict[str, Any]:
        """A settings file's contents (``pipeline_stage1``, ``pipeline_stage2``, ``feature_extractor``)."""
        return read_component_json(name, self.folder)

    def __repr__(self) -> str:
        return f"SyncHumanModels({self.folder.describe()!r}, device={self.device}, loaded={self.loaded})"
