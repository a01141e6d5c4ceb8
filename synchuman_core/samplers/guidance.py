"""Classifier-free guidance as small strategy objects.

A strategy answers two questions for the sampler: *do I need the unconditional prediction at this
time?* (:meth:`Guidance.needs_uncond`, host-side, no tensor is read) and *how are the two predictions
combined?* (:meth:`Guidance.combine`). The sampler decides how to obtain the predictions (one batched
call or two calls); the strategies never see the model.

The two official conventions differ only by a reparametrisation of the scale:

* standard (stage 1, docs/ARCHITECTURE.md §5.1): ``v = u + g (c - u)``
* TRELLIS (stage 2, §5.2):              ``v = (1 + w) c - w u``   (equal to standard with ``g = 1 + w``)

They are kept as separate classes so that each reproduces its official arithmetic order (the fp16
results differ in the last bits). :class:`GuidanceInterval` restricts any strategy to
``lo <= t <= hi`` (inclusive, on the rescaled time), using the conditional prediction alone elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import ConfigError

__all__ = [
    "GUIDANCE_FORMS",
    "Guidance",
    "GuidanceInterval",
    "NoGuidance",
    "StandardCFG",
    "TrellisCFG",
    "make_guidance",
]

GUIDANCE_FORMS = ("standard", "trellis")


class Guidance:
    """Base strategy: conditional prediction only."""

    def needs_uncond(self, t: float) -> bool:
        """Whether the unconditional prediction is needed at time ``t`` (a Python float)."""
        return False

    def combine(self, cond: torch.Tensor, uncond: torch.Tensor | None) -> torch.Tensor:
        """The guided prediction from the conditional and (if needed) unconditional ones."""
        return cond


@dataclass(frozen=True)
class NoGuidance(Guidance):
    """No guidance: the conditional prediction is used as is."""


@dataclass(frozen=True)
class StandardCFG(Guidance):
    """``u + scale (c - u)``; ``scale == 1`` means no guidance (the unconditional pass is skipped)."""

    scale: float

    def needs_uncond(self, t: float) -> bool:
        return self.scale != 1.0

    def combine(self, cond: torch.Tensor, uncond: torch.Tensor | None) -> torch.Tensor:
        if uncond is None:
            return cond
        return uncond + self.scale * (cond - uncond)


@dataclass(frozen=True)
class TrellisCFG(Guidance):
    """``(1 + strength) c - strength u`` (TRELLIS ``ClassifierFreeGuidanceSamplerMixin``);
    ``strength == 0`` means no guidance."""

    strength: float

    def needs_uncond(self, t: float) -> bool:
        return self.strength != 0.0

    def combine(self, cond: torch.Tensor, uncond: torch.Tensor | None) -> torch.Tensor:
        if uncond is None:
            return cond
        return (1 + self.strength) * cond - self.strength * uncond


@dataclass(frozen=True)
class GuidanceInterval(Guidance):
    """Apply ``inner`` only while ``lo <= t <= hi``; the conditional prediction elsewhere
    (TRELLIS ``GuidanceIntervalSamplerMixin``)."""

    inner: Guidance
    lo: float = 0.0
    hi: float = 1.0

    def needs_uncond(self, t: float) -> bool:
        return self.lo <= t <= self.hi and self.inner.needs_uncond(t)

    def combine(self, cond: torch.Tensor, uncond: torch.Tensor | None) -> torch.Tensor:
        return self.inner.combine(cond, uncond)


def make_guidance(form: str, scale: float, interval: Sequence[float] = (0.0, 1.0)) -> Guidance:
    """Build the strategy for ``form`` (``"standard"`` or ``"trellis"``), restricted to ``interval``
    unless the interval covers the whole time range [0, 1]."""
    if form == "standard":
        inner: Guidance = StandardCFG(float(scale))
    elif form == "trellis":
        inner = TrellisCFG(float(scale))
    else:
        raise ConfigError(f"unknown guidance form {form!r}; use one of {', '.join(GUIDANCE_FORMS)}")
    lo, hi = (float(v) for v in interval)
    if not (0.0 <= lo <= hi <= 1.0):
        raise ConfigError(f"guidance interval must satisfy 0 <= lo <= hi <= 1, got {tuple(interval)!r}")
    if lo <= 0.0 and hi >= 1.0:
        return inner
    return GuidanceInterval(inner, lo, hi)
