"""Deterministic random weights and inputs, bit-compatible with the fixtures' generator.

The rules (documented with the official fixtures, re-implemented here): for a parameter ``key`` of
``shape`` under ``seed``, draw ``z ~ N(0,1)`` float32 from numpy's PCG64 seeded with
``crc32(f"{seed}:{key}")``, then

* ``key`` ends with ``.gamma``, or 1-D and ends with ``.weight`` -> ``1 + 0.1 z``
* other 1-D (biases, ...)                                        -> ``0.1 z``
* ``ndim >= 2``                                                  -> ``z / sqrt(prod(shape[1:]))``

Inputs use ``crc32(f"input:{seed}:{name}")``. Buffers keep the values their module computes.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ParityError

__all__ = ["checksums", "fill_model", "gen_input", "gen_param", "verify_checksums"]


def _normal(seed_string: str, shape: Sequence[int]) -> np.ndarray:
    sk = zlib.crc32(seed_string.encode("utf-8"))
    return np.random.Generator(np.random.PCG64(sk)).standard_normal(size=tuple(shape), dtype=np.float32)


def gen_param(key: str, shape: Sequence[int], seed: int) -> torch.Tensor:
    z = _normal(f"{seed}:{key}", shape)
    if key.endswith(".gamma") or (len(shape) == 1 and key.endswith(".weight")):
        w = np.float32(1.0) + np.float32(0.1) * z
    elif len(shape) <= 1:
        w = np.float32(0.1) * z
    else:
        w = z / np.float32(math.sqrt(int(np.prod(shape[1:]))))
    return torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))


def gen_input(name: str, shape: Sequence[int], seed: int, scale: float = 1.0) -> torch.Tensor:
    z = _normal(f"input:{seed}:{name}", shape)
    return torch.from_numpy(np.ascontiguousarray(z * np.float32(scale), dtype=np.float32))


@torch.no_grad()
def fill_model(model: nn.Module, seed: int, key_map: Mapping[str, str] | None = None) -> nn.Module:
    """Fill every parameter of ``model`` with :func:`gen_param`.

    ``key_map`` maps our state-dict key to the official one where they differ (they should not:
    our modules use the official names). Parameters on the meta device are materialised on CPU.
    """
    key_map = key_map or {}
    if any(t.device.type == "meta" for t in list(model.parameters()) + list(model.buffers())):
        model.to_empty(device="cpu")  # buffers must then be recomputed by the caller if they matter
    params = dict(model.named_parameters())
    for k, p in params.items():
        w = gen_param(key_map.get(k, k), list(p.shape), seed)
        dev = p.device if p.device.type != "meta" else torch.device("cpu")
        p.data = w.to(device=dev, dtype=p.dtype)
    return model


def checksums(sd: Mapping[str, torch.Tensor]) -> dict[str, dict]:
    out = {}
    for k, v in sd.items():
        t = v.detach().double().reshape(-1)
        out[k] = dict(
            shape=list(v.shape),
            sum=float(t.sum()),
            sumsq=float((t * t).sum()),
            first=[float(x) for x in t[:4]],
        )
    return out


def verify_checksums(
    sd: Mapping[str, torch.Tensor], expected: Mapping[str, Mapping], rtol: float = 1e-6,
    keys: Sequence[str] | None = None,
) -> int:
    """Raise :class:`ParityError` if ``sd`` does not reproduce the checksum file's entries; returns the
    number of keys checked. ``keys``: check only these (no missing/extra-key check)."""
    problems = []
    if keys is None:
        keys = list(expected)
        missing = [k for k in expected if k not in sd]
        extra = [k for k in sd if k not in expected]
        if missing or extra:
            problems.append(f"keys differ: missing {missing[:5]}, extra {extra[:5]}")
    for k in keys:
        e = expected[k]
        if k not in sd:
            continue
        t = sd[k].detach().double().reshape(-1)
        if list(sd[k].shape) != list(e["shape"]):
            problems.append(f"{k}: shape {list(sd[k].shape)} != {e['shape']}")
            continue
        s, ss = float(t.sum()), float((t * t).sum())
        tol_s = rtol * max(1.0, abs(e["sumsq"])) ** 0.5 * max(1.0, t.numel() ** 0.5)
        if abs(s - e["sum"]) > tol_s or abs(ss - e["sumsq"]) > rtol * max(1.0, abs(e["sumsq"])) * 10:
            problems.append(f"{k}: sum {s:.6g}/{e['sum']:.6g}, sumsq {ss:.6g}/{e['sumsq']:.6g}")
        first = [float(x) for x in t[:4]]
        if any(abs(a - b) > 1e-6 * max(1.0, abs(b)) for a, b in zip(first, e["first"])):
            problems.append(f"{k}: first values {first} != {e['first']}")
    if problems:
        raise ParityError("regenerated weights do not match the fixture checksums:\n  " + "\n  ".join(problems[:20]))
    return len(keys)
