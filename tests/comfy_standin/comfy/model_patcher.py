"""Stand-in of ``comfy.model_patcher.ModelPatcher`` (0.8.0): full loads move the whole module; a load with a
weight budget (``lowvram_model_memory``) walks the layers largest first, as the host does: layers that fit are
moved to the load device, layers with ``comfy_cast_weights`` that do not fit stay on the offload device with
``comfy_cast_weights = True`` (their ``forward`` fetches the weights per call), layers without it that do not
fit are left where they are (which breaks a plain ``torch.nn`` forward, as in the host)."""

from __future__ import annotations

import torch

from . import model_management


def wipe_lowvram_weight(m):
    if hasattr(m, "prev_comfy_cast_weights"):
        m.comfy_cast_weights = m.prev_comfy_cast_weights
        del m.prev_comfy_cast_weights
    if hasattr(m, "weight_function"):
        m.weight_function = []
    if hasattr(m, "bias_function"):
        m.bias_function = []


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

    def _load_list(self):
        loading = []
        for n, m in self.model.named_modules():
            params = [name for name, _ in m.named_parameters(recurse=False)]
            skip = any(name not in params for name, _ in m.named_parameters(recurse=True))  # non-leaf weights
            if not skip and (hasattr(m, "comfy_cast_weights") or params):
                loading.append((model_management.module_size(m), n, m, params))
        return loading

    def load(self, device_to=None, lowvram_model_memory=0, force_patch_weights=False, full_load=False):
        if full_load or not lowvram_model_memory:
            for _, m in self.model.named_modules():
                wipe_lowvram_weight(m)
            if device_to is not None:
                self.model.to(device_to)
            self.model.model_loaded_weight_memory = self.model_size()
            self.model.model_lowvram = False
            return
        loading = sorted(self._load_list(), key=lambda x: x[0], reverse=True)
        mem_counter = 0
        lowvram_counter = 0
        for module_mem, _n, m, _params in loading:
            fits = mem_counter + module_mem < lowvram_model_memory
            if hasattr(m, "comfy_cast_weights") and not fits:
                lowvram_counter += 1
                if not hasattr(m, "prev_comfy_cast_weights"):
                    m.prev_comfy_cast_weights = m.comfy_cast_weights
                    m.comfy_cast_weights = True
                continue
            if hasattr(m, "comfy_cast_weights"):
                wipe_lowvram_weight(m)
            if fits:
                m.to(device_to)
                mem_counter += module_mem
        self.model.model_lowvram = lowvram_counter > 0
        self.model.lowvram_counter = lowvram_counter
        self.model.device = device_to
        self.model.model_loaded_weight_memory = mem_counter

    def patch_model(self, device_to=None, lowvram_model_memory=0, load_weights=True, force_patch_weights=False):
        self.load(device_to)
        return self.model

    def unpatch_model(self, device_to=None, unpatch_weights=True):
        if getattr(self.model, "model_lowvram", False):
            for _, m in self.model.named_modules():
                wipe_lowvram_weight(m)
            self.model.model_lowvram = False
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
