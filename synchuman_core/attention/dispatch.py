"""One attention dispatch for every model in the package.

Layout convention (TRELLIS / flash-attn style): dense tensors are ``[B, L, H, D]``; variable-length
("varlen") tensors are packed ``[T, H, D]`` with per-sequence lengths.

The backend is resolved on every call, in this order:

1. the ``backend=`` argument of the call,
2. the innermost :func:`use_backend` context,
3. the ``SYNCHUMAN_ATTN_BACKEND`` environment variable (read at call time, not at import),
4. ``"sdpa"`` (``torch.nn.functional.scaled_dot_product_attention``).

A backend that cannot serve a call (not installed, wrong device or dtype, unsupported feature)
falls back to SDPA; nothing besides PyTorch is ever required.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = [
    "AttentionBackend",
    "attention",
    "available_backends",
    "best_backend",
    "current_backend",
    "fastest_backend",
    "query_chunk",
    "register_backend",
    "set_query_chunk_size",
    "use_backend",
    "varlen_attention",
]

DenseFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]
VarlenFn = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, Sequence[int], Sequence[int], float], torch.Tensor
]


@dataclass(frozen=True)
class AttentionBackend:
    """A registered attention implementation and the calls it can serve."""

    name: str
    dense: DenseFn | None
    varlen: VarlenFn | None = None
    devices: frozenset[str] = field(default_factory=lambda: frozenset({"cpu", "cuda", "mps", "xpu"}))
    dtypes: frozenset[torch.dtype] = field(
        default_factory=lambda: frozenset({torch.float32, torch.float16, torch.bfloat16, torch.float64})
    )
    max_head_dim: int | None = None

    def supports(self, q: torch.Tensor, varlen: bool) -> bool:
        fn = self.varlen if varlen else self.dense
        if fn is None:
            return False
        if q.device.type not in self.devices or q.dtype not in self.dtypes:
            return False
        return self.max_head_dim is None or q.shape[-1] <= self.max_head_dim


_REGISTRY: dict[str, AttentionBackend] = {}
_LOCAL = threading.local()
_DEFAULT = "sdpa"
_ENV = "SYNCHUMAN_ATTN_BACKEND"
_CHUNK_ENV = "SYNCHUMAN_ATTN_QUERY_CHUNK"


def register_backend(backend: AttentionBackend) -> None:
    """Register (or replace) a backend under ``backend.name``."""
    _REGISTRY[backend.name] = backend


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the enclosed code with attention backend ``name`` (thread-local, nestable)."""
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown attention backend {name!r}; available here: {', '.join(available_backends())}"
        )
    stack = _LOCAL.__dict__.setdefault("stack", [])
    stack.append(name)
    try:
        yield
    finally:
        stack.pop()


def current_backend() -> str:
    stack = _LOCAL.__dict__.get("stack")
    if stack:
        return stack[-1]
    env = os.environ.get(_ENV, "").strip()
    return env or _DEFAULT


def explicit_backend_chosen() -> bool:
    """True inside a :func:`use_backend` context or when ``SYNCHUMAN_ATTN_BACKEND`` is set."""
    return bool(_LOCAL.__dict__.get("stack")) or bool(os.environ.get(_ENV, "").strip())


def best_backend(device: torch.device | str, dtype: torch.dtype) -> str:
    """Fastest *exact* registered backend for a device/dtype: ``flash_attn`` (CUDA, fp16/bf16) if
    installed, else SDPA (which itself picks flash / memory-efficient kernels on CUDA and a fused
    kernel on CPU). ``sage`` and ``xformers`` are never chosen automatically (sage quantises q/k;
    xformers is no faster than SDPA's own kernels on current PyTorch)."""
    dev = torch.device(device)
    if dev.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and "flash_attn" in _REGISTRY:
        return "flash_attn"
    return _DEFAULT


@contextlib.contextmanager
def fastest_backend(device: torch.device | str, dtype: torch.dtype) -> Iterator[str]:
    """Run the enclosed code on :func:`best_backend` for ``device``/``dtype``, unless a backend was
    chosen explicitly (an enclosing :func:`use_backend` or ``SYNCHUMAN_ATTN_BACKEND``): an explicit
    choice always wins. Calls the chosen backend cannot serve (other dtypes) still fall back to SDPA.
    Yields the backend name in force."""
    if explicit_backend_chosen():
        yield current_backend()
        return
    name = best_backend(device, dtype)
    with use_backend(name):
        yield name


_query_chunk: int | None = None


def set_query_chunk_size(n: int | None) -> None:
    """Bound attention memory by processing at most ``n`` query tokens per kernel call (None: off)."""
    global _query_chunk
    if n is not None and n <= 0:
        raise ConfigError("query chunk size must be a positive number of tokens or None")
    _query_chunk = n


@contextlib.contextmanager
def query_chunk(n: int | None) -> Iterator[None]:
    """Process at most ``n`` query tokens per attention kernel call inside the ``with`` block (``None``:
    no chunking unless ``SYNCHUMAN_ATTN_QUERY_CHUNK`` asks for it); the previous setting is restored on
    exit. Process-wide, like :func:`set_query_chunk_size`: do not run two settings concurrently."""
    global _query_chunk
    saved = _query_chunk
    set_query_chunk_size(n)
    try:
        yield
    finally:
        _query_chunk = saved


def _query_chunk_size() -> int | None:
    if _query_chunk is not None:
        return _query_chunk
    env = os.environ.get(_CHUNK_ENV, "").strip()
    return int(env) if env else None


def _resolve(name: str | None, q: torch.Tensor, varlen: bool) -> AttentionBackend:
    chosen = name or current_backend()
    backend = _REGISTRY.get(chosen)
    if backend is None:
        raise ConfigError(
            f"unknown attention backend {chosen!r} (from {'argument' if name else _ENV + ' or use_backend'}); "
            f"available here: {', '.join(available_backends())}"
        )
    if backend.supports(q, varlen):
        return backend
    return _REGISTRY["sdpa"]


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Softmax attention. ``q [B, Lq, H, D]``, ``k, v [B, Lk, H, D]`` -> ``[B, Lq, H, Dv]``."""
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"attention expects [B, L, H, D] tensors, got {tuple(q.shape)}, {tuple(k.shape)}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    impl = _resolve(backend, q, varlen=False)
    chunk = _query_chunk_size()
    assert impl.dense is not None
    if chunk is None or q.shape[1] <= chunk:
        return impl.dense(q, k, v, scale)
    return torch.cat([impl.dense(qc, k, v, scale) for qc in q.split(chunk, dim=1)], dim=1)


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_lens: Sequence[int],
    kv_lens: Sequence[int],
    *,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Attention over a packed batch of sequences of different lengths.

    ``q [sum(q_lens), H, D]``, ``k, v [sum(kv_lens), H, D]``; sequence ``i`` of the queries attends
    only to sequence ``i`` of the keys. Returns ``[sum(q_lens), H, Dv]``.
    """
    q_lens = [int(n) for n in q_lens]
    kv_lens = [int(n) for n in kv_lens]
    if len(q_lens) != len(kv_lens):
        raise ValueError(f"{len(q_lens)} query sequences but {len(kv_lens)} key sequences")
    if sum(q_lens) != q.shape[0] or sum(kv_lens) != k.shape[0] or k.shape[0] != v.shape[0]:
        raise ValueError(
            f"packed lengths do not match tensors: q {tuple(q.shape)} vs {sum(q_lens)}, "
            f"k {tuple(k.shape)} vs {sum(kv_lens)}"
        )
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    impl = _resolve(backend, q, varlen=True)
    assert impl.varlen is not None
    return impl.varlen(q, k, v, q_lens, kv_lens, scale)


# --------------------------------------------------------------------------------------------
# SDPA (default) and the naive reference
# --------------------------------------------------------------------------------------------


def _sdpa_dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=scale
    )
    return out.transpose(1, 2)


# Batches of equal-length sequences are cut so that one call holds at most this many
# (query x key) score entries per head.
_VARLEN_SCORE_BUDGET = 1 << 26


def _sdpa_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_lens: Sequence[int],
    kv_lens: Sequence[int],
    scale: float,
) -> torch.Tensor:
    """Varlen attention with SDPA, without padding: sequences are bucketed by their exact
    ``(q_len, kv_len)`` and each bucket runs as one unmasked batch (gathered by index). Swin windows
    have few distinct lengths, so this is a handful of kernel calls; masked padding was ~4x slower."""
    n = len(q_lens)
    if n == 0:
        return q.new_zeros((0, q.shape[1], v.shape[2]))
    if len(set(q_lens)) == 1 and len(set(kv_lens)) == 1:
        lq, lk = q_lens[0], kv_lens[0]
        step = max(1, _VARLEN_SCORE_BUDGET // max(1, lq * lk))
        qb, kb, vb = q.view(n, lq, *q.shape[1:]), k.view(n, lk, *k.shape[1:]), v.view(n, lk, *v.shape[1:])
        outs = [_sdpa_dense(qb[i : i + step], kb[i : i + step], vb[i : i + step], scale) for i in range(0, n, step)]
        return torch.cat(outs, 0).reshape(-1, q.shape[1], v.shape[2])

    dev = q.device
    q_lens_t = torch.tensor(q_lens, dtype=torch.long)
    kv_lens_t = torch.tensor(kv_lens, dtype=torch.long)
    q_off = torch.cumsum(q_lens_t, 0) - q_lens_t
    k_off = torch.cumsum(kv_lens_t, 0) - kv_lens_t
    buckets: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(zip(q_lens, kv_lens)):
        buckets.setdefault(key, []).append(i)
    out = q.new_empty((q.shape[0], q.shape[1], v.shape[2]))
    for (lq, lk), seqs in buckets.items():
        if lq == 0:
            continue
        step = max(1, _VARLEN_SCORE_BUDGET // max(1, lq * lk))
        for j in range(0, len(seqs), step):
            sel = torch.tensor(seqs[j : j + step], dtype=torch.long)
            g = sel.numel()
            iq = (q_off[sel][:, None] + torch.arange(lq)[None]).reshape(-1).to(dev)
            ik = (k_off[sel][:, None] + torch.arange(lk)[None]).reshape(-1).to(dev)
            if lk == 0:
                out[iq] = 0
                continue
            res = _sdpa_dense(
                q[iq].view(g, lq, *q.shape[1:]), k[ik].view(g, lk, *k.shape[1:]), v[ik].view(g, lk, *v.shape[1:]), scale
            )
            out[iq] = res.reshape(-1, q.shape[1], v.shape[2])
    return out


def _naive_dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Textbook softmax(q k^T * scale) v, computed in at least fp32; the reference for tests."""
    dt = q.dtype
    ct = torch.promote_types(dt, torch.float32)
    qf, kf, vf = (t.to(ct).transpose(1, 2) for t in (q, k, v))
    w = torch.softmax(qf @ kf.transpose(-1, -2) * scale, dim=-1)
    return (w @ vf).transpose(1, 2).to(dt)


def _naive_varlen(q, k, v, q_lens, kv_lens, scale):  # type: ignore[no-untyped-def]
    outs = []
    qo = ko = 0
    for lq, lk in zip(q_lens, kv_lens):
        outs.append(_naive_dense(q[None, qo : qo + lq], k[None, ko : ko + lk], v[None, ko : ko + lk], scale)[0])
        qo += lq
        ko += lk
    return torch.cat(outs, 0) if outs else q.new_zeros((0, q.shape[1], v.shape[2]))


register_backend(AttentionBackend("sdpa", _sdpa_dense, _sdpa_varlen))
register_backend(AttentionBackend("naive", _naive_dense, _naive_varlen))
