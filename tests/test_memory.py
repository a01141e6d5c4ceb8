"""Memory tiers: presets, dtype plans, residency policy, the peak-memory estimate, equal results."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import manifest_path
from torch import nn

from synchuman_core.errors import ConfigError
from synchuman_core.memory import (
    ALL_COMPONENTS,
    GB,
    REAL_COMPONENT_SIZES,
    STAGES,
    TIERS,
    ManagedModels,
    apply_tier,
    dtype_plan,
    estimate_peak_memory,
    get_tier,
    memory_breakdown,
    weight_bytes,
)

MANIFESTS = {
    "joint": "SyncHuman_2D3DCrossSpaceDiffusion",
    "structure_decoder": "sparse_structure_decoder",
    "vae": "vae_AutoencoderKL",
    "image_encoder": "image_encoder_CLIPVisionModelWithProjection",
    "text_encoder": "text_encoder_CLIPTextModel",
    "slat_flow": "slat_flow",
    "mesh_decoder": "slat_decoder_mesh",
    "gs_decoder": "slat_decoder_gs",
}
_ITEM = {"float32": 4, "float16": 2}


def _manifest(component: str) -> dict:
    return json.loads(manifest_path(MANIFESTS[component]).read_text())


# ------------------------------------------------------------------------------------------ tiers


def test_presets_and_overrides():
    assert list(TIERS) == ["high", "balanced", "low"]
    high, bal, low = (get_tier(n) for n in TIERS)
    assert (high.cfg_batching, high.residency) == ("batched", "resident")
    assert (bal.cfg_batching, bal.residency) == ("sequential", "offload")
    assert low.residency == "sequential" and low.vae_tile_size and low.attention_query_chunk
    assert get_tier("low", precision="bf16").precision == "bf16" and get_tier(low) is low
    with pytest.raises(ConfigError, match="unknown memory tier"):
        get_tier("huge")
    with pytest.raises(ConfigError, match="multiple of 64"):
        get_tier("low", vae_tile_size=100)
    with pytest.raises(ConfigError, match="cfg_batching"):
        get_tier("high", cfg_batching="domains")  # the domain halves cannot be split (attn1 pairs them)


def test_dtype_plan():
    fp16 = dtype_plan("fp16")
    assert all(fp16[n] == torch.float16 for n in ("joint", "vae", "image_encoder", "dinov2"))
    assert all(fp16[n] is None for n in ("structure_decoder", "slat_flow", "mesh_decoder", "gs_decoder"))
    assert dtype_plan("bf16")["joint"] == torch.bfloat16
    assert set(dtype_plan("auto", "cpu").values()) == {torch.float32}  # CPU: no half precision
    assert dtype_plan("auto", "cuda")["joint"] == torch.float16


def test_best_attention_backend_is_sdpa_without_extras():
    from synchuman_core.attention import best_backend

    assert best_backend("cpu", torch.float32) == "sdpa"
    assert best_backend("cpu", torch.float16) == "sdpa"


def test_lists_derive_from_the_component_table():
    """Tiers, residency and the estimate read one table: the registry entries' steps/half/offload/size."""
    from synchuman_core.io.registry import COMPONENTS, RUN_COMPONENTS, components_for
    from synchuman_core.memory import HALF_COMPONENTS, OFFLOAD_AFTER, resident_components

    assert ALL_COMPONENTS == RUN_COMPONENTS and "text_encoder" not in ALL_COMPONENTS
    assert set(HALF_COMPONENTS) == {"joint", "vae", "image_encoder", "dinov2", "text_encoder"}
    assert all(REAL_COMPONENT_SIZES[n] is COMPONENTS[n].size for n in ALL_COMPONENTS)
    assert OFFLOAD_AFTER["conditioning"] == ("image_encoder", "dinov2")
    assert set(OFFLOAD_AFTER["stage1"]) == {"joint", "vae", "structure_decoder"}
    assert STAGES["stage2_slat"] == components_for("stage2_slat") == ("dinov2", "slat_flow")
    bal = get_tier("balanced")
    assert set(resident_components(bal, "stage1_sampling")) == {"vae", "joint"}  # VAE waits for the decode
    assert set(resident_components(bal, "stage2_mesh")) == {"dinov2", "slat_flow", "gs_decoder", "mesh_decoder"}
    assert resident_components(get_tier("low"), "stage1_sampling") == ("joint",)


# ------------------------------------------------------------------------------------------ parameter memory


@pytest.mark.parametrize("component", sorted(MANIFESTS))
def test_parameter_counts_equal_the_manifests(component):
    m = _manifest(component)
    size = REAL_COMPONENT_SIZES[component]
    bufs = set(m["buffers_in_state_dict"])
    params = sum(math.prod(s) for k, (s, _) in m["state_dict"].items() if k not in bufs)
    half = sum(math.prod(s) for k, (s, dt) in m["state_dict"].items() if k not in bufs and dt == "float16")
    buffers = sum(math.prod(s) for k, (s, _) in m["state_dict"].items() if k in bufs)
    assert (size.params, size.half_params, size.buffers) == (params, half, buffers) == (
        m["total_parameters"], half, m["total_state_dict_elements"] - m["total_parameters"])
    # official constructor dtypes: exactly the bytes of the manifest
    manifest_bytes = sum(math.prod(s) * _ITEM[dt] for s, dt in m["state_dict"].values())
    assert weight_bytes(size, None) == manifest_bytes
    assert weight_bytes(size, torch.float16) == 2 * (params + buffers)


def test_dinov2_count_equals_the_model():
    from synchuman_core.encoders.dinov2 import DINOv2

    with torch.device("meta"):
        model = DINOv2()
    assert sum(p.numel() for p in model.parameters()) == REAL_COMPONENT_SIZES["dinov2"].params


@pytest.mark.parametrize("tier", list(TIERS))
def test_estimate_parameter_part_equals_manifest_totals(tier):
    plan = dtype_plan("fp16")
    expected = 0
    for name in ALL_COMPONENTS:
        if name == "dinov2":
            expected += 2 * REAL_COMPONENT_SIZES["dinov2"].params
            continue
        m = _manifest(name)
        dt = plan[name]
        expected += sum(math.prod(s) * (2 if dt == torch.float16 else _ITEM[d]) for s, d in m["state_dict"].values())
    est = estimate_peak_memory(tier, device="cuda")
    assert est["parameters"] == pytest.approx(expected / GB, abs=1e-3)
    bd = memory_breakdown(tier, device="cuda")
    if get_tier(tier).residency == "resident":  # every model on the GPU in every stage
        assert all(v["weights"] == pytest.approx(expected / GB) for v in bd.values())
    else:
        assert all(v["weights"] < expected / GB for v in bd.values())


def test_estimate_shape_and_targets():
    est = {t: estimate_peak_memory(t, device="cuda") for t in TIERS}
    for e in est.values():
        assert set(e) == {*STAGES, "peak", "parameters"}
        assert e["peak"] == max(e[s] for s in STAGES)
    assert est["low"]["peak"] <= est["balanced"]["peak"] <= est["high"]["peak"]
    assert est["balanced"]["peak"] < 24  # the target of the issue: full pipeline within 24 GB ...
    assert est["low"]["peak"] < 12  # ... and a low-memory tier within 12 GB
    # sequential CFG halves the UNet batch: stage-1 activations about halve
    b = memory_breakdown("high", device="cuda")["stage1_sampling"]["activations"]
    s = memory_breakdown(get_tier("high", cfg_batching="sequential"), device="cuda")["stage1_sampling"]["activations"]
    assert 0.4 < s / b < 0.6


def test_estimate_attention_scores_without_efficient_kernels():
    """attn1 at 96² pairs 18,432 tokens: tens of GB of scores when materialised; query chunks bound it."""
    plain = memory_breakdown("balanced", device="cuda", efficient_attention=False)["stage1_sampling"]
    chunked = memory_breakdown(get_tier("balanced", attention_query_chunk=1024), device="cuda",
                               efficient_attention=False)["stage1_sampling"]
    flash = memory_breakdown("balanced", device="cuda")["stage1_sampling"]
    assert plain["activations"] > 20 > chunked["activations"] > flash["activations"]


def test_fp32_doubles_the_half_components():
    h = estimate_peak_memory("high", device="cuda")["parameters"]
    f = estimate_peak_memory(get_tier("high", precision="fp32"), device="cuda")["parameters"]
    assert 1.6 < f / h < 2.0  # the TRELLIS-style models are mostly fp16 already in half tiers


# ------------------------------------------------------------------------------------------ residency


def _namespace(names=("image_encoder", "vae", "dinov2")):
    from synchuman_core.model_source import ModuleSet

    return ModuleSet({k: nn.Linear(2, 2) for k in names}, prompt_embeds=torch.zeros(10, 77, 4)), names


def test_sequential_residency_keeps_one_model_on_the_device():
    models, names = _namespace()
    mm = ManagedModels(models, "cpu", residency="sequential", offload_device="meta")
    a = mm.get("image_encoder")
    assert a is models.get("image_encoder") and mm.on_device == ["image_encoder"]
    mm.get("vae")  # the previous one leaves
    assert mm.on_device == ["vae"] and models.get("image_encoder").weight.device.type == "meta"
    assert models.get("vae").weight.device.type == "cpu"
    assert mm.peek("dinov2") is models.get("dinov2") and mm.on_device == ["vae"]  # peek does not move
    assert mm.device_dtype("dinov2") == (torch.device("cpu"), torch.float32)
    mm.on_stage_done("conditioning")
    assert mm.on_device == [] and models.get("vae").weight.device.type == "meta"
    assert mm.events == [("use", "image_encoder"), ("offload", "image_encoder"), ("use", "vae"), ("offload", "vae")]


def test_offload_residency_follows_stage_events():
    models, _ = _namespace(ALL_COMPONENTS)
    mm = ManagedModels(models, "cpu", residency="offload", offload_device="meta")
    assert mm.loaded == list(ALL_COMPONENTS)  # other attributes are forwarded
    for n in ("image_encoder", "vae", "dinov2"):
        mm.get(n)
    mm.on_stage_done("conditioning")
    assert mm.on_device == ["vae"]  # the VAE decodes at the end of stage 1
    mm.get("joint"), mm.get("structure_decoder")
    mm.on_stage_done("stage1")
    assert mm.on_device == [] and models.get("joint").weight.device.type == "meta"
    resident = ManagedModels(models, "cpu")
    resident.get("slat_flow")
    resident.on_stage_done("stage2")
    assert resident.on_device == ["slat_flow"]
    with pytest.raises(ConfigError, match="model source.*lacks"):
        ManagedModels(SimpleNamespace(joint=nn.Linear(2, 2)))


def test_active_sets_and_restores_the_attention_chunk():
    from synchuman_core.attention import dispatch

    models, _ = _namespace()
    run = apply_tier("low", models, device="cpu")
    before = dispatch._query_chunk_size()
    with run.active():
        assert dispatch._query_chunk_size() == get_tier("low").attention_query_chunk
    assert dispatch._query_chunk_size() == before
    assert run.stage1_kwargs()["cfg_batching"] == "sequential"
    assert run.stage1_kwargs()["on_stage_done"] == run.models.on_stage_done
    assert run.conditioning_kwargs()["encode_slice_size"] == 1


def test_apply_tier_casts_loaded_half_components():
    from synchuman_core.model_source import ModuleSet

    models = ModuleSet({"joint": nn.Linear(2, 2), "slat_flow": nn.Linear(2, 2)}, prompt_embeds=torch.zeros(10, 77, 4))
    run = apply_tier(get_tier("high", precision="bf16"), models, device="cpu")
    assert models.get("joint").weight.dtype == torch.bfloat16  # half component: cast
    assert models.get("slat_flow").weight.dtype == torch.float32  # official mix: left alone
    assert run.models.device_dtype("joint") == (torch.device("cpu"), torch.bfloat16)


# ------------------------------------------------------------------------------------------ equal results


def _write_small_checkpoint(root):
    """The tiny checkpoint with a smaller joint model (latent 24 -> 192 px views) and a fast-written
    structure decoder (its occupancy calibrated in fp32)."""
    from safetensors.torch import save_file

    from synchuman_core.io.registry import get_spec
    from synchuman_core.io.tiny import fill_tiny, write_tiny_checkpoint
    from synchuman_core.io.tiny_configs import TINY_JOINT

    res = write_tiny_checkpoint(root, components=["vae", "image_encoder", "feature_extractor", "pipeline_stage1",
                                                  "dinov2", "slat_flow", "pipeline_stage2"], seed=2)
    joint_cfg = {**TINY_JOINT, "sample_size": 24, "model_channels": 32, "num_heads": 2, "num_head_channels": 16}
    for name, cfg, seed in (("joint", joint_cfg, 1), ("structure_decoder", get_spec("structure_decoder").tiny_config, 4)):
        spec = get_spec(name)
        d = res.folder.path(spec.subdir)
        d.mkdir(parents=True, exist_ok=True)
        (d / spec.config_file).write_text(json.dumps(cfg))
        model = spec.build(cfg, device="cpu")
        spec.finish(model, torch.device("cpu"))
        fill_tiny(model, seed)
        if name == "structure_decoder":  # ~1% occupancy for a unit-normal latent (fp32 probe)
            with torch.no_grad():
                z = torch.randn(1, 8, 16, 16, 16, generator=torch.Generator().manual_seed(0))
                logits = nn.Module.float(_copy(model))(z).flatten()
                model.out_layer[-1].bias.sub_(torch.quantile(logits, 0.99).to(model.out_layer[-1].bias.dtype))
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / spec.default_weight_name()))
    return root


def _copy(module):
    import copy

    return copy.deepcopy(module)


def _person():
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(300), torch.arange(160), indexing="ij")
    alpha = (((yy - 150) / 140.0) ** 2 + ((xx - 80) / 60.0) ** 2 <= 1).to(torch.uint8) * 255
    rgb = (torch.rand(300, 160, 3, generator=g) * 255).to(torch.uint8)
    return torch.cat([rgb, alpha[..., None]], -1).numpy()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return _write_small_checkpoint(tmp_path_factory.mktemp("tiers"))


def _coords():
    g = torch.Generator().manual_seed(3)
    xyz = torch.randperm(64**3, generator=g)[:64].sort().values
    return torch.stack([torch.zeros_like(xyz), xyz // 4096, (xyz // 64) % 64, xyz % 64], 1).int()


def _run(tier, folder, *, steps=1, dtypes=None):
    from synchuman_core import pipeline
    from synchuman_core.samplers import SamplerSettings, make_generator

    run = apply_tier(tier, folder, device="cpu")
    run.models.wrapped.dtypes.update(dtypes or {})
    with run.active():
        pre = pipeline.preprocess(run.models, _person())
        inp = pipeline.prepare_conditioning(run.models, pre, **run.conditioning_kwargs())
        s1 = pipeline.run_stage1(run.models, inp, SamplerSettings.stage1(steps=steps), make_generator(43),
                                 **run.stage1_kwargs())
        occupied = s1.coords.shape[0]
        s1.coords = _coords()
        s2 = pipeline.run_stage2(run.models, s1, SamplerSettings.stage2(steps=2), make_generator(7),
                                 decode_mesh=False, decode_gaussians=False, **run.stage2_kwargs())
    return SimpleNamespace(run=run, inp=inp, s1=s1, s2=s2, occupied=occupied)


@pytest.fixture(scope="module")
def tier_runs(checkpoint):
    return {name: _run(name, checkpoint) for name in TIERS}


@pytest.mark.slow
def test_tiers_give_equal_results(tier_runs):
    ref = tier_runs["high"]
    assert ref.occupied > 0
    for name, r in tier_runs.items():
        assert "text_encoder" not in r.run.models.wrapped.loaded  # prompt embeddings come from the cache
        if name == "high":
            continue
        assert r.occupied == ref.occupied
        torch.testing.assert_close(r.inp.conditioning.image_latents, ref.inp.conditioning.image_latents,
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(r.s1.latents, ref.s1.latents, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(r.s1.structure_latent, ref.s1.structure_latent, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(r.s1.color_views, ref.s1.color_views, rtol=0, atol=1e-4)
        torch.testing.assert_close(r.s2.slat.feats, ref.s2.slat.feats, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_low_tier_keeps_one_model_on_the_device(tier_runs):
    events = tier_runs["low"].run.models.events
    on = set()
    for kind, name in events:
        if kind == "use":
            assert not on, f"{name} used while {on} still on the device"
            on.add(name)
        else:
            on.discard(name)
    assert [n for k, n in events if k == "use"] == [
        "image_encoder", "vae", "dinov2", "joint", "vae", "structure_decoder", "dinov2", "slat_flow"]
    # balanced: encoders leave after conditioning, stage-1 models before stage 2
    bal = tier_runs["balanced"].run.models.events
    assert bal.index(("offload", "image_encoder")) < bal.index(("use", "joint"))
    assert bal.index(("offload", "joint")) < bal.index(("use", "slat_flow"))


@pytest.mark.slow
def test_drop_after_use_reloads_the_same_weights(checkpoint, tier_runs):
    low = tier_runs["low"]
    drop = _run(get_tier("low", drop_after_use=True), checkpoint)
    assert ("drop", "joint") in drop.run.models.events
    assert drop.run.models.wrapped.loaded == []  # nothing kept in host memory between stages
    torch.testing.assert_close(drop.s1.latents, low.s1.latents, rtol=0, atol=0)
    torch.testing.assert_close(drop.s2.slat.feats, low.s2.slat.feats, rtol=0, atol=0)


@pytest.mark.slow
def test_bf16_tier_is_close_to_fp32(checkpoint, tier_runs):
    """The joint model in bf16 weights and compute (the bf16 tier's other half-precision parts stay
    fp32 here: bf16 convolutions are very slow on CPUs without bf16 instructions)."""
    ref = tier_runs["balanced"]
    fp32 = dict.fromkeys(("vae", "image_encoder", "dinov2", "structure_decoder", "slat_flow"), torch.float32)
    r = _run(get_tier("balanced", precision="bf16"), checkpoint, dtypes=fp32)
    assert r.inp.conditioning.image_latents.dtype == torch.bfloat16  # cast to the joint model's dtype
    assert r.s1.latents.dtype == torch.bfloat16
    err = (r.s1.latents.float() - ref.s1.latents).abs().mean() / ref.s1.latents.abs().mean()
    assert float(err) < 0.05
