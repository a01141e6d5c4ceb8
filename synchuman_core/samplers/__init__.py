"""Flow samplers shared by both stages: one time schedule, Euler/Heun integrators, guidance
strategies, seeded device-independent noise and the ``SamplerSettings`` both stage samplers accept.

The stage samplers themselves live next to their models: ``synchuman_core.stage1.sampling``
(joint 2D-3D sampler) and ``synchuman_core.stage2.sampling`` (SLat sampler).
"""

from __future__ import annotations

from .flow import (
    SAMPLERS,
    Callback,
    FlowEulerSampler,
    FlowHeunSampler,
    FlowSampler,
    State,
    VelocityFn,
    get_sampler,
    num_model_evaluations,
)
from .guidance import GUIDANCE_FORMS, Guidance, GuidanceInterval, NoGuidance, StandardCFG, TrellisCFG, make_guidance
from .noise import make_generator, randn
from .schedule import rescaled_t_schedule, warp_t
from .settings import SamplerSettings

__all__ = [
    "GUIDANCE_FORMS",
    "SAMPLERS",
    "Callback",
    "FlowEulerSampler",
    "FlowHeunSampler",
    "FlowSampler",
    "Guidance",
    "GuidanceInterval",
    "NoGuidance",
    "SamplerSettings",
    "StandardCFG",
    "State",
    "TrellisCFG",
    "VelocityFn",
    "get_sampler",
    "make_generator",
    "make_guidance",
    "num_model_evaluations",
    "randn",
    "rescaled_t_schedule",
    "warp_t",
]
