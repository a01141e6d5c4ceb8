"""Stand-in of ``comfy.model_patcher.ModelPatcher`` (device moves only)."""

from __future__ import annotations

import torch


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.model = model
        self.load_device = torch.device(load_device)
        self.offload_device = torch.device(offload_device)
        self.size = size or sum(p.numel() * p.element_size() for p in model.parameters())

    def model_size(self):
        return self.size

    def loaded_size(self):
        return self.size

    def patch_model(self, device_to=None, *a, **k):
        if device_to is not None:
            self.model.to(device_to)
        return self.model

    def unpatch_model(self, device_to=None, *a, **k):
        if device_to is not None:
            self.model.to(device_to)

    def clone(self):
        return ModelPatcher(self.model, self.load_device, self.offload_device, self.size)

    def is_clone(self, other):
        return getattr(other, "model", None) is self.model
