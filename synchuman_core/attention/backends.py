"""Optional attention backends, registered only when their package is importable.

None of them is required: the dispatch falls back to SDPA for any call a backend cannot serve
(CPU tensors, fp32 for flash-attn, ...). The packages are imported inside the functions, so merely
importing synchuman_core never loads them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import torch

from .dispatch import AttentionBackend, register_backend

_HALF = frozenset({torch.float16, torch.bfloat16})


def _cu(lens: Sequence[int], device: torch.device) -> torch.Tensor:
    out = torch.zeros(len(lens) + 1, dtype=torch.int32, device=device)
    out[1:] = torch.tensor(list(lens), dtype=torch.int32, device=device).cumsum(0)
    return out


def _flash_dense(q, k, v, scale):  # type: ignore[no-untyped-def]
    from flash_attn import flash_attn_func

    return flash_attn_func(q, k, v, softmax_scale=scale)


def _flash_varlen(q, k, v, q_lens, kv_lens, scale):  # type: ignore[no-untyped-def]
    from flash_attn import flash_attn_varlen_func

    return flash_attn_varlen_func(
        q, k, v, _cu(q_lens, q.device), _cu(kv_lens, q.device), max(q_lens), max(kv_lens), softmax_scale=scale
    )


def _xformers_dense(q, k, v, scale):  # type: ignore[no-untyped-def]
    import xformers.ops as xops

    return xops.memory_efficient_attention(q, k, v, scale=scale)


def _xformers_varlen(q, k, v, q_lens, kv_lens, scale):  # type: ignore[no-untyped-def]
    import xformers.ops as xops

    bias = xops.fmha.BlockDiagonalMask.from_seqlens(list(q_lens), list(kv_lens))
    return xops.memory_efficient_attention(q[None], k[None], v[None], attn_bias=bias, scale=scale)[0]


def _sage_dense(q, k, v, scale):  # type: ignore[no-untyped-def]
    from sageattention import sageattn

    return sageattn(q, k, v, tensor_layout="NHD", sm_scale=scale)


def register_optional_backends() -> list[str]:
    """Register every optional backend whose package can be found; returns their names."""
    found = []
    if importlib.util.find_spec("flash_attn") is not None:
        register_backend(
            AttentionBackend("flash_attn", _flash_dense, _flash_varlen, frozenset({"cuda"}), _HALF, 256)
        )
        found.append("flash_attn")
    if importlib.util.find_spec("xformers") is not None:
        register_backend(AttentionBackend("xformers", _xformers_dense, _xformers_varlen, frozenset({"cuda"})))
        found.append("xformers")
    if importlib.util.find_spec("sageattention") is not None:
        register_backend(AttentionBackend("sage", _sage_dense, None, frozenset({"cuda"}), _HALF, 128))
        found.append("sage")
    return found
