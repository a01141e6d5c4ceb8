"""Stage-1 joint 2D-3D sampler on spy models (+ fixture g parity)."""

from __future__ import annotations

import pytest
import torch
from conftest import fixture_dir

from synchuman_core.errors import ConfigError, NumericalError
from synchuman_core.samplers import SamplerSettings, make_generator
from synchuman_core.stage1.sampling import (
    JointLatents,
    Stage1Conditioning,
    cfg_inputs,
    duplicate_for_cfg,
    sample_joint,
    split_cfg_2d,
    split_cfg_3d,
)

V, H, W, T, D, E, L, C = 5, 4, 4, 3, 6, 10, 7, 12


def _cond(seed: int = 0, dtype=torch.float32) -> Stage1Conditioning:
    g = torch.Generator().manual_seed(seed)
    return Stage1Conditioning(
        prompt_embeds=torch.randn(2 * V, T, D, generator=g, dtype=dtype),
        image_embeds=torch.randn(2 * V, E, generator=g, dtype=dtype),
        image_latents=torch.randn(2 * V, 4, H, W, generator=g, dtype=dtype),
        structure_cond=torch.randn(1, L, C, generator=g, dtype=dtype),
    )


class Spy:
    """A joint model that mixes every input per CFG group (like the real model: views of one group
    interact, groups never do), records calls and checks the batch layout."""

    def __init__(self, out_dtype_2d=None, out_dtype_3d=None, nan_at: int | None = None):
        self.calls: list[dict] = []
        self.out_dtype_2d, self.out_dtype_3d, self.nan_at = out_dtype_2d, out_dtype_3d, nan_at

    def __call__(self, sample, timestep, *, encoder_hidden_states, class_labels, trellis_x, trellis_t, trellis_cond):
        g = trellis_x.shape[0]
        assert sample.shape[0] == encoder_hidden_states.shape[0] == class_labels.shape[0] == g * 2 * V
        assert trellis_cond.shape[0] == g and trellis_t.shape == (1,)
        self.calls.append(dict(batch=sample.shape[0], groups=g, timestep=timestep, trellis_t=trellis_t,
                               sample_dtype=sample.dtype, trellis_x_dtype=trellis_x.dtype))
        # per-group summaries: rows of group j are the j-th V-block of each domain half
        x2 = sample.float()
        per_row = 0.02 * class_labels.float().mean(-1) + 0.01 * encoder_hidden_states.float().mean((1, 2))
        v = 0.1 * x2[:, :4] - 0.05 * x2[:, 4:] + per_row[:, None, None, None] + 1e-4 * timestep.float()
        halves = v.view(2, g, V, 4, H, W)  # [domain, group, view, ...]
        group_mean = halves.mean(dim=(0, 2), keepdim=True)  # couples the views and domains of one group
        v = (halves + 0.1 * group_mean).reshape(-1, 4, H, W)
        z = trellis_x.float()
        vt = 0.1 * z + 0.05 * trellis_cond.float().mean((1, 2))[:, None, None, None, None] + 1e-4 * trellis_t.float()
        vt = vt + 0.01 * halves.mean(dim=(0, 2, 3, 4, 5))[:, None, None, None, None]  # 2D -> 3D per group
        if self.nan_at is not None and len(self.calls) > self.nan_at:
            vt = vt * float("nan")
        return v.to(self.out_dtype_2d or sample.dtype), vt.to(self.out_dtype_3d or trellis_x.dtype)


def test_cfg_layout_helpers():
    c = _cond()
    inp = cfg_inputs(c)
    n, k = c.image_embeds.chunk(2)
    assert torch.equal(inp.class_labels, torch.cat([torch.zeros_like(n), n, torch.zeros_like(k), k]))
    pn, pc = c.prompt_embeds.chunk(2)
    assert torch.equal(inp.encoder_hidden_states, torch.cat([pn, pn, pc, pc]))
    assert torch.equal(inp.trellis_cond[0], torch.zeros(L, C)) and torch.equal(inp.trellis_cond[1], c.structure_cond[0])
    lat = torch.arange(2 * V).float()
    assert duplicate_for_cfg(lat).tolist() == [0, 1, 2, 3, 4] * 2 + [5, 6, 7, 8, 9] * 2
    v = torch.arange(4 * V).float()
    cond, unc = split_cfg_2d(v)
    assert cond.tolist() == list(range(5, 10)) + list(range(15, 20))
    assert unc.tolist() == list(range(0, 5)) + list(range(10, 15))
    vc, vu = split_cfg_3d(torch.tensor([0.0, 1.0]))
    assert (float(vc), float(vu)) == (1.0, 0.0)


def test_same_seed_same_result_and_noise_order():
    s = SamplerSettings.stage1(steps=4)
    a = sample_joint(Spy(), _cond(), s, make_generator(43))
    b = sample_joint(Spy(), _cond(), s, make_generator(43))
    c = sample_joint(Spy(), _cond(), s, make_generator(44))
    assert isinstance(a, JointLatents)
    assert torch.equal(a.latents, b.latents) and torch.equal(a.structure_latent, b.structure_latent)
    assert not torch.equal(a.latents, c.latents)
    # noise: 3D first (official first CPU draw), then 2D
    g = make_generator(43)
    z0 = torch.randn(1, 8, 16, 16, 16, generator=g)
    l0 = torch.randn(2 * V, 4, H, W, generator=g)
    d = sample_joint(Spy(), _cond(), s, noise=(l0, z0))
    assert torch.equal(a.latents, d.latents) and torch.equal(a.structure_latent, d.structure_latent)


def test_batched_and_sequential_cfg_agree():
    s = SamplerSettings.stage1(steps=5)
    spy_b, spy_s = Spy(), Spy()
    a = sample_joint(spy_b, _cond(), s, make_generator(1), cfg_batching="batched")
    b = sample_joint(spy_s, _cond(), s, make_generator(1), cfg_batching="sequential")
    torch.testing.assert_close(a.latents, b.latents, rtol=0, atol=1e-6)
    torch.testing.assert_close(a.structure_latent, b.structure_latent, rtol=0, atol=1e-6)
    assert [c["batch"] for c in spy_b.calls] == [4 * V] * 5
    assert [c["batch"] for c in spy_s.calls] == [2 * V] * 10


def test_guidance_matters_and_one_means_cond_only():
    s3 = SamplerSettings.stage1(steps=3)
    s1 = SamplerSettings.stage1(steps=3, guidance=1.0)
    spy = Spy()
    a = sample_joint(Spy(), _cond(), s3, make_generator(0))
    b = sample_joint(spy, _cond(), s1, make_generator(0))
    assert not torch.allclose(a.latents, b.latents)
    assert [c["groups"] for c in spy.calls] == [1, 1, 1]  # official crashes here; we run the cond half only
    # guidance 1 == the conditional prediction alone == sequential run with the cond half
    c = sample_joint(Spy(), _cond(), s1, make_generator(0), cfg_batching="sequential")
    assert torch.equal(b.latents, c.latents)


def test_guidance_interval_and_trellis_form():
    s = SamplerSettings.stage1(steps=6, guidance_form="trellis", guidance=2.0, interval=(0.5, 1.0))
    spy = Spy()
    sample_joint(spy, _cond(), s, make_generator(0))
    t = s.schedule()
    assert [c["groups"] for c in spy.calls] == [2 if 0.5 <= ti <= 1.0 else 1 for ti in t[:-1]]
    # trellis w == standard 1 + w
    a = sample_joint(Spy(), _cond(), SamplerSettings.stage1(steps=4, guidance_form="trellis", guidance=2.0),
                     make_generator(5))
    b = sample_joint(Spy(), _cond(), SamplerSettings.stage1(steps=4, guidance=3.0), make_generator(5))
    torch.testing.assert_close(a.latents, b.latents, rtol=0, atol=1e-5)


def test_timesteps_and_dtypes_fp16():
    s = SamplerSettings.stage1(steps=4)
    spy = Spy(out_dtype_2d=torch.float16, out_dtype_3d=torch.float16)
    out = sample_joint(spy, _cond(), s, make_generator(0), dtype=torch.float16)
    assert out.latents.dtype == torch.float16 and out.structure_latent.dtype == torch.float32
    t = s.schedule()
    for k, c in enumerate(spy.calls):
        assert c["timestep"].dtype == torch.float64 and c["timestep"].ndim == 0
        assert float(c["timestep"]) == 1000.0 * t[k]
        assert c["trellis_t"].dtype == torch.float16 and c["trellis_t"].shape == (1,)
        assert float(c["trellis_t"][0]) == float(torch.tensor(1000.0 * t[k], dtype=torch.float16))
        assert c["sample_dtype"] == torch.float16 and c["trellis_x_dtype"] == torch.float32


def test_bf16_keeps_trellis_t_in_fp32():
    spy = Spy()
    out = sample_joint(spy, _cond(), SamplerSettings.stage1(steps=2), make_generator(0), dtype=torch.bfloat16)
    assert out.latents.dtype == torch.bfloat16 and out.structure_latent.dtype == torch.float32
    assert all(c["trellis_t"].dtype == torch.float32 for c in spy.calls)


def test_heun_runs_with_joint_state():
    s = SamplerSettings.stage1(steps=3, sampler="heun")
    spy = Spy()
    out = sample_joint(spy, _cond(), s, make_generator(0))
    assert len(spy.calls) == 5 and out.latents.shape == (2 * V, 4, H, W)


def test_callback_receives_state_and_may_interrupt():
    seen = []
    sample_joint(Spy(), _cond(), SamplerSettings.stage1(steps=3), make_generator(0),
                 callback=lambda i, n, x: seen.append((i, n, x[0].shape, x[1].shape)))
    assert seen == [(i, 3, (2 * V, 4, H, W), (1, 8, 16, 16, 16)) for i in (1, 2, 3)]

    class Interrupted(Exception):
        pass

    def stop(i, n, x):
        raise Interrupted

    spy = Spy()
    with pytest.raises(Interrupted):
        sample_joint(spy, _cond(), SamplerSettings.stage1(steps=10), make_generator(0), callback=stop)
    assert len(spy.calls) == 1


def test_no_host_sync_inside_the_loop():
    """Everything on the meta device: any ``.item()``/``bool()`` in the loop would raise."""
    c = _cond().to("meta")
    out = sample_joint(Spy(), c, SamplerSettings.stage1(steps=3), make_generator(0), check_finite=False)
    assert out.latents.device.type == "meta" and out.structure_latent.shape == (1, 8, 16, 16, 16)


def test_nan_raises_numerical_error():
    with pytest.raises(NumericalError):
        sample_joint(Spy(nan_at=1), _cond(), SamplerSettings.stage1(steps=3), make_generator(0))


def test_input_validation():
    c = _cond()
    with pytest.raises(ConfigError):
        Stage1Conditioning(c.prompt_embeds[:3], c.image_embeds, c.image_latents, c.structure_cond)
    with pytest.raises(ConfigError):
        Stage1Conditioning(c.prompt_embeds, c.image_embeds[:4], c.image_latents, c.structure_cond)
    with pytest.raises(ConfigError):
        Stage1Conditioning(c.prompt_embeds, c.image_embeds, c.image_latents, c.structure_cond[0])
    with pytest.raises(ConfigError, match="Generator"):
        sample_joint(Spy(), c, SamplerSettings.stage1(steps=2))
    with pytest.raises(ConfigError):
        sample_joint(Spy(), c, SamplerSettings.stage1(steps=2), make_generator(0), cfg_batching="parallel")
    with pytest.raises(ConfigError, match="noise"):
        sample_joint(Spy(), c, SamplerSettings.stage1(steps=2), noise=(torch.zeros(2, 4, H, W), torch.zeros(1, 8, 16, 16, 16)))


def test_fixture_g_parity():
    from synchuman_core.parity import run_fixture

    comps = run_fixture(fixture_dir("g_schedules_cfg"))
    bad = [(c.name, c.relative_error()) for c in comps if not c.passed]
    assert not bad, bad
    assert any(c.name == "stage1_final_latents" for c in comps)


@pytest.mark.slow
def test_real_tiny_joint_model_batched_equals_sequential():
    """The joint model keeps CFG groups independent, so running the halves one after another is the same
    computation (up to float reassociation)."""
    import dataclasses

    from synchuman_core.io.tiny import fill_tiny
    from synchuman_core.io.tiny_configs import TINY_JOINT
    from synchuman_core.stage1.joint import JointModelConfig, SyncHumanJointModel

    cfg = JointModelConfig.from_official(
        {**TINY_JOINT, "sample_size": 24, "model_channels": 32, "num_heads": 2, "num_head_channels": 16}
    )
    model = fill_tiny(SyncHumanJointModel(dataclasses.replace(cfg, sync_heads=2, sync_head_dim=16)), 0).eval()
    g = make_generator(0)
    cond = Stage1Conditioning(
        prompt_embeds=torch.randn(10, 77, 32, generator=g),
        image_embeds=torch.randn(10, 32, generator=g),
        image_latents=torch.randn(10, 4, 24, 24, generator=g),
        structure_cond=torch.randn(1, 9, 32, generator=g),
    )
    s = SamplerSettings.stage1(steps=1)
    a = sample_joint(model, cond, s, make_generator(1))
    b = sample_joint(model, cond, s, make_generator(1), cfg_batching="sequential")
    for x, y in ((a.latents, b.latents), (a.structure_latent, b.structure_latent)):
        assert torch.isfinite(x).all()
        torch.testing.assert_close(x, y, rtol=0, atol=1e-5 * float(x.abs().max()))
