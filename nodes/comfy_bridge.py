"""The only place the node pack talks to ComfyUI services: devices, memory, progress, interrupts,
model folders. Nodes call these helpers; ``synchuman_core`` never sees ComfyUI."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch

import comfy.model_management as mm
import comfy.utils
import folder_paths

log = logging.getLogger(__name__)

MODEL_FOLDER_KEY = "synchuman"


def register_model_folder() -> str:
    """Register ``models/synchuman`` with ComfyUI (idempotent); returns the default path."""
    default = os.path.join(folder_paths.models_dir, MODEL_FOLDER_KEY)
    if default not in folder_paths.get_folder_paths(MODEL_FOLDER_KEY):
        folder_paths.add_model_folder_path(MODEL_FOLDER_KEY, default, is_default=True)
    return default


def model_roots() -> list[str]:
    register_model_folder()
    return [p for p in folder_paths.get_folder_paths(MODEL_FOLDER_KEY)]


def load_device() -> torch.device:
    return mm.get_torch_device()


def offload_device() -> torch.device:
    return mm.unet_offload_device()


def intermediate_device() -> torch.device:
    return mm.intermediate_device()


def throw_if_interrupted() -> None:
    mm.throw_exception_if_processing_interrupted()


def progress_callback(total: int) -> Callable[..., None]:
    """A ``callback(step, total, *_)`` for core loops: updates a ComfyUI progress bar (which is also
    where an interrupt takes effect) and checks for interruption."""
    bar = comfy.utils.ProgressBar(total)

    def cb(step: int, total_: int | None = None, *args: Any, **kwargs: Any) -> None:
        bar.update_absolute(int(step), int(total_) if total_ else None)
        mm.throw_exception_if_processing_interrupted()

    return cb


class ManagedModule:
    """Wrap a torch module in a ``ModelPatcher`` so ComfyUI can move, offload and free it."""

    def __init__(self, module: torch.nn.Module):
        import comfy.model_patcher

        self.module = module
        self.patcher = comfy.model_patcher.ModelPatcher(module, load_device=load_device(), offload_device=offload_device())

    def load(self, memory_required: int = 0) -> torch.nn.Module:
        mm.load_models_gpu([self.patcher], memory_required=memory_required)
        return self.module

    def offload(self) -> None:
        self.patcher.unpatch_model(self.patcher.offload_device)
        mm.soft_empty_cache()
