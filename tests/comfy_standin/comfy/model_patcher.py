"""Stand-in of ``comfy.model_patcher.ModelPatcher`` (0.8.0): load/offload by moving the whole module."""

from __future__ import annotations

import torch

from . import model_management


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.size = size
        self.model = model
        # as in ComfyUI: a module without a ``device`` attribute gets one
        if not hasattr(self.model, "device"):
            self.model.device = offload_device
        elif self.model.device is None:
            self.model.device = offload_device
        self.load_device = load_device
        self.offload_device = offload_device
        self.weight_inplace_update = weight_inplace_update
        self.parent = None
        if not hasattr(self.model, "model_loaded_weight_memory"):
            self.model.model_loaded_weight_memory = 0
        if not hasattr(self.model, "model_lowvram"):
            self.model.model_lowvram = False

    def model_size(self) -> int:
        if self.size > 0:
            return self.size
        self.size = model_management.module_size(self.model)
        return self.size

    def loaded_size(self) -> int:
        return self.model.model_loaded_weight_memory

    def model_dtype(self):
        for p in self.model.parameters():
            return p.dtype
        return torch.float32

    def current_loaded_device(self):
        for p in self.model.parameters():
            return p.device
        return self.offload_device

    def load(self, device_to=None, lowvram_model_memory=0, force_patch_weights=False, full_load=False):
        if device_to is not None:
            self.model.to(device_to)
        self.model.model_loaded_weight_memory = self.model_size()

    def patch_model(self, device_to=None, lowvram_model_memory=0, load_weights=True, force_patch_weights=False):
        self.load(device_to)
        return self.model

    def unpatch_model(self, device_to=None, unpatch_weights=True):
        if device_to is not None:
            self.model.to(device_to)
            self.model.device = device_to
        self.model.model_loaded_weight_memory = 0

    def detach(self, unpatch_all=True):
        self.unpatch_model(self.offload_device, unpatch_weights=unpatch_all)
        return self.model

    def clone(self):
        n = ModelPatcher(self.model, self.load_device, self.offload_device, self.size, self.weight_inplace_update)
        n.parent = self
        return n

    def is_clone(self, other) -> bool:
        return hasattr(other, "model") and self.model is other.model
