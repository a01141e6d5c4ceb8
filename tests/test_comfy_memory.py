"""ComfyUI memory: partial (low-VRAM) loads with per-layer weight streaming, on the stand-in host."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent / "comfy_standin"))

import comfy.model_management as mm  # noqa: E402
import harness  # noqa: E402

from nodes.weight_streaming import make_streamable, settle_resident, streamable_layers  # noqa: E402

comfy_root = harness.comfy_root  # fixtures
tiny_checkpoint = harness.tiny_checkpoint


@pytest.fixture
def small_card(monkeypatch):
    """The stand-in host as a GPU host (the CPU plays the card) whose free memory a test sets."""
    monkeypatch.setattr(mm, "LOAD_DEVICE_IS_GPU", True)
    monkeypatch.setattr(mm, "FREE_MEMORY", 8 << 30)
    mm.load_calls.clear()
    yield mm
    mm.unload_all_models()


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.token = nn.Parameter(torch.randn(1, 64, generator=g))  # a non-leaf weight (like DINOv2's cls token)
        self.big = nn.Linear(64, 256)
        self.norm = nn.LayerNorm(256)
        self.big2 = nn.Linear(256, 64)
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, x):
        return self.big2(self.norm(self.big(x + self.token))) * self.scale


def test_streamable_layers_are_the_large_leaves():
    net = Net()
    target = make_streamable(net, "cpu", min_elements=1000)
    names = sorted(n for n, _ in streamable_layers(net))
    assert names == ["big", "big2"]  # the norm (512 weights) and the root's own token stay resident
    assert make_streamable(net, "cpu", min_elements=1000) is target  # idempotent
    for _, m in streamable_layers(net):
        assert m.comfy_cast_weights is False and m.weight_function == [] and m.bias_function == []


def test_offloaded_layer_fetches_weights_per_call_and_restores_them():
    net = Net().eval()
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(1))
    ref = net(x)
    target = make_streamable(net, "cpu", min_elements=1000)
    net.big.comfy_cast_weights = True  # what the host sets on a layer it leaves offloaded
    stored = net.big.weight
    torch.testing.assert_close(net(x), ref, rtol=0, atol=0)
    assert target.fetched == 2  # weight and bias of `big`, once
    assert net.big.weight is stored and isinstance(net.big.weight, nn.Parameter)

    # ComfyUI weight patches (LoRA-style) apply to the fetched copy only
    net.big.weight_function = [lambda w: w * 0]
    out = net(x)
    assert not torch.allclose(out, ref) and net.big.weight is stored and stored.abs().sum() > 0

    # a failing forward still puts the stored parameters back
    net.big.weight_function = [lambda w: (_ for _ in ()).throw(RuntimeError("boom"))]
    with pytest.raises(RuntimeError, match="boom"):
        net(x)
    assert net.big.weight is stored and not net.big.__dict__.get("_synchuman_stream_saved")


def test_settle_resident_moves_only_what_is_never_streamed():
    net = Net()
    make_streamable(net, "cpu", min_elements=1000)
    moved = settle_resident(net, "meta")  # "meta" plays the compute device
    assert net.token.device.type == "meta" and net.norm.weight.device.type == "meta" and net.scale.device.type == "meta"
    assert isinstance(net.token, nn.Parameter)
    assert net.big.weight.device.type == "cpu"  # streamed layers stay where the host left them
    assert moved == (64 + 2 * 256) * 4 + 4
    assert settle_resident(net, "meta") == 0


def _tiny(name: str, seed: int = 0):
    from synchuman_core.io.tiny import tiny_model

    model, _ = tiny_model(name, seed)
    return model


def test_low_memory_host_loads_partially_and_streams(comfy_root, small_card):
    """The host reports little free memory: ComfyUI's low-VRAM path is taken (no forced full load), the
    large layers that do not fit stay offloaded and are streamed per call, and the result is unchanged."""
    from nodes.comfy_bridge import is_partially_loaded, load_patchers, make_patcher

    dino = _tiny("dinov2").eval()
    image = (torch.rand(518, 518, 3, generator=torch.Generator().manual_seed(2)) * 255).to(torch.uint8)
    with torch.inference_mode():
        ref = dino.global_condition(image)
    target = make_streamable(dino, mm.get_torch_device(), min_elements=1000)
    p = make_patcher(dino)
    size = mm.module_size(p.model)
    mm.FREE_MEMORY = int(mm.minimum_inference_memory() + size // 2)  # half the weights fit
    load_patchers([p])
    call = mm.load_calls[-1]
    assert call["force_full_load"] is False
    budget = call["lowvram_model_memory"][id(p)]
    assert 0 < budget < size
    assert is_partially_loaded(p)
    offloaded = [n for n, m in streamable_layers(dino) if m.comfy_cast_weights]
    assert 0 < len(offloaded) < len(list(streamable_layers(dino)))
    with torch.inference_mode():
        out = dino.global_condition(image)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert target.fetched >= 2 * len(offloaded)

    # plenty of memory: a complete load, nothing streamed
    mm.unload_all_models()
    mm.FREE_MEMORY = 64 << 30
    fetched = target.fetched
    load_patchers([p])
    assert not is_partially_loaded(p) and not any(m.comfy_cast_weights for _, m in streamable_layers(dino))
    with torch.inference_mode():
        torch.testing.assert_close(dino.global_condition(image), ref, rtol=0, atol=0)
    assert target.fetched == fetched


def test_full_load_can_still_be_forced(comfy_root, small_card):
    from nodes.comfy_bridge import is_partially_loaded, load_patchers, make_patcher

    p = make_patcher(Net())
    mm.FREE_MEMORY = int(mm.minimum_inference_memory())
    load_patchers([p], partial=False)
    assert mm.load_calls[-1]["force_full_load"] is True and not is_partially_loaded(p)


def test_stage1_models_leave_only_when_memory_is_short(comfy_root, small_card):
    from nodes.comfy_bridge import load_patchers, make_patcher, unload_if_short

    p = make_patcher(Net())
    load_patchers([p])
    mm.FREE_MEMORY = 8 << 30
    assert unload_if_short([p], required=1 << 30) is False
    assert any(lm.model is p for lm in mm.current_loaded_models)
    mm.FREE_MEMORY = 1 << 30
    assert unload_if_short([p], required=4 << 30) is True
    assert not any(lm.model is p for lm in mm.current_loaded_models)


def test_cpu_host_never_counts_as_short(comfy_root, monkeypatch):
    from nodes.comfy_bridge import memory_is_short

    monkeypatch.setattr(mm, "FREE_MEMORY", 0)
    assert memory_is_short(1 << 40) is False  # the stand-in's device is the CPU: nothing to free


def test_stage2_load_offloads_stage1_models_only_when_short(comfy_root, tiny_checkpoint, small_card):
    """ModelBundle: loading a stage-2 step on a card that is short of memory offloads the stage-1 models
    first; with room to spare they stay loaded (queued prompts reuse them)."""
    from nodes.comfy_bridge import is_loaded
    from nodes.models import STAGE1_ONLY, ModelBundle

    bundle = ModelBundle(tiny_checkpoint, "fp32")
    bundle.load("stage1_sampling", "stage1_decode", view_size=192)
    stage1 = [bundle.patcher(n) for n in STAGE1_ONLY if n in bundle._patchers]
    assert stage1 and all(is_loaded(p) for p in stage1)
    mm.FREE_MEMORY = 64 << 30
    bundle.load("stage2_slat")
    assert all(is_loaded(p) for p in stage1)
    mm.FREE_MEMORY = 1 << 30  # less than the stage-2 step wants
    bundle.load("stage2_mesh")
    assert not any(is_loaded(p) for p in stage1)
    assert is_loaded(bundle.patcher("mesh_decoder"))
