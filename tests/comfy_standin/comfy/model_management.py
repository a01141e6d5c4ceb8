"""Stand-in of ``comfy.model_management`` (CPU only)."""

from __future__ import annotations

import torch


class InterruptProcessingException(Exception):
    pass


class OOM_EXCEPTION(torch.OutOfMemoryError):  # noqa: N801 (real name)
    pass


_interrupt = False
loaded_models: list = []


def interrupt_current_processing(value: bool = True) -> None:
    global _interrupt
    _interrupt = value


def processing_interrupted() -> bool:
    return _interrupt


def throw_exception_if_processing_interrupted() -> None:
    global _interrupt
    if _interrupt:
        _interrupt = False
        raise InterruptProcessingException()


def get_torch_device() -> torch.device:
    return torch.device("cpu")


def intermediate_device() -> torch.device:
    return torch.device("cpu")


def unet_offload_device() -> torch.device:
    return torch.device("cpu")


def text_encoder_offload_device() -> torch.device:
    return torch.device("cpu")


def vae_dtype(*a, **k):
    return torch.float32


def should_use_fp16(*a, **k) -> bool:
    return False


def should_use_bf16(*a, **k) -> bool:
    return False


def get_free_memory(dev=None, torch_free_too=False):
    return (8 << 30, 8 << 30) if torch_free_too else 8 << 30


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False):
    for m in models:
        if m not in loaded_models:
            loaded_models.append(m)
        m.patch_model(device_to=m.load_device)


def free_memory(memory_required, device, keep_loaded=()):
    for m in list(loaded_models):
        if m not in keep_loaded:
            m.unpatch_model(m.offload_device)
            loaded_models.remove(m)


def unload_all_models():
    free_memory(1 << 60, get_torch_device())


def soft_empty_cache(force=False):
    return None


def cleanup_models():
    return None
