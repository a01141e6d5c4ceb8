"""Deterministic random tensors keyed by name: the rule the tiny checkpoints and the parity fixtures share.

For a parameter ``key`` of ``shape`` under ``seed``, draw ``z ~ N(0, 1)`` float32 from numpy's PCG64 seeded with
``crc32(f"{seed}:{key}")``, then

* ``key`` ends with ``.gamma``, or 1-D and ends with ``.weight`` -> ``1 + 0.1 z``  (scales)
* other 1-D (biases, ...)                                        -> ``0.1 z``
* ``ndim >= 2``                                                  -> ``z / sqrt(prod(shape[1:]))``  (fan-in)

Inputs use ``crc32(f"input:{seed}:{name}")``. Every value depends only on (seed, key, shape), so a model's
weights do not depend on the order its parameters are created in, and any one tensor can be regenerated alone.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["gen_input", "gen_param"]


def _normal(seed_string: str, shape: Sequence[int]) -> np.ndarray:
    sk = zlib.crc32(seed_string.encode("utf-8"))
    return np.random.Generator(np.random.PCG64(sk)).standard_normal(size=tuple(shape), dtype=np.float32)


def gen_param(key: str, shape: Sequence[int], seed: int) -> torch.Tensor:
    """The float32 value of parameter ``key`` (see the module docstring for the rule)."""
    z = _normal(f"{seed}:{key}", shape)
    if key.endswith(".gamma") or (len(shape) == 1 and key.endswith(".weight")):
        w = np.float32(1.0) + np.float32(0.1) * z
    elif len(shape) <= 1:
        w = np.float32(0.1) * z
    else:
        w = z / np.float32(math.sqrt(int(np.prod(shape[1:]))))
    return torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))


def gen_input(name: str, shape: Sequence[int], seed: int, scale: float = 1.0) -> torch.Tensor:
    """A float32 ``N(0, scale^2)`` input tensor named ``name``."""
    z = _normal(f"input:{seed}:{name}", shape)
    return torch.from_numpy(np.ascontiguousarray(z * np.float32(scale), dtype=np.float32))
