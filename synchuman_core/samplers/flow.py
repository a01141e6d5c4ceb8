"""Flow-matching integrators (rectified flow, velocity parametrisation, ``t: 1 -> 0``).

A sampler integrates ``dx/dt = v(x, t)`` backwards over a time schedule
(:func:`~synchuman_core.samplers.schedule.rescaled_t_schedule`). It never sees the model: it calls a
*velocity function* ``velocity(x, t, k) -> v`` where ``t == t_seq[k]`` is the current time and ``k`` its
index in the schedule (so callers can pre-build per-time tensors before the loop and index them).
Guidance, batching and conditioning live in that function (see ``guidance.py`` and the stage
samplers).

The state ``x`` is a tensor or a tuple of tensors (the joint stage-1 sampler integrates the 2D latents
and the 3D structure latent together); ``v`` has the same structure. Each tensor of the state keeps
its dtype through the loop.

Loops do no host synchronisation: times are Python floats, and nothing reads tensor values. After
each step ``callback(step, total, x)`` is called with the number of completed steps (1..total); it may
raise (e.g. ComfyUI's interrupt) to stop sampling, which propagates to the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..errors import ConfigError

__all__ = [
    "SAMPLERS",
    "Callback",
    "FlowEulerSampler",
    "FlowHeunSampler",
    "FlowSampler",
    "State",
    "VelocityFn",
    "get_sampler",
    "num_model_evaluations",
]

State = torch.Tensor | tuple[torch.Tensor, ...]
VelocityFn = Callable[[State, float, int], State]
Callback = Callable[[int, int, State], None]


def _euler(x: State, dt: float, v: State) -> State:
    """``x - dt v`` per tensor (the official update ``x_t - (t - t_prev) * v``), dtype of ``x`` kept."""
    if isinstance(x, torch.Tensor):
        return (x - dt * v).to(x.dtype)
    return tuple((xi - dt * vi).to(xi.dtype) for xi, vi in zip(x, v, strict=True))


def _mean(a: State, b: State) -> State:
    if isinstance(a, torch.Tensor):
        return 0.5 * (a + b)
    return tuple(0.5 * (ai + bi) for ai, bi in zip(a, b, strict=True))


class FlowSampler:
    """Base class: integrate a velocity field over a time schedule."""

    name = "base"
    evaluations_per_step = 1

    def step(self, velocity: VelocityFn, x: State, t_seq: Sequence[float], k: int) -> State:
        """One step from ``t_seq[k]`` to ``t_seq[k + 1]``."""
        raise NotImplementedError

    def sample(
        self,
        velocity: VelocityFn,
        x: State,
        t_seq: Sequence[float],
        callback: Callback | None = None,
    ) -> State:
        """Integrate from ``t_seq[0]`` to ``t_seq[-1]``; returns the final state."""
        total = len(t_seq) - 1
        for k in range(total):
            x = self.step(velocity, x, t_seq, k)
            if callback is not None:
                callback(k + 1, total, x)
        return x


class FlowEulerSampler(FlowSampler):
    """First-order Euler, the official sampler of both stages: ``x <- x - (t - t_prev) v(x, t)``."""

    name = "euler"

    def step(self, velocity: VelocityFn, x: State, t_seq: Sequence[float], k: int) -> State:
        t, t_prev = t_seq[k], t_seq[k + 1]
        return _euler(x, t - t_prev, velocity(x, t, k))


class FlowHeunSampler(FlowSampler):
    """Second-order Heun (explicit trapezoid): Euler predictor, then the average of the velocities at
    both ends; the last step (to ``t = 0``, where the velocity may be ill-defined) is plain Euler.
    Costs ``2 steps - 1`` velocity evaluations."""

    name = "heun"
    evaluations_per_step = 2

    def step(self, velocity: VelocityFn, x: State, t_seq: Sequence[float], k: int) -> State:
        t, t_prev = t_seq[k], t_seq[k + 1]
        dt = t - t_prev
        v1 = velocity(x, t, k)
        x_pred = _euler(x, dt, v1)
        if t_prev <= 0.0:
            return x_pred
        v2 = velocity(x_pred, t_prev, k + 1)
        return _euler(x, dt, _mean(v1, v2))


SAMPLERS: dict[str, type[FlowSampler]] = {
    FlowEulerSampler.name: FlowEulerSampler,
    FlowHeunSampler.name: FlowHeunSampler,
}


def get_sampler(name: str) -> FlowSampler:
    """The sampler registered under ``name`` (``"euler"``, ``"heun"``)."""
    try:
        return SAMPLERS[name]()
    except KeyError:
        raise ConfigError(f"unknown sampler {name!r}; available: {', '.join(sorted(SAMPLERS))}") from None


def num_model_evaluations(name: str, t_seq: Sequence[float]) -> int:
    """How many times ``name`` calls the velocity function over ``t_seq`` (for progress estimates)."""
    steps = len(t_seq) - 1
    if get_sampler(name).evaluations_per_step == 1:
        return steps
    return steps + sum(1 for t in t_seq[1:] if t > 0.0)
