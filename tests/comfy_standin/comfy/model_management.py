"""Stand-in of ``comfy.model_management`` (ComfyUI 0.8.0) for a CPU-only CI.

Same names and call shapes as the real module for what a node pack uses: devices, the loaded-model list
that ``load_models_gpu`` fills and ``free_memory`` / ``unload_all_models`` empty (moving each model to its
offload device), the interrupt flag, and ``OOM_EXCEPTION`` (``torch.cuda.OutOfMemoryError``).
``DEVICE`` can be pointed at another device by a test to check that nothing assumes CPU.

Low-VRAM loads as in the host: ``load_models_gpu`` (unless ``force_full_load``, a CPU load device or
``vram_state`` not LOW/NORMAL) gives each model the weight budget
``max(0, free - minimum_memory_required, min(free * MIN_WEIGHT_MEMORY_RATIO, free - minimum_inference_memory()))``
and ``ModelPatcher.load`` keeps on the offload device the layers with ``comfy_cast_weights`` that do not fit.
Tests set ``FREE_MEMORY`` / ``TOTAL_MEMORY`` (bytes) to play a small card; on this CPU-only stand-in
``LOAD_DEVICE_IS_GPU = True`` makes the CPU count as a GPU for these decisions.
"""

from __future__ import annotations

import threading
from enum import Enum

import torch

DEVICE = torch.device("cpu")

try:
    OOM_EXCEPTION = torch.cuda.OutOfMemoryError
except AttributeError:  # pragma: no cover - as in ComfyUI
    OOM_EXCEPTION = Exception


class InterruptProcessingException(Exception):
    pass


interrupt_processing_mutex = threading.RLock()
interrupt_processing = False


def interrupt_current_processing(value: bool = True) -> None:
    global interrupt_processing
    with interrupt_processing_mutex:
        interrupt_processing = value


def processing_interrupted() -> bool:
    with interrupt_processing_mutex:
        return interrupt_processing


def throw_exception_if_processing_interrupted() -> None:
    global interrupt_processing
    with interrupt_processing_mutex:
        if interrupt_processing:
            interrupt_processing = False
            raise InterruptProcessingException()


# ------------------------------------------------------------------------------------------------ devices


def get_torch_device() -> torch.device:
    return DEVICE


def intermediate_device() -> torch.device:
    return torch.device("cpu")


def unet_offload_device() -> torch.device:
    return torch.device("cpu")


def vae_device() -> torch.device:
    return DEVICE


def vae_offload_device() -> torch.device:
    return torch.device("cpu")


def text_encoder_device() -> torch.device:
    return DEVICE


def text_encoder_offload_device() -> torch.device:
    return torch.device("cpu")


LOAD_DEVICE_IS_GPU = False  # test hook: treat the (CPU) load device as a GPU for low-VRAM decisions


def is_device_cpu(device) -> bool:
    return torch.device(device).type == "cpu" and not LOAD_DEVICE_IS_GPU


def is_device_cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def cpu_mode() -> bool:
    return DEVICE.type == "cpu"


def should_use_fp16(device=None, model_params=0, prioritize_performance=True, manual_cast=False) -> bool:
    return device is not None and torch.device(device).type == "cuda"


def should_use_bf16(device=None, model_params=0, prioritize_performance=True, manual_cast=False) -> bool:
    return False


class VRAMState(Enum):
    DISABLED = 0
    NO_VRAM = 1
    LOW_VRAM = 2
    NORMAL_VRAM = 3
    HIGH_VRAM = 4
    SHARED = 5


vram_state = VRAMState.NORMAL_VRAM
lowvram_available = True
MIN_WEIGHT_MEMORY_RATIO = 0.0  # the host's value on NVIDIA (0.4 elsewhere)
EXTRA_RESERVED_VRAM = 400 * 1024 * 1024
FREE_MEMORY = 8 << 30  # test hooks (bytes)
TOTAL_MEMORY = 16 << 30


def get_free_memory(dev=None, torch_free_too=False):
    free = FREE_MEMORY
    return (free, free) if torch_free_too else free


def get_total_memory(dev=None, torch_total_too=False):
    total = TOTAL_MEMORY
    return (total, total) if torch_total_too else total


def extra_reserved_memory() -> int:
    return EXTRA_RESERVED_VRAM


def minimum_inference_memory() -> float:
    return (1024 * 1024 * 1024) * 0.8 + extra_reserved_memory()


def module_size(module: torch.nn.Module) -> int:
    return sum(t.nelement() * t.element_size() for t in module.state_dict().values())


# ------------------------------------------------------------------------------------------------ models


class LoadedModel:
    def __init__(self, model):
        self.model = model
        self.device = model.load_device
        self.currently_used = True

    def model_memory(self) -> int:
        return self.model.model_size()

    def model_loaded_memory(self) -> int:
        return self.model.loaded_size()

    def model_load(self, lowvram_model_memory=0, force_patch_weights=False):
        full = lowvram_model_memory == 0
        self.model.load(self.device, lowvram_model_memory=0 if full else lowvram_model_memory,
                        force_patch_weights=force_patch_weights, full_load=full)
        return self.model.model

    def model_unload(self) -> bool:
        self.model.detach(unpatch_all=True)
        return True


current_loaded_models: list[LoadedModel] = []
load_calls: list[dict] = []  # test hook: every load_models_gpu call (models, memory, force_full_load)


def loaded_models(only_currently_used: bool = False) -> list:
    return [m.model for m in current_loaded_models if m.currently_used or not only_currently_used]


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False):
    inference_memory = minimum_inference_memory()
    extra_mem = max(inference_memory, memory_required + extra_reserved_memory())
    if minimum_memory_required is None:
        minimum_memory_required = extra_mem
    else:
        minimum_memory_required = max(inference_memory, minimum_memory_required + extra_reserved_memory())
    call = {"models": list(models), "memory_required": memory_required, "force_full_load": force_full_load,
            "lowvram_model_memory": {}}
    load_calls.append(call)
    for m in models:
        for lm in current_loaded_models:
            if lm.model is m:
                break
        else:
            lm = LoadedModel(m)
            current_loaded_models.insert(0, lm)
        state = VRAMState.DISABLED if is_device_cpu(m.load_device) else vram_state
        lowvram_model_memory = 0
        if lowvram_available and state in (VRAMState.LOW_VRAM, VRAMState.NORMAL_VRAM) and not force_full_load:
            loaded = lm.model_loaded_memory()
            free = get_free_memory(m.load_device) + loaded
            lowvram_model_memory = max(0, free - minimum_memory_required,
                                       min(free * MIN_WEIGHT_MEMORY_RATIO, free - minimum_inference_memory()))
            lowvram_model_memory -= loaded
            if lowvram_model_memory == 0:
                lowvram_model_memory = 0.1
        if state == VRAMState.NO_VRAM:
            lowvram_model_memory = 0.1
        call["lowvram_model_memory"][id(m)] = lowvram_model_memory
        lm.model_load(lowvram_model_memory, force_patch_weights=force_patch_weights)


def load_model_gpu(model):
    return load_models_gpu([model])


def free_memory(memory_required, device, keep_loaded=()):
    unloaded = []
    for lm in list(current_loaded_models):
        if lm.model not in keep_loaded:
            lm.model_unload()
            current_loaded_models.remove(lm)
            unloaded.append(lm)
    return unloaded


def unload_all_models() -> None:
    free_memory(1e30, get_torch_device())


def soft_empty_cache(force: bool = False) -> None:
    return None


def cleanup_models() -> None:
    return None


def cleanup_models_gc() -> None:
    return None
