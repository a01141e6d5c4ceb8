"""Shared sampler machinery: schedule, guidance strategies, Euler/Heun, noise, settings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import fixture_dir

from synchuman_core.errors import ConfigError
from synchuman_core.samplers import (
    FlowEulerSampler,
    FlowHeunSampler,
    GuidanceInterval,
    NoGuidance,
    SamplerSettings,
    StandardCFG,
    TrellisCFG,
    get_sampler,
    make_generator,
    make_guidance,
    num_model_evaluations,
    randn,
    rescaled_t_schedule,
    warp_t,
)

# ------------------------------------------------------------------------------------------ schedule


def test_schedule_matches_official_numpy_formula_bitwise():
    for steps, r in [(50, 3.0), (25, 3.0), (7, 1.0), (13, 0.5)]:
        ref = np.linspace(1, 0, steps + 1)
        ref = r * ref / (1 + (r - 1) * ref)
        got = rescaled_t_schedule(steps, r)
        assert len(got) == steps + 1
        assert got == [float(v) for v in ref]
        assert got[0] == 1.0 and got[-1] == 0.0
        assert all(a > b for a, b in zip(got, got[1:]))
        assert got[1] == pytest.approx(warp_t(1 - 1 / steps, r))


def test_schedule_known_values():
    t = rescaled_t_schedule(50, 3.0)
    assert t[1] == pytest.approx(0.99324, abs=1e-5) and t[2] == pytest.approx(0.98630, abs=1e-5)
    assert t[-2] == pytest.approx(0.05769, abs=1e-5)
    assert rescaled_t_schedule(4, 1.0) == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_schedule_equals_fixture_sequences():
    from safetensors.torch import load_file

    out = load_file(str(fixture_dir("g_schedules_cfg") / "outputs.safetensors"))
    assert torch.equal(torch.tensor(rescaled_t_schedule(50, 3.0), dtype=torch.float64), out["stage1_t_seq"])
    assert torch.equal(torch.tensor(rescaled_t_schedule(25, 3.0), dtype=torch.float64), out["stage2_t_seq"])


@pytest.mark.parametrize("steps,r", [(0, 3.0), (-1, 3.0), (2.5, 3.0), (10, 0.0), (10, -1.0)])
def test_schedule_rejects_bad_arguments(steps, r):
    with pytest.raises(ConfigError):
        rescaled_t_schedule(steps, r)


# ------------------------------------------------------------------------------------------ guidance


def test_guidance_formulas():
    c, u = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 3.0])
    assert torch.equal(StandardCFG(3.0).combine(c, u), u + 3.0 * (c - u))
    assert torch.equal(TrellisCFG(5.0).combine(c, u), 6.0 * c - 5.0 * u)
    # the two forms are the same family: trellis w == standard 1 + w
    torch.testing.assert_close(TrellisCFG(5.0).combine(c, u), StandardCFG(6.0).combine(c, u))
    assert torch.equal(NoGuidance().combine(c, None), c)
    assert torch.equal(StandardCFG(3.0).combine(c, None), c)


def test_guidance_needs_uncond():
    assert StandardCFG(3.0).needs_uncond(0.2) and not StandardCFG(1.0).needs_uncond(0.2)
    assert TrellisCFG(5.0).needs_uncond(0.2) and not TrellisCFG(0.0).needs_uncond(0.2)
    g = GuidanceInterval(TrellisCFG(5.0), 0.5, 1.0)
    assert g.needs_uncond(1.0) and g.needs_uncond(0.5) and not g.needs_uncond(0.4999)
    assert not GuidanceInterval(TrellisCFG(0.0), 0.5, 1.0).needs_uncond(0.7)


def test_make_guidance():
    assert make_guidance("standard", 3.0) == StandardCFG(3.0)
    assert make_guidance("trellis", 5.0, (0.5, 1.0)) == GuidanceInterval(TrellisCFG(5.0), 0.5, 1.0)
    with pytest.raises(ConfigError):
        make_guidance("cfg++", 3.0)
    with pytest.raises(ConfigError):
        make_guidance("standard", 3.0, (0.8, 0.2))


def test_official_stage2_interval_applies_to_first_19_of_25_steps():
    s = SamplerSettings.stage2()
    g = s.make_guidance()
    applied = [g.needs_uncond(t) for t in s.schedule()[:-1]]
    assert applied == [True] * 19 + [False] * 6


# ------------------------------------------------------------------------------------------ integrators


def _exp_field(x, t, k):
    """dx/dt = x  ->  integrating from t=1 to t=0 gives x(0) = x(1) / e."""
    return x


def _integrate(sampler, steps):
    x0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    x = sampler.sample(_exp_field, x0, rescaled_t_schedule(steps, 1.0))
    return float((x - x0 / math.e).abs().max())


def test_euler_is_exact_on_straight_flows():
    eps, x0 = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    # x_t = (1 - t) x0 + t eps has constant velocity eps - x0
    out = FlowEulerSampler().sample(lambda x, t, k: eps - x0, eps, rescaled_t_schedule(7, 3.0))
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-12)


def test_convergence_orders_euler_first_heun_second():
    e1, e2 = _integrate(FlowEulerSampler(), 20), _integrate(FlowEulerSampler(), 40)
    h1, h2 = _integrate(FlowHeunSampler(), 20), _integrate(FlowHeunSampler(), 40)
    assert 1.8 < e1 / e2 < 2.2
    assert 3.5 < h1 / h2 < 4.5
    assert h1 < e1 / 10


def test_heun_evaluation_count_and_times():
    seen = []

    def v(x, t, k):
        seen.append((t, k))
        return torch.zeros_like(x)

    t_seq = rescaled_t_schedule(5, 3.0)
    FlowHeunSampler().sample(v, torch.zeros(1), t_seq)
    assert len(seen) == 2 * 5 - 1 == num_model_evaluations("heun", t_seq)
    assert all(t_seq[k] == t for t, k in seen)
    assert num_model_evaluations("euler", t_seq) == 5


def test_tuple_state_keeps_each_dtype():
    x = (torch.ones(2, dtype=torch.float16), torch.ones(3, dtype=torch.float32))

    def v(state, t, k):
        return (torch.full((2,), 0.1, dtype=torch.float32), torch.full((3,), 0.1, dtype=torch.float16))

    for sampler in (FlowEulerSampler(), FlowHeunSampler()):
        a, b = sampler.sample(v, x, rescaled_t_schedule(4, 3.0))
        assert a.dtype == torch.float16 and b.dtype == torch.float32
        torch.testing.assert_close(b, torch.full((3,), 0.9), rtol=0, atol=1e-3)


def test_callback_progress_and_interrupt():
    calls = []
    evals = []

    def v(x, t, k):
        evals.append(k)
        return torch.ones_like(x)

    FlowEulerSampler().sample(v, torch.zeros(2), rescaled_t_schedule(6, 1.0), lambda i, n, x: calls.append((i, n)))
    assert calls == [(i, 6) for i in range(1, 7)]

    class Stop(Exception):
        pass

    def cb(i, n, x):
        if i == 3:
            raise Stop

    evals.clear()
    with pytest.raises(Stop):
        FlowEulerSampler().sample(v, torch.zeros(2), rescaled_t_schedule(6, 1.0), cb)
    assert evals == [0, 1, 2]


@pytest.mark.parametrize("name", ["euler", "heun"])
def test_loops_never_read_tensor_values(name):
    """On the meta device any host sync (``.item()``, ``bool(t)``) raises: the loop plus guidance
    must run without one."""
    g = make_guidance("trellis", 5.0, (0.5, 1.0))
    x = torch.empty(4, 8, device="meta")

    def v(x, t, k):
        c = x * 2.0 + 1.0
        return g.combine(c, x * 0.5) if g.needs_uncond(t) else c

    out = get_sampler(name).sample(v, x, rescaled_t_schedule(10, 3.0), lambda i, n, s: None)
    assert out.device.type == "meta" and out.shape == (4, 8)


def test_get_sampler_unknown():
    with pytest.raises(ConfigError, match="available"):
        get_sampler("dpm++")


# ------------------------------------------------------------------------------------------ noise


def test_generator_noise_equals_global_rng_draw():
    torch.manual_seed(43)
    ref = torch.randn(1, 8, 16, 16, 16)
    assert torch.equal(randn((1, 8, 16, 16, 16), make_generator(43)), ref)


def test_noise_is_drawn_on_cpu_then_moved():
    a = randn((3, 5), make_generator(1), dtype=torch.float16)
    b = randn((3, 5), make_generator(1)).half()
    assert a.dtype == torch.float16 and torch.equal(a, b)
    m = randn((3, 5), make_generator(1), device="meta")
    assert m.device.type == "meta"
    g = make_generator(2)
    first, second = randn((4,), g), randn((4,), g)
    assert not torch.equal(first, second)


def test_noise_requires_a_cpu_generator():
    with pytest.raises(ConfigError, match="Generator"):
        randn((2,), 123)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ settings


def test_settings_presets_are_the_official_values():
    s1, s2 = SamplerSettings.stage1(), SamplerSettings.stage2()
    assert (s1.sampler, s1.steps, s1.guidance, s1.guidance_form, s1.interval, s1.rescale_t) == (
        "euler", 50, 3.0, "standard", (0.0, 1.0), 3.0)
    assert (s2.sampler, s2.steps, s2.guidance, s2.guidance_form, s2.interval, s2.rescale_t) == (
        "euler", 25, 5.0, "trellis", (0.5, 1.0), 3.0)
    assert s1.make_guidance() == StandardCFG(3.0)
    assert isinstance(s2.make_sampler(), FlowEulerSampler)
    assert SamplerSettings.stage1(steps=10, sampler="heun").steps == 10


@pytest.mark.parametrize(
    "kw",
    [dict(sampler="ddim"), dict(steps=0), dict(steps=2.5), dict(steps=True), dict(guidance_form="x"),
     dict(interval=(0.7, 0.3)), dict(interval=(0.0, 1.5)), dict(interval=(0.1,)), dict(rescale_t=0.0)],
)
def test_settings_validation(kw):
    with pytest.raises(ConfigError):
        SamplerSettings(**kw)


def test_settings_round_trip_and_pipeline_json():
    import json

    s = SamplerSettings.stage2(sampler="heun", steps=12)
    assert SamplerSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(ConfigError, match="unknown"):
        SamplerSettings.from_dict({"steps": 3, "eta": 1.0})
    pipeline = {"args": {"slat_sampler": {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5},
                                          "params": {"steps": 25, "cfg_strength": 5.0, "cfg_interval": [0.5, 1.0],
                                                     "rescale_t": 3.0}}}}
    assert SamplerSettings.from_pipeline_json(pipeline) == SamplerSettings.stage2()
    pipeline["args"]["slat_sampler"]["params"]["eta"] = 0.3
    with pytest.raises(ConfigError, match="eta"):
        SamplerSettings.from_pipeline_json(pipeline)
    with pytest.raises(ConfigError):
        SamplerSettings.from_pipeline_json({"args": {}})
