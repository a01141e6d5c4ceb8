"""Stage-2 SLat sampler: spy models, a tiny real SLatFlowModel, normalization."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import fixture_dir

from synchuman_core.errors import ConfigError, NumericalError
from synchuman_core.samplers import SamplerSettings, make_generator
from synchuman_core.sparse import SparseTensor
from synchuman_core.stage2.sampling import SLAT_MEAN, SLAT_STD, SlatNormalization, sample_slat


def _coords(batches=(0,), n=20, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in batches:
        xyz = torch.randperm(64**3, generator=g)[:n]
        xyz = torch.stack([xyz // 4096, (xyz // 64) % 64, xyz % 64], 1)
        rows.append(torch.cat([torch.full((n, 1), b), xyz], 1))
    return torch.cat(rows).int()


class Spy:
    def __init__(self, nan=False):
        self.calls = []
        self.nan = nan

    def __call__(self, x: SparseTensor, t: torch.Tensor, cond: torch.Tensor) -> SparseTensor:
        assert isinstance(x, SparseTensor) and t.dtype == torch.float32 and t.shape == (x.batch_size,)
        assert cond.shape[0] == x.batch_size
        self.calls.append(dict(t=t.clone(), neg=bool((cond == 0).all()), batch=x.batch_size))
        b = x.coords[:, 0].long()
        v = 0.5 * torch.tanh(x.feats) + cond.mean(dim=(1, 2))[b][:, None] + 3e-4 * t[b][:, None]
        return x.replace(v * float("nan") if self.nan else v)


def test_official_settings_call_pattern():
    spy = Spy()
    cond = torch.randn(1, 6, 16)
    coords = _coords()
    out = sample_slat(spy, coords, cond, SamplerSettings.stage2(), make_generator(0))
    assert isinstance(out, SparseTensor) and out.feats.shape == (20, 8) and torch.equal(out.coords, coords)
    t = SamplerSettings.stage2().schedule()
    guided = [0.5 <= ti <= 1.0 for ti in t[:-1]]
    assert sum(guided) == 19 and len(spy.calls) == 25 + 19
    expect = []
    for ti, gd in zip(t[:-1], guided):
        expect += [(1000.0 * ti, False)] + ([(1000.0 * ti, True)] if gd else [])
    got = [(float(c["t"][0]), c["neg"]) for c in spy.calls]
    assert [n for _, n in got] == [n for _, n in expect]
    assert all(abs(a - b) < 1e-3 for (a, _), (b, _) in zip(got, expect))


def test_seeded_and_reproducible():
    cond, coords, s = torch.randn(1, 6, 16), _coords(), SamplerSettings.stage2(steps=5)
    a = sample_slat(Spy(), coords, cond, s, make_generator(7))
    b = sample_slat(Spy(), coords, cond, s, make_generator(7))
    c = sample_slat(Spy(), coords, cond, s, make_generator(8))
    assert torch.equal(a.feats, b.feats) and not torch.equal(a.feats, c.feats)
    noise = torch.randn(20, 8, generator=make_generator(7))
    d = sample_slat(Spy(), coords, cond, s, noise=noise)
    assert torch.equal(a.feats, d.feats)


def test_denormalization():
    norm = SlatNormalization()
    x = torch.randn(5, 8)
    torch.testing.assert_close(norm.denormalize(x), x * torch.tensor(SLAT_STD) + torch.tensor(SLAT_MEAN))
    # a zero velocity keeps the noise; the output is the noise de-normalised
    zero = lambda x, t, c: x.replace(torch.zeros_like(x.feats))  # noqa: E731
    noise = torch.randn(20, 8)
    out = sample_slat(zero, _coords(), torch.zeros(1, 3, 4), SamplerSettings.stage2(steps=3), noise=noise)
    torch.testing.assert_close(out.feats, norm.denormalize(noise))
    with pytest.raises(ConfigError):
        norm.denormalize(torch.zeros(3, 4))


def test_normalization_from_pipeline_json():
    cfg = json.loads((fixture_dir("g_schedules_cfg") / "config.json").read_text())
    n = SlatNormalization.from_pipeline_json({"args": {"slat_normalization": cfg["slat_normalization"]}})
    assert n == SlatNormalization()
    with pytest.raises(ConfigError):
        SlatNormalization.from_pipeline_json({"args": {}})


def test_batch_of_two_repeats_cond():
    spy = Spy()
    coords = _coords(batches=(0, 1), n=10)
    out = sample_slat(spy, coords, torch.randn(1, 6, 16), SamplerSettings.stage2(steps=3), make_generator(0))
    assert out.batch_size == 2 and all(c["batch"] == 2 for c in spy.calls)


def test_trellis_cfg_disabled_calls_once_per_step():
    spy = Spy()
    sample_slat(spy, _coords(), torch.randn(1, 6, 16), SamplerSettings.stage2(steps=4, guidance=0.0), make_generator(0))
    assert len(spy.calls) == 4 and not any(c["neg"] for c in spy.calls)


def test_errors():
    with pytest.raises(ConfigError, match="Generator"):
        sample_slat(Spy(), _coords(), torch.randn(1, 6, 16), SamplerSettings.stage2(steps=2))
    with pytest.raises(ConfigError):
        sample_slat(Spy(), _coords(), torch.randn(1, 6, 16), SamplerSettings.stage2(steps=2), noise=torch.zeros(3, 8))
    with pytest.raises(NumericalError):
        sample_slat(Spy(nan=True), _coords(), torch.randn(1, 6, 16), SamplerSettings.stage2(steps=2), make_generator(0))


def test_callback_and_interrupt():
    seen = []
    sample_slat(Spy(), _coords(), torch.randn(1, 6, 16), SamplerSettings.stage2(steps=3), make_generator(0),
                callback=lambda i, n, x: seen.append((i, n, tuple(x.shape))))
    assert seen == [(1, 3, (20, 8)), (2, 3, (20, 8)), (3, 3, (20, 8))]

    def stop(i, n, x):
        raise KeyboardInterrupt

    spy = Spy()
    with pytest.raises(KeyboardInterrupt):
        sample_slat(spy, _coords(), torch.randn(1, 6, 16), SamplerSettings.stage2(steps=5), make_generator(0),
                    callback=stop)
    assert len(spy.calls) == 2  # step 0: cond + neg


def test_tiny_real_slat_flow_model():
    from synchuman_core.parity.fixgen import fill_model
    from synchuman_core.stage2.slat_flow import SLatFlowConfig, SLatFlowModel

    cfg = SLatFlowConfig.from_official(json.loads((fixture_dir("e_slat_flow") / "config.json").read_text()))
    model = fill_model(SLatFlowModel(cfg), 3).eval()
    coords = _coords(n=30)
    cond = torch.randn(1, 5, cfg.cond_channels, generator=make_generator(1))
    s = SamplerSettings.stage2(steps=3)
    a = sample_slat(model, coords, cond, s, make_generator(0))
    b = sample_slat(model, coords, cond, s, make_generator(0))
    assert a.feats.shape == (30, 8) and a.feats.dtype == torch.float32 and torch.isfinite(a.feats).all()
    assert torch.equal(a.feats, b.feats)
    # the model actually moved the sample away from the de-normalised noise
    noise = torch.randn(30, 8, generator=make_generator(0))
    assert not torch.allclose(a.feats, SlatNormalization().denormalize(noise), atol=1e-3)
