"""The GPU check's test subset (``pytest -m gpu``; ``benchmarks/gpu_check.py`` runs it on the GPU).

Every test runs on ``SYNCHUMAN_TEST_DEVICE`` (default: CUDA when available, else the CPU): half precision
through every model (bf16 everywhere, fp16 on CUDA), attention backend selection, offload between stages,
memory tiers equal within tolerance. Only the CUDA-only parts skip on a CPU.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.presets import RandomModels, person_rgba  # noqa: E402

pytestmark = pytest.mark.gpu

DEVICE = torch.device(os.environ.get("SYNCHUMAN_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
CUDA = DEVICE.type == "cuda"
HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def run_chain(tier: str, precision: str, **tier_changes):
    """The tiny chain (1 + 1 steps) through the pipeline's stage functions on DEVICE under a tier."""
    from synchuman_core import pipeline
    from synchuman_core.memory import apply_tier, dtype_plan, get_tier, resolve_precision
    from synchuman_core.samplers import SamplerSettings, make_generator

    t = get_tier(tier, precision=precision, **tier_changes)
    prec = resolve_precision(t.precision, DEVICE)
    # a CPU has no fast fp16 matmuls: the TRELLIS-style models' fp16 torso runs in bf16 there
    torso = torch.bfloat16 if prec == "bf16" and not CUDA else None
    src = RandomModels("tiny", voxels=200, dtypes=dtype_plan(prec, DEVICE), torso_dtype=torso)
    run = apply_tier(t, src, device=DEVICE, cast=False)
    stage_devices = {}

    def note(event: str) -> None:
        run.on_stage_done(event)
        stage_devices[event] = {n: _param_device(src.get(n)) for n in src.loaded}

    with run.active():
        pre = pipeline.preprocess(run.models, person_rgba(300, 160))
        kw = run.conditioning_kwargs() | {"on_stage_done": note}
        inputs = pipeline.prepare_conditioning(run.models, pre, **kw)
        out1 = pipeline.run_stage1(run.models, inputs, SamplerSettings.stage1(steps=1), make_generator(43),
                                   **(run.stage1_kwargs() | {"on_stage_done": note}))
        out2 = pipeline.run_stage2(run.models, out1, SamplerSettings.stage2(steps=1), make_generator(7),
                                   **(run.stage2_kwargs() | {"on_stage_done": note}))
    return src, run, out1, out2, stage_devices


def _param_device(m: torch.nn.Module) -> torch.device:
    return next(m.parameters()).device


def _dtypes(m: torch.nn.Module) -> set[torch.dtype]:
    return {p.dtype for p in m.parameters() if p.is_floating_point()}


@pytest.fixture(scope="module")
def reference():
    """fp32 chain on the device: what the half-precision runs are compared with."""
    return run_chain("high", "fp32")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_through_every_model(precision, reference):
    if precision == "fp16" and not CUDA:
        pytest.skip("fp16 compute is a CUDA path (CPUs have no fast fp16 kernels)")
    dt = HALF[precision]
    src, _, out1, out2, _ = run_chain("high", precision)
    _, _, ref1, ref2, _ = reference
    from synchuman_core.memory import HALF_COMPONENTS

    for name in src.COMPONENTS:  # every model was built and ran in the half dtype
        assert name in src.builds
        module = src.get(name)
        if name in HALF_COMPONENTS:
            assert _dtypes(module) == {dt}, name
        else:  # TRELLIS-style: half torso, fp32 norms / I/O layers
            assert dt in _dtypes(module) or torch.float16 in _dtypes(module) or torch.bfloat16 in _dtypes(module), name
    for t in (out1.latents, out1.structure_latent, out1.color_views, out2.slat.feats):
        assert torch.isfinite(t.float()).all()
    tol = 0.08 if precision == "bf16" else 0.02
    assert _rel(out1.latents, ref1.latents) < tol
    assert _rel(out1.structure_latent, ref1.structure_latent) < tol
    assert (out1.color_views - ref1.color_views).abs().mean() < tol
    assert torch.equal(out1.coords.cpu(), ref1.coords.cpu())  # same occupancy shell
    assert _rel(out2.slat.feats, ref2.slat.feats) < 3 * tol
    assert out2.mesh is not None and out2.mesh.faces.shape[0] > 0
    assert out2.gaussians is not None and torch.isfinite(out2.gaussians.xyz.float()).all()


def test_attention_in_half_precision_matches_fp32():
    from synchuman_core.attention import attention, best_backend

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 300, 32, generator=g) for _ in range(3))
    ref = attention(q, k, v)
    dt = torch.float16 if CUDA else torch.bfloat16
    name = best_backend(DEVICE, dt)
    out = attention(q.to(DEVICE, dt), k.to(DEVICE, dt), v.to(DEVICE, dt), backend=name)
    assert out.dtype == dt and out.device.type == DEVICE.type
    assert _rel(out.float(), ref) < 2e-2
    if not CUDA:
        assert name == "sdpa"  # flash_attn is a CUDA backend: never chosen on a CPU


def test_flash_attn_is_selected_when_installed():
    if not CUDA:
        pytest.skip("flash_attn runs on CUDA only")
    if importlib.util.find_spec("flash_attn") is None:
        pytest.skip("flash_attn is not installed")
    from synchuman_core.attention import attention, best_backend, fastest_backend

    assert best_backend(DEVICE, torch.float16) == "flash_attn"
    assert best_backend(DEVICE, torch.bfloat16) == "flash_attn"
    assert best_backend(DEVICE, torch.float32) != "flash_attn"
    g = torch.Generator(device=DEVICE).manual_seed(0)
    q, k, v = (torch.randn(1, 8, 1000, 64, generator=g, device=DEVICE, dtype=torch.float16) for _ in range(3))
    with fastest_backend(DEVICE, torch.float16) as name:
        assert name == "flash_attn"
        out = attention(q, k, v)
    assert _rel(out.float(), attention(q.float(), k.float(), v.float(), backend="sdpa")) < 1e-2


def test_offload_between_stages():
    """balanced: the encoders leave after conditioning and the stage-1 models before stage 2."""
    src, run, _, _, at = run_chain("balanced", "auto")
    events = run.models.events
    first_stage2 = events.index(("use", "slat_flow"))
    for name in ("joint", "vae", "structure_decoder"):
        offs = [i for i, e in enumerate(events) if e == ("offload", name)]
        assert offs and offs[0] < first_stage2, name
    for name in ("image_encoder",):
        assert ("offload", name) in events[: events.index(("use", "joint"))]
    if CUDA:  # the weights really left the card
        for name in ("joint", "vae", "structure_decoder"):
            assert at["stage1"][name].type == "cpu", name
        assert at["stage2"]["slat_flow"].type == "cpu"
    else:
        assert all(d.type == "cpu" for d in at["stage1"].values())


def test_tiers_equal_within_tolerance():
    prec = "auto"  # fp16 on CUDA, fp32 on a CPU
    runs = {t: run_chain(t, prec) for t in ("high", "balanced", "low")}
    tol = 2e-2 if CUDA else 1e-4
    _, _, h1, h2, _ = runs["high"]
    for tier in ("balanced", "low"):
        _, _, o1, o2, _ = runs[tier]
        assert _rel(o1.latents, h1.latents) < tol, tier
        assert _rel(o1.structure_latent, h1.structure_latent) < tol, tier
        assert torch.equal(o1.coords.cpu(), h1.coords.cpu()), tier
        # tiled VAE decode (low) changes pixels slightly at the seams
        assert (o1.color_views - h1.color_views).abs().mean() < (2e-2 if tier == "low" else tol), tier
        assert _rel(o2.slat.feats, h2.slat.feats) < (5 * tol if CUDA else 1e-3), tier
