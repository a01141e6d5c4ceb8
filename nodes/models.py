"""``SYNCHUMAN_MODELS``: one checkpoint folder, its components loaded on first use and handed to ComfyUI's
model manager (one ``ModelPatcher`` per component).

Components are read from disk the first time a node needs them (onto the offload device), then each node
asks ComfyUI to load exactly the components it uses (``load_models_gpu``), so ComfyUI can evict them for
other models and bring them back later. The bundle is a node *output*: ComfyUI's output cache keeps it while
the loader's inputs are unchanged; nothing is stored on node classes.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from synchuman_core.errors import ConfigError

from . import comfy_bridge as bridge

log = logging.getLogger(__name__)

DTYPE_CHOICES = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: Components the official code runs entirely in half precision (the others keep their own mixed dtypes).
HALF_COMPONENTS = ("joint", "vae", "image_encoder", "dinov2")
ALL_COMPONENTS = ("joint", "structure_decoder", "vae", "image_encoder", "dinov2", "slat_flow", "mesh_decoder",
                  "gs_decoder")

#: Which components each step uses.
STEP_COMPONENTS = {
    "conditioning": ("joint", "image_encoder", "vae", "dinov2"),
    "stage1": ("joint", "vae", "structure_decoder"),
    "slat": ("dinov2", "slat_flow"),
    "features": ("dinov2",),
    "mesh": ("mesh_decoder",),
    "gaussians": ("gs_decoder",),
}
STAGE1_ONLY = ("joint", "vae", "image_encoder", "structure_decoder")

#: Rough working memory (bytes) of each step at the official 768 px views, for ``load_models_gpu``.
_STEP_MEMORY = {"conditioning": 2 << 30, "stage1": 4 << 30, "slat": 2 << 30, "features": 2 << 30,
                "mesh": 3 << 30, "gaussians": 2 << 30}


def dtype_plan(choice: str, device: torch.device) -> dict[str, torch.dtype | None]:
    """Per-component constructor dtype for a loader ``dtype`` choice.

    ``auto``: on CUDA the official precision (joint model, VAE and CLIP in fp16, the TRELLIS-style models in
    their own fp16/fp32 mix, DINOv2 fp32); elsewhere fp32 (half precision is slow or unsupported on CPU).
    ``fp16`` / ``bf16``: the four large stage-1 components in that dtype, the others in their official mix.
    ``fp32``: everything fp32 (most memory, closest to a reference run).
    """
    if choice not in DTYPE_CHOICES:
        raise ConfigError(f"dtype must be one of {DTYPE_CHOICES}, got {choice!r}")
    if choice == "auto":
        if torch.device(device).type != "cuda":
            return dict.fromkeys(ALL_COMPONENTS, torch.float32)
        return {n: (torch.float16 if n in ("joint", "vae", "image_encoder") else None) for n in ALL_COMPONENTS}
    dt = _DTYPES[choice]
    if dt == torch.float32:
        return dict.fromkeys(ALL_COMPONENTS, torch.float32)
    return {n: (dt if n in HALF_COMPONENTS else None) for n in ALL_COMPONENTS}


class ModelBundle:
    """The ``SYNCHUMAN_MODELS`` wire (see module docstring)."""

    def __init__(self, folder: Any, dtype: str = "auto") -> None:
        from synchuman_core.io import SyncHumanModels

        self.dtype_choice = dtype
        self.models = SyncHumanModels(folder, device=bridge.offload_device(),
                                      dtypes=dtype_plan(dtype, bridge.load_device()))
        self.folder = self.models.folder
        self._patchers: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"ModelBundle({self.folder.describe()!r}, dtype={self.dtype_choice}, loaded={sorted(self._patchers)})"

    def patcher(self, name: str) -> Any:
        if name not in self._patchers:
            self._patchers[name] = bridge.make_patcher(self.models.get(name))
        return self._patchers[name]

    def load(self, step: str, view_size: int = 768) -> Any:
        """Read (first time) and load onto the compute device the components of ``step``; returns the
        ``SyncHumanModels`` the core pipeline functions take."""
        names = STEP_COMPONENTS[step]
        scale = (max(int(view_size), 1) / 768.0) ** 2 if step in ("conditioning", "stage1") else 1.0
        bridge.load_patchers([self.patcher(n) for n in names], int(_STEP_MEMORY[step] * scale))
        return self.models

    def unload(self, names: tuple[str, ...] = STAGE1_ONLY) -> None:
        """Offload components (default: those only stage 1 needs) so stage 2 has the memory."""
        bridge.unload_patchers([self._patchers[n] for n in names if n in self._patchers])

    def compute_device(self) -> torch.device:
        return bridge.load_device()
