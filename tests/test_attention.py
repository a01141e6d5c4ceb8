import pytest
import torch

from synchuman_core.attention import attention, available_backends, use_backend, varlen_attention
from synchuman_core.attention.dispatch import _naive_dense
from synchuman_core.errors import ConfigError


def _rand(*shape):
    return torch.randn(*shape, dtype=torch.float64)


def test_dense_matches_naive_softmax():
    q, k, v = _rand(2, 7, 3, 8), _rand(2, 11, 3, 8), _rand(2, 11, 3, 8)
    ref = torch.softmax(torch.einsum("blhd,bmhd->bhlm", q, k) / 8**0.5, -1)
    ref = torch.einsum("bhlm,bmhd->blhd", ref, v)
    torch.testing.assert_close(attention(q, k, v), ref)
    torch.testing.assert_close(attention(q, k, v, backend="naive"), ref)


def test_custom_scale_and_query_chunking(monkeypatch):
    q, k, v = _rand(1, 33, 2, 4), _rand(1, 5, 2, 4), _rand(1, 5, 2, 4)
    full = attention(q, k, v, scale=0.3)
    monkeypatch.setenv("SYNCHUMAN_ATTN_QUERY_CHUNK", "8")
    torch.testing.assert_close(attention(q, k, v, scale=0.3), full)
    torch.testing.assert_close(full, _naive_dense(q, k, v, 0.3))


@pytest.mark.parametrize("lens", [[5, 5, 5], [1, 9, 3, 17], [4]])
def test_varlen_matches_per_sequence(lens):
    kv_lens = [n + 2 for n in lens]
    q, k, v = _rand(sum(lens), 2, 8), _rand(sum(kv_lens), 2, 8), _rand(sum(kv_lens), 2, 8)
    out = varlen_attention(q, k, v, lens, kv_lens)
    qo = ko = 0
    for lq, lk in zip(lens, kv_lens):
        ref = _naive_dense(q[None, qo : qo + lq], k[None, ko : ko + lk], v[None, ko : ko + lk], 8**-0.5)[0]
        torch.testing.assert_close(out[qo : qo + lq], ref)
        qo, ko = qo + lq, ko + lk


def test_varlen_small_budget_groups(monkeypatch):
    import synchuman_core.attention.dispatch as d

    monkeypatch.setattr(d, "_VARLEN_SCORE_BUDGET", 50)
    lens = [3, 7, 2, 9, 9, 1]
    q, k, v = _rand(sum(lens), 1, 4), _rand(sum(lens), 1, 4), _rand(sum(lens), 1, 4)
    torch.testing.assert_close(varlen_attention(q, k, v, lens, lens), varlen_attention(q, k, v, lens, lens, backend="naive"))


def test_backend_resolution_per_call(monkeypatch):
    assert {"sdpa", "naive"} <= set(available_backends())
    q = _rand(1, 3, 1, 4)
    monkeypatch.setenv("SYNCHUMAN_ATTN_BACKEND", "nonexistent")
    with pytest.raises(ConfigError, match="unknown attention backend"):
        attention(q, q, q)
    with use_backend("naive"):  # context beats the environment
        attention(q, q, q)
    with pytest.raises(ConfigError):
        with use_backend("nope"):
            pass


def test_unsupported_backend_falls_back_to_sdpa():
    from synchuman_core.attention import AttentionBackend, register_backend

    def boom(*a):
        raise AssertionError("must not be called for CPU tensors")

    register_backend(AttentionBackend("cuda_only_test", boom, boom, frozenset({"cuda"})))
    q = _rand(1, 3, 1, 4)
    torch.testing.assert_close(attention(q, q, q, backend="cuda_only_test"), attention(q, q, q))


def test_fastest_backend_picks_flash_on_cuda_half_only(monkeypatch):
    from synchuman_core.attention import AttentionBackend, best_backend, current_backend, dispatch, fastest_backend

    monkeypatch.delenv("SYNCHUMAN_ATTN_BACKEND", raising=False)
    monkeypatch.setitem(dispatch._REGISTRY, "flash_attn",
                        AttentionBackend("flash_attn", _naive_dense, None, frozenset({"cuda"})))
    assert best_backend("cuda", torch.float16) == "flash_attn"
    assert best_backend("cuda", torch.bfloat16) == "flash_attn"
    assert best_backend("cuda", torch.float32) == "sdpa"
    assert best_backend("cpu", torch.float16) == "sdpa"
    with fastest_backend("cuda", torch.float16) as name:
        assert name == "flash_attn" == current_backend()
    assert current_backend() == "sdpa"
    # an explicit choice always wins: an enclosing use_backend or the environment variable
    with use_backend("naive"), fastest_backend("cuda", torch.float16) as name:
        assert name == "naive" == current_backend()
    monkeypatch.setenv("SYNCHUMAN_ATTN_BACKEND", "sdpa")
    with fastest_backend("cuda", torch.float16) as name:
        assert name == "sdpa"


def test_pipeline_stages_run_on_the_fastest_backend(monkeypatch, tmp_path):
    """run_stage1 / run_stage2 enter fastest_backend with the models' device: every attention call of
    the joint model, the SLat flow and the decoders goes to the backend it names."""
    from synchuman_core import pipeline
    from synchuman_core.attention import AttentionBackend, dispatch
    from synchuman_core.demo import example_person
    from synchuman_core.io import SyncHumanModels
    from synchuman_core.io.tiny import write_tiny_checkpoint
    from synchuman_core.samplers import SamplerSettings, make_generator

    calls = {"dense": 0, "varlen": 0}
    sdpa = dispatch._REGISTRY["sdpa"]

    def dense(q, k, v, scale):
        calls["dense"] += 1
        return sdpa.dense(q, k, v, scale)

    def varlen(q, k, v, ql, kl, scale):
        calls["varlen"] += 1
        return sdpa.varlen(q, k, v, ql, kl, scale)

    monkeypatch.delenv("SYNCHUMAN_ATTN_BACKEND", raising=False)
    monkeypatch.setitem(dispatch._REGISTRY, "spy", AttentionBackend("spy", dense, varlen))
    monkeypatch.setattr(dispatch, "best_backend", lambda device, dtype: "spy")
    write_tiny_checkpoint(tmp_path / "tiny", seed=2)
    models = SyncHumanModels(tmp_path / "tiny", dtype=torch.float32)
    pre = pipeline.preprocess(models, example_person(256))
    inputs = pipeline.prepare_conditioning(models, pre)
    before = dict(calls)
    s1 = pipeline.run_stage1(models, inputs, SamplerSettings.stage1(steps=1), make_generator(0))
    assert calls["dense"] > before["dense"]
    before = dict(calls)
    pipeline.run_stage2(models, s1, SamplerSettings.stage2(steps=1), make_generator(0), decode_gaussians=False)
    assert calls["varlen"] > before["varlen"]
    assert dispatch.current_backend() == "sdpa"  # restored
