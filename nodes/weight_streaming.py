"""Per-layer weight streaming, so that ComfyUI's model manager can load our models partially (low VRAM).

ComfyUI's ``ModelPatcher.load(lowvram_model_memory=...)`` fills the GPU with the largest layers that fit and
leaves the others on the offload device; it only does that with layers that carry a ``comfy_cast_weights``
attribute (its ``comfy.ops`` classes), whose ``forward`` then fetches the weights to the input's device for
each call (``cast_bias_weight``). A plain ``torch.nn`` layer left behind would make the forward fail, which is
why the pack used to force full loads.

Our models are plain ``torch.nn`` (they also run outside ComfyUI), so instead of rebuilding them with
``comfy.ops`` classes, :func:`make_streamable` gives every *large leaf layer* (any type: Linear, Conv,
our sparse layers) the same contract:

* the attributes ComfyUI looks for (``comfy_cast_weights``, ``weight_function``, ``bias_function``);
* a forward pre-hook that swaps in device copies of the layer's parameters that are not on the compute
  device (applying ComfyUI's ``weight_function`` / ``bias_function`` patches, as ``cast_bias_weight`` does)
  and a forward hook that puts the stored parameters back (also when the forward raises).

Small layers (norms, embeddings, input/output layers: below ``min_elements`` parameters), parameters of
non-leaf modules and all buffers are never streamed: :func:`settle_resident` moves them to the compute
device after each (partial) load. They are a few percent of the weights, and code that reads a model's
device from its first parameter keeps working.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["STREAM_MIN_ELEMENTS", "StreamTarget", "make_streamable", "settle_resident", "streamable_layers"]

#: Leaf layers with at least this many parameter elements are streamable (64k: every attention/MLP
#: projection and convolution of the real models; norms, biases-only and tiny I/O layers stay resident).
STREAM_MIN_ELEMENTS = 1 << 16

_TARGET_ATTR = "_synchuman_stream_target"
_SAVED_ATTR = "_synchuman_stream_saved"


class StreamTarget:
    """The compute device streamed weights go to (shared by all layers of one model) and a counter of
    the weights fetched there (tests and logs)."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.fetched = 0  # parameters fetched per call by the hooks so far (offloaded or patched layers)


def _is_leaf_with_params(m: nn.Module) -> bool:
    if not any(p is not None for p in m._parameters.values()):
        return False
    return not any(True for c in m.children() for _ in c.parameters())


def _numel(m: nn.Module) -> int:
    return sum(p.numel() for p in m._parameters.values() if p is not None)


def streamable_layers(root: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, layer)`` of the layers :func:`make_streamable` equipped."""
    for name, m in root.named_modules():
        if getattr(m, _TARGET_ATTR, None) is not None:
            yield name, m


def _stream_in(m: nn.Module, args: Any) -> None:
    target: StreamTarget = getattr(m, _TARGET_ATTR)
    saved = {}
    for name, p in m._parameters.items():
        if p is None:
            continue
        fns = m.weight_function if name == "weight" else m.bias_function if name == "bias" else ()
        if not (m.comfy_cast_weights or fns or p.device != target.device):
            continue
        w = p.detach().to(target.device, non_blocking=True)
        for f in fns:
            w = f(w)
        saved[name] = p
        m._parameters[name] = w  # a plain tensor for this call only
        target.fetched += 1
    stack = m.__dict__.setdefault(_SAVED_ATTR, [])
    stack.append(saved)


def _stream_out(m: nn.Module, args: Any, output: Any) -> None:
    stack = m.__dict__.get(_SAVED_ATTR)
    if stack:
        for name, p in stack.pop().items():
            m._parameters[name] = p


def make_streamable(root: nn.Module, device: torch.device | str, *,
                    min_elements: int = STREAM_MIN_ELEMENTS) -> StreamTarget:
    """Give the large leaf layers of ``root`` ComfyUI's low-VRAM contract (see the module docstring).
    Idempotent: a second call only updates the target device. Layers that already implement the
    contract (``comfy.ops`` classes) are left alone."""
    for _, m in streamable_layers(root):
        target = getattr(m, _TARGET_ATTR)
        target.device = torch.device(device)
        return target
    target = StreamTarget(device)
    for m in root.modules():
        if hasattr(type(m), "comfy_cast_weights") or not _is_leaf_with_params(m) or _numel(m) < min_elements:
            continue
        m.comfy_cast_weights = False  # ComfyUI sets it True on the layers it leaves offloaded
        m.weight_function = []
        m.bias_function = []
        object.__setattr__(m, _TARGET_ATTR, target)
        m.register_forward_pre_hook(_stream_in)
        m.register_forward_hook(_stream_out, always_call=True)
    return target


@torch.no_grad()
def settle_resident(root: nn.Module, device: torch.device | str) -> int:
    """Move what is never streamed (parameters of layers without the contract, every buffer) to
    ``device``; returns the bytes moved. Call after a partial load."""
    device = torch.device(device)
    moved = 0
    for m in root.modules():
        streamed = hasattr(m, "comfy_cast_weights")
        for group in ((m._buffers,) if streamed else (m._parameters, m._buffers)):
            for name, t in group.items():
                if t is None or t.device == device:
                    continue
                moved += t.numel() * t.element_size()
                if isinstance(t, nn.Parameter):
                    group[name] = nn.Parameter(t.detach().to(device), requires_grad=t.requires_grad)
                else:
                    group[name] = t.to(device)
    return moved
