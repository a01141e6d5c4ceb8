"""The only place the node pack talks to ComfyUI services: model folders, devices, memory, progress,
interrupts and out-of-memory errors. Nodes call these helpers; ``synchuman_core`` never sees ComfyUI.

Nothing here runs at import time: the model folder is registered by :func:`register_model_folder`
(called from ``comfy_entrypoint`` and, idempotently, wherever a folder is looked up).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import comfy.model_management as mm
import comfy.utils
import folder_paths
import torch

from .weight_streaming import make_streamable, settle_resident

log = logging.getLogger(__name__)

MODEL_FOLDER_KEY = "synchuman"


# ------------------------------------------------------------------------------------------- model folders


def register_model_folder() -> str:
    """Register ``<ComfyUI>/models/synchuman`` under the key ``synchuman`` (idempotent); returns its path.

    Folders a user adds in ``extra_model_paths.yaml`` (key ``synchuman``) are kept and searched too.
    """
    default = os.path.join(folder_paths.models_dir, MODEL_FOLDER_KEY)
    known = folder_paths.folder_names_and_paths.get(MODEL_FOLDER_KEY)  # get_folder_paths raises on a new key
    if known is None or default not in known[0]:
        folder_paths.add_model_folder_path(MODEL_FOLDER_KEY, default, is_default=True)
    return default


def model_roots() -> list[str]:
    """Every folder registered under ``synchuman`` (the default one first)."""
    register_model_folder()
    return list(folder_paths.get_folder_paths(MODEL_FOLDER_KEY))


def default_model_root() -> str:
    return register_model_folder()


# ------------------------------------------------------------------------------------------- devices


def load_device() -> torch.device:
    return mm.get_torch_device()


def offload_device() -> torch.device:
    return mm.unet_offload_device()


def intermediate_device() -> torch.device:
    """Where node outputs live (CPU unless ComfyUI runs with ``--gpu-only``)."""
    return mm.intermediate_device()


# ------------------------------------------------------------------------------------------- progress


def throw_if_interrupted() -> None:
    mm.throw_exception_if_processing_interrupted()


def step_callback(total: int) -> Callable[..., None]:
    """``callback(step, total, x)`` for the core samplers: advances a ComfyUI progress bar (the bar's hook is
    where ``POST /interrupt`` takes effect) and checks for interruption."""
    bar = comfy.utils.ProgressBar(max(int(total), 1))

    def cb(step: int, total_: int | None = None, *_args: Any, **_kwargs: Any) -> None:
        bar.update_absolute(int(step), int(total_) if total_ else None)
        mm.throw_exception_if_processing_interrupted()

    return cb


def fraction_callback(resolution: int = 100) -> Callable[[str, float], None]:
    """``progress(stage, fraction)`` for the exporter: a bar of ``resolution`` ticks, interrupt checks."""
    bar = comfy.utils.ProgressBar(resolution)

    def cb(_stage: str, fraction: float) -> None:
        bar.update_absolute(int(round(max(0.0, min(1.0, float(fraction))) * resolution)))
        mm.throw_exception_if_processing_interrupted()

    return cb


# ------------------------------------------------------------------------------------------- memory


class ManagedModule(torch.nn.Module):
    """Holder of one component for ``ModelPatcher``.

    ComfyUI's ``ModelPatcher`` assigns ``model.device`` (and other bookkeeping attributes) when it loads and
    offloads; diffusers, transformers and our DINOv2 expose ``device`` as a read-only property, so the
    patcher gets this plain holder and the component is its child (same parameters, moved together).
    """

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module


def make_patcher(module: torch.nn.Module):
    """Wrap a module so that ComfyUI's model manager can load (fully or, on a low-VRAM card, partially),
    offload and evict it. Its large layers get ComfyUI's per-layer cast contract
    (:func:`nodes.weight_streaming.make_streamable`), so a partial load streams the layers left on the
    offload device instead of failing."""
    import comfy.model_patcher

    make_streamable(module, load_device())
    return comfy.model_patcher.ModelPatcher(ManagedModule(module), load_device=load_device(),
                                            offload_device=offload_device())


def load_patchers(patchers: Iterable[Any], memory_required: int = 0, *, partial: bool = True) -> None:
    """``load_models_gpu``: ComfyUI decides from the free memory whether each model loads completely or
    partially (``partial=False`` forces full loads). After a partial load the small never-streamed weights
    and buffers are moved to the compute device (:func:`nodes.weight_streaming.settle_resident`)."""
    patchers = list(patchers)
    if not patchers:
        return
    mm.load_models_gpu(patchers, memory_required=int(memory_required), force_full_load=not partial)
    for p in patchers:
        if getattr(p.model, "model_lowvram", False):
            moved = settle_resident(p.model, p.load_device)
            log.info("SyncHuman: %s loaded partially (weights streamed per layer; %.1f MiB kept resident)",
                     type(p.model.module).__name__ if hasattr(p.model, "module") else type(p.model).__name__,
                     moved / 2**20)


def is_partially_loaded(patcher: Any) -> bool:
    """True when ComfyUI left some of the model's layers on the offload device (low-VRAM load)."""
    return bool(getattr(patcher.model, "model_lowvram", False))


def unload_patchers(patchers: Iterable[Any]) -> None:
    """Offload these models now (as ComfyUI does when it needs their memory) and forget them as loaded."""
    wanted = {id(p) for p in patchers}
    for lm in list(getattr(mm, "current_loaded_models", [])):
        if id(getattr(lm, "model", None)) in wanted:
            lm.model_unload()
            mm.current_loaded_models.remove(lm)
    mm.soft_empty_cache()


def is_loaded(patcher: Any) -> bool:
    """Whether ComfyUI's model manager holds this model as loaded right now (fully or partially)."""
    return any(m is patcher for m in mm.loaded_models())


def free_memory_bytes() -> int:
    """Free memory on the compute device as ComfyUI counts it (its cache included)."""
    return int(mm.get_free_memory(load_device()))


def memory_is_short(required: int) -> bool:
    """True when the compute device has less than ``required`` bytes free (never on a CPU device)."""
    dev = load_device()
    return not mm.is_device_cpu(dev) and free_memory_bytes() < int(required)


def unload_if_short(patchers: Iterable[Any], required: int) -> bool:
    """Offload ``patchers`` (e.g. the stage-1 models before stage 2) when less than ``required`` bytes are
    free on the compute device; returns whether it did."""
    patchers = list(patchers)
    if not patchers or not memory_is_short(required):
        return False
    log.info("SyncHuman: %.1f GiB free, %.1f GiB wanted: offloading %d models", free_memory_bytes() / 2**30,
             required / 2**30, len(patchers))
    unload_patchers(patchers)
    return True


class SyncHumanOutOfMemoryError(torch.OutOfMemoryError):
    """Out of memory, with the setting that lowers it. A ``torch.OutOfMemoryError``, so ComfyUI still adds
    its own tip and unloads every model after the failed prompt."""


@contextmanager
def oom_hint(stage: str, hints: str) -> Iterator[None]:
    """Re-raise an out-of-memory error inside ``stage`` with what to change (``hints``)."""
    try:
        yield
    except mm.OOM_EXCEPTION as e:
        if isinstance(e, SyncHumanOutOfMemoryError):
            raise
        mm.soft_empty_cache()
        raise SyncHumanOutOfMemoryError(
            f"SyncHuman ran out of memory in {stage} on {load_device()}. To use less memory: {hints}. "
            f"(original error: {str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from e
