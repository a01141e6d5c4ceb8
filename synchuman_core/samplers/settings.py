"""``SamplerSettings``: everything a stage sampler needs besides the model and the conditioning.

Both stage samplers accept the same settings object (it is the ComfyUI "sampler settings" wire).
The official values are :meth:`SamplerSettings.stage1` (docs/ARCHITECTURE.md §5.1) and
:meth:`SamplerSettings.stage2` (§5.2, ``ckpts/SecondStage/pipeline.json``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ..errors import ConfigError
from .flow import SAMPLERS, FlowSampler, get_sampler
from .guidance import GUIDANCE_FORMS, Guidance, make_guidance
from .schedule import rescaled_t_schedule

__all__ = ["SamplerSettings"]

# Official stage-2 sampler classes (pipeline.json ``slat_sampler.name``) and what they mean here.
_TRELLIS_SAMPLER_NAMES = ("FlowEulerSampler", "FlowEulerCfgSampler", "FlowEulerGuidanceIntervalSampler")


@dataclass(frozen=True)
class SamplerSettings:
    """Sampler name, step count, guidance (scale, form, interval) and time rescale.

    ``guidance`` is read in the convention named by ``guidance_form``:
    ``"standard"`` -> ``u + g (c - u)`` (1 = no guidance); ``"trellis"`` -> ``(1 + w) c - w u``
    (0 = no guidance). ``interval = (lo, hi)`` applies guidance only while ``lo <= t <= hi`` on the
    rescaled time (1 = noise, 0 = data).
    """

    sampler: str = "euler"
    steps: int = 50
    guidance: float = 3.0
    guidance_form: str = "standard"
    interval: tuple[float, float] = (0.0, 1.0)
    rescale_t: float = 3.0

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.sampler!r}; available: {', '.join(sorted(SAMPLERS))}")
        if isinstance(self.steps, bool) or int(self.steps) != self.steps or self.steps < 1:
            raise ConfigError(f"steps must be a positive integer, got {self.steps!r}")
        object.__setattr__(self, "steps", int(self.steps))
        if self.guidance_form not in GUIDANCE_FORMS:
            raise ConfigError(
                f"unknown guidance_form {self.guidance_form!r}; use one of {', '.join(GUIDANCE_FORMS)}"
            )
        try:
            lo, hi = (float(v) for v in self.interval)
        except (TypeError, ValueError):
            raise ConfigError(f"interval must be two numbers (lo, hi), got {self.interval!r}") from None
        if not 0.0 <= lo <= hi <= 1.0:
            raise ConfigError(f"interval must satisfy 0 <= lo <= hi <= 1, got {(lo, hi)!r}")
        object.__setattr__(self, "interval", (lo, hi))
        object.__setattr__(self, "guidance", float(self.guidance))
        if not float(self.rescale_t) > 0:
            raise ConfigError(f"rescale_t must be > 0, got {self.rescale_t!r}")
        object.__setattr__(self, "rescale_t", float(self.rescale_t))

    # -- official presets -------------------------------------------------------------------------
    @classmethod
    def stage1(cls, **overrides: Any) -> SamplerSettings:
        """Official stage-1 joint sampler: Euler, 50 steps, standard CFG 3.0 everywhere, rescale 3."""
        return replace(cls(sampler="euler", steps=50, guidance=3.0, guidance_form="standard",
                           interval=(0.0, 1.0), rescale_t=3.0), **overrides)

    @classmethod
    def stage2(cls, **overrides: Any) -> SamplerSettings:
        """Official stage-2 SLat sampler: Euler, 25 steps, TRELLIS CFG 5.0 for t in [0.5, 1], rescale 3."""
        return replace(cls(sampler="euler", steps=25, guidance=5.0, guidance_form="trellis",
                           interval=(0.5, 1.0), rescale_t=3.0), **overrides)

    @classmethod
    def from_pipeline_json(cls, pipeline: Mapping[str, Any]) -> SamplerSettings:
        """Read the stage-2 settings from the contents of ``ckpts/SecondStage/pipeline.json``.

        ``sigma_min`` only enters TRELLIS's x0 estimate, which the sampler does not use, so it is
        accepted and ignored.
        """
        args = pipeline.get("args", pipeline)
        spec = args.get("slat_sampler")
        if not isinstance(spec, Mapping):
            raise ConfigError("pipeline.json has no args.slat_sampler section; is this ckpts/SecondStage/pipeline.json?")
        name = spec.get("name")
        if name not in _TRELLIS_SAMPLER_NAMES:
            raise ConfigError(f"pipeline.json names sampler {name!r}; supported: {', '.join(_TRELLIS_SAMPLER_NAMES)}")
        unknown_args = set(spec.get("args", {})) - {"sigma_min"}
        params = dict(spec.get("params", {}))
        unknown = set(params) - {"steps", "cfg_strength", "cfg_interval", "rescale_t"}
        if unknown or unknown_args:
            raise ConfigError(f"pipeline.json slat_sampler has keys we cannot honour: {sorted(unknown | unknown_args)}")
        strength = float(params.get("cfg_strength", 0.0)) if name != "FlowEulerSampler" else 0.0
        interval = params.get("cfg_interval", (0.0, 1.0)) if name == "FlowEulerGuidanceIntervalSampler" else (0.0, 1.0)
        return cls(
            sampler="euler",
            steps=params.get("steps", 50),
            guidance=strength,
            guidance_form="trellis",
            interval=tuple(interval),
            rescale_t=params.get("rescale_t", 1.0),
        )

    # -- derived objects --------------------------------------------------------------------------
    def schedule(self) -> list[float]:
        """The ``steps + 1`` times (see :func:`rescaled_t_schedule`)."""
        return rescaled_t_schedule(self.steps, self.rescale_t)

    def make_guidance(self) -> Guidance:
        return make_guidance(self.guidance_form, self.guidance, self.interval)

    def make_sampler(self) -> FlowSampler:
        return get_sampler(self.sampler)

    def with_(self, **changes: Any) -> SamplerSettings:
        """A copy with some fields changed (validated)."""
        return replace(self, **changes)

    # -- plain-data round trip (for wires / JSON) ---------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["interval"] = list(self.interval)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SamplerSettings:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown sampler settings {sorted(unknown)}; known: {sorted(names)}")
        return cls(**dict(d))
