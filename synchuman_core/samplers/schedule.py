"""The time schedule shared by every flow sampler of SyncHuman (both stages, docs/ARCHITECTURE.md §5).

Rectified-flow time runs from ``t = 1`` (pure noise) to ``t = 0`` (data). The official samplers take
``steps + 1`` equally spaced points and warp them with the TRELLIS "rescale" map
``t <- r t / (1 + (r - 1) t)``, which spends more steps near ``t = 1`` for ``r > 1``.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

__all__ = ["rescaled_t_schedule", "warp_t"]


def warp_t(t: float, r: float) -> float:
    """The TRELLIS time warp ``r t / (1 + (r - 1) t)`` of one time (identity for ``r = 1``)."""
    return r * t / (1.0 + (r - 1.0) * t)


def rescaled_t_schedule(steps: int, rescale_t: float = 1.0) -> list[float]:
    """``steps + 1`` times from 1 to 0: ``linspace(1, 0, steps + 1)`` warped by :func:`warp_t`.

    Returned as Python floats (float64), bit-identical to the official numpy computation
    (``t_seq = linspace(1, 0, steps + 1); t_seq = r * t_seq / (1 + (r - 1) * t_seq)``), so host-side
    comparisons such as the guidance interval behave exactly as the official samplers. Step ``k`` goes
    from ``t_seq[k]`` to ``t_seq[k + 1]``.

    e.g. ``rescaled_t_schedule(50, 3.0)[:3] == [1.0, 0.99324..., 0.98630...]``.
    """
    if int(steps) != steps or steps < 1:
        raise ConfigError(f"sampler steps must be a positive integer, got {steps!r}")
    if not rescale_t > 0:
        raise ConfigError(f"rescale_t must be > 0, got {rescale_t!r}")
    t_seq = np.linspace(1, 0, int(steps) + 1)
    t_seq = rescale_t * t_seq / (1 + (rescale_t - 1) * t_seq)
    return [float(t) for t in t_seq]
