"""Seeded noise that does not depend on the device.

Every random draw of the pipeline goes through an explicit CPU ``torch.Generator``: the noise is
drawn in float32 on the CPU and then moved/cast, so a seed gives the same initial noise on CPU, CUDA
or MPS (only the arithmetic afterwards differs). A CPU generator seeded with ``s`` yields the same
numbers as ``torch.manual_seed(s)`` followed by CPU draws of the global RNG, which is how the
official stage-1 3D noise is reproduced (FIXTURES §5.6).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import ConfigError

__all__ = ["make_generator", "randn"]


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator(device="cpu").manual_seed(int(seed))


def randn(
    shape: Sequence[int],
    generator: torch.Generator,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise of ``shape`` drawn (float32) on the CPU from ``generator``, then moved to
    ``device`` and cast to ``dtype``."""
    if not isinstance(generator, torch.Generator):
        raise ConfigError(
            f"noise needs an explicit torch.Generator (got {type(generator).__name__}); "
            "create one with synchuman_core.samplers.make_generator(seed)"
        )
    if generator.device.type != "cpu":
        raise ConfigError(
            f"noise generators must live on the CPU (got one on {generator.device}); results would depend "
            "on the device otherwise. Use torch.Generator(device='cpu').manual_seed(seed)"
        )
    x = torch.randn(tuple(int(s) for s in shape), generator=generator, dtype=torch.float32)
    return x.to(device=device, dtype=dtype)
