"""``SYNCHUMAN_MODELS``: one checkpoint folder, its components loaded on first use and handed to ComfyUI's
model manager (one ``ModelPatcher`` per component); a :class:`~synchuman_core.model_source.ModelSource`, so the
nodes call the library's pipeline stage functions with it directly.

Components are read from disk the first time a node needs them (onto the offload device), then each node
asks ComfyUI to load exactly the components its pipeline steps use (``load_models_gpu``; the steps and their
components come from the registry's component table), so ComfyUI can evict them for other models and bring
them back later. The dtypes are the library's one plan (:func:`synchuman_core.memory.dtype_plan`); the other
speed/memory settings are the ``high`` memory tier's (:func:`synchuman_core.memory.stage_kwargs`). The bundle
is a node *output*: ComfyUI's output cache keeps it while the loader's inputs are unchanged; nothing is stored
on node classes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from synchuman_core.errors import ConfigError
from synchuman_core.io.registry import COMPONENTS, STEPS, components_for
from synchuman_core.memory import PRECISIONS, dtype_plan, get_tier, stage_kwargs

from . import comfy_bridge as bridge

log = logging.getLogger(__name__)

DTYPE_CHOICES = PRECISIONS

#: Components only stage 1 uses (offloaded before stage 2 when the structured-latent sampler asks).
STAGE1_ONLY = tuple(n for n in components_for(*STEPS)
                    if all(STEPS[s] in ("conditioning", "stage1") for s in COMPONENTS[n].steps))

#: Rough working memory (bytes) of each pipeline step at the official 768 px views, for ``load_models_gpu``.
_STEP_MEMORY = {"conditioning": 2 << 30, "stage1_sampling": 4 << 30, "stage1_decode": 2 << 30,
                "stage2_slat": 2 << 30, "stage2_features": 2 << 30, "stage2_mesh": 3 << 30,
                "stage2_gaussians": 2 << 30}
_VIEW_SIZED = ("conditioning", "stage1_sampling", "stage1_decode")


class ModelBundle:
    """The ``SYNCHUMAN_MODELS`` wire (see module docstring); implements ``ModelSource``."""

    def __init__(self, folder: Any, dtype: str = "auto") -> None:
        from synchuman_core.io import SyncHumanModels

        if dtype not in DTYPE_CHOICES:
            raise ConfigError(f"dtype must be one of {DTYPE_CHOICES}, got {dtype!r}")
        self.dtype_choice = dtype
        self.tier = get_tier("high", precision=dtype)
        self.models = SyncHumanModels(folder, device=bridge.offload_device(),
                                      dtypes=dtype_plan(dtype, bridge.load_device()))
        self.folder = self.models.folder
        self._patchers: dict[str, Any] = {}
        self._memory = 0

    def __repr__(self) -> str:
        return f"ModelBundle({self.folder.describe()!r}, dtype={self.dtype_choice}, loaded={sorted(self._patchers)})"

    def patcher(self, name: str) -> Any:
        if name not in self._patchers:
            self._patchers[name] = bridge.make_patcher(self.models.get(name))
        return self._patchers[name]

    def stage_kwargs(self, stage: str) -> dict[str, Any]:
        """Keyword arguments of pipeline stage ``stage`` for this bundle's tier (VAE slicing ...)."""
        return stage_kwargs(self.tier, stage)

    def load(self, *steps: str, view_size: int = 768) -> ModelBundle:
        """Read (first time) and load onto the compute device the components of the pipeline ``steps``
        (names of :data:`synchuman_core.io.registry.STEPS`) in one ``load_models_gpu`` call; returns self."""
        scale = (max(int(view_size), 1) / 768.0) ** 2
        self._memory = int(sum(_STEP_MEMORY[s] * (scale if s in _VIEW_SIZED else 1.0) for s in steps))
        patchers = [self.patcher(n) for n in components_for(*steps)]
        if any(STEPS[s] not in ("conditioning", "stage1") for s in steps):
            # stage 2 on a short card: the stage-1 models leave first (not some other model of the graph)
            wanted = self._memory + sum(p.model_size() for p in patchers if not bridge.is_loaded(p))
            bridge.unload_if_short([self._patchers[n] for n in STAGE1_ONLY if n in self._patchers], wanted)
        bridge.load_patchers(patchers, self._memory)
        return self

    def unload(self, names: tuple[str, ...] = STAGE1_ONLY) -> None:
        """Offload components (default: those only stage 1 needs) so stage 2 has the memory."""
        bridge.unload_patchers([self._patchers[n] for n in names if n in self._patchers])

    def compute_device(self) -> torch.device:
        return bridge.load_device()

    # -- ModelSource -----------------------------------------------------------------------------
    def get(self, name: str) -> torch.nn.Module:
        """The component, loaded onto the compute device by ComfyUI's model manager (a no-op when the node's
        :meth:`load` already placed it)."""
        patcher = self.patcher(name)
        if not bridge.is_loaded(patcher):
            bridge.load_patchers([patcher], self._memory)
        return self.models.get(name)

    def peek(self, name: str) -> torch.nn.Module:
        return self.models.peek(name)

    def device_dtype(self, name: str) -> tuple[torch.device, torch.dtype]:
        return bridge.load_device(), self.models.device_dtype(name)[1]

    def prompt_embeds(self) -> Mapping[str, torch.Tensor] | torch.Tensor:
        return self.models.prompt_embeds()

    def settings(self, name: str) -> dict[str, Any]:
        return self.models.settings(name)
