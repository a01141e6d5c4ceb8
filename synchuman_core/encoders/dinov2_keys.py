"""DINOv2 state-dict keys: transformers ``Dinov2WithRegistersModel`` names <-> the torch.hub names of
:class:`synchuman_core.encoders.dinov2.DINOv2`.

The hub keys (``blocks.{i}.attn.qkv``, ``ls1.gamma``, ``pos_embed`` ...) are the ones the official code loads;
the transformers checkpoint ``facebook/dinov2-with-registers-large`` stores the same tensors with separate
q/k/v projections and other names (transformers 4.x and 5.x spell the attention differently).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ..errors import CheckpointError

__all__ = ["convert_dinov2_state_dict", "hf_to_hub_keys", "hub_to_hf_keys"]


_HF_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")

# transformers (per-layer suffix) -> hub (per-block suffix); attention q/k/v handled separately.
_HF_LAYER_RENAMES = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
    # transformers 5 names / 4.x names of the attention output projection
    "attention.o_proj.weight": "attn.proj.weight",
    "attention.o_proj.bias": "attn.proj.bias",
    "attention.output.dense.weight": "attn.proj.weight",
    "attention.output.dense.bias": "attn.proj.bias",
}
_HF_QKV = {
    # suffix -> (q|k|v index, weight|bias)
    "attention.q_proj": 0,
    "attention.k_proj": 1,
    "attention.v_proj": 2,
    "attention.attention.query": 0,
    "attention.attention.key": 1,
    "attention.attention.value": 2,
}
_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.mask_token": "mask_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.register_tokens": "register_tokens",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}


def _strip_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a common model prefix (``dinov2_with_registers.`` / ``dinov2.`` / ``model.``) if every key has it."""
    for prefix in ("dinov2_with_registers.", "dinov2.", "model.", "backbone."):
        if sd and all(k.startswith(prefix) for k in sd):
            return {k[len(prefix) :]: v for k, v in sd.items()}
    return dict(sd)


def hf_to_hub_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a transformers ``Dinov2WithRegistersModel`` state dict to the hub keys of :class:`DINOv2`.

    Accepts transformers 4.x names (``attention.attention.query``, ``attention.output.dense``) and 5.x
    names (``attention.q_proj`` ... ``attention.o_proj``); q/k/v are stacked by rows into ``attn.qkv``.
    Unknown keys raise :class:`CheckpointError` (a classifier head, a different model).
    """
    sd = _strip_prefix(state_dict)
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], list[torch.Tensor | None]] = {}
    unknown: list[str] = []
    for key, value in sd.items():
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
            continue
        m = _HF_LAYER.match(key)
        if m is None:
            unknown.append(key)
            continue
        i, rest = int(m.group(1)), m.group(2)
        if rest in _HF_LAYER_RENAMES:
            out[f"blocks.{i}.{_HF_LAYER_RENAMES[rest]}"] = value
            continue
        stem, _, kind = rest.rpartition(".")
        if stem in _HF_QKV and kind in ("weight", "bias"):
            qkv.setdefault((i, kind), [None, None, None])[_HF_QKV[stem]] = value
            continue
        unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"not a DINOv2-with-registers backbone checkpoint: {len(unknown)} unknown keys, e.g. {unknown[:5]}"
        )
    for (i, kind), parts in sorted(qkv.items()):
        if any(p is None for p in parts):
            raise CheckpointError(f"DINOv2 checkpoint layer {i}: attention {kind} lacks one of query/key/value")
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(parts, dim=0)  # type: ignore[arg-type]
    return out


def hub_to_hf_keys(state_dict: Mapping[str, torch.Tensor], *, new_names: bool = True) -> dict[str, torch.Tensor]:
    """Inverse of :func:`hf_to_hub_keys` (transformers 5 names if ``new_names`` else 4.x names)."""
    top = {v: k for k, v in _HF_TOP.items()}
    layer = {
        "norm1.weight": "norm1.weight",
        "norm1.bias": "norm1.bias",
        "norm2.weight": "norm2.weight",
        "norm2.bias": "norm2.bias",
        "ls1.gamma": "layer_scale1.lambda1",
        "ls2.gamma": "layer_scale2.lambda1",
        "mlp.fc1.weight": "mlp.fc1.weight",
        "mlp.fc1.bias": "mlp.fc1.bias",
        "mlp.fc2.weight": "mlp.fc2.weight",
        "mlp.fc2.bias": "mlp.fc2.bias",
        "attn.proj.weight": "attention.o_proj.weight" if new_names else "attention.output.dense.weight",
        "attn.proj.bias": "attention.o_proj.bias" if new_names else "attention.output.dense.bias",
    }
    qkv_names = (
        ("attention.q_proj", "attention.k_proj", "attention.v_proj")
        if new_names
        else ("attention.attention.query", "attention.attention.key", "attention.attention.value")
    )
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key in top:
            out[top[key]] = value
            continue
        m = re.match(r"^blocks\.(\d+)\.(.+)$", key)
        if m is None:
            raise CheckpointError(f"unexpected DINOv2 hub key {key!r}")
        i, rest = m.group(1), m.group(2)
        if rest in layer:
            out[f"encoder.layer.{i}.{layer[rest]}"] = value
        elif rest in ("attn.qkv.weight", "attn.qkv.bias"):
            kind = rest.rsplit(".", 1)[1]
            for name, part in zip(qkv_names, value.chunk(3, dim=0)):
                out[f"encoder.layer.{i}.{name}.{kind}"] = part
        else:
            raise CheckpointError(f"unexpected DINOv2 hub key {key!r}")
    return out


def convert_dinov2_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hub keys unchanged, a transformers checkpoint converted: the one entry point for loaders.

    Also unwraps ``{"model": sd}`` / ``{"state_dict": sd}`` containers and a ``module.`` prefix.
    """
    sd: Mapping = state_dict
    for wrapper in ("model", "state_dict", "teacher"):
        if isinstance(sd.get(wrapper), Mapping):  # type: ignore[union-attr]
            sd = sd[wrapper]
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    if "cls_token" in sd or "pos_embed" in sd:
        return dict(sd)
    return hf_to_hub_keys(sd)
