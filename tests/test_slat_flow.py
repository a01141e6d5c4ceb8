"""SLat flow DiT: official parity (in-process and CLI), manifest, batching, fp16 torso, configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, fixture_dir, manifest_path

from synchuman_core.errors import ConfigError
from synchuman_core.parity import run_fixture
from synchuman_core.parity.fixgen import fill_model
from synchuman_core.sparse import SparseTensor
from synchuman_core.stage2.slat_flow import SLatFlowConfig, SLatFlowModel

TINY = {
    "resolution": 16, "in_channels": 8, "out_channels": 8, "model_channels": 32, "cond_channels": 16,
    "num_blocks": 2, "num_heads": 2, "mlp_ratio": 2, "patch_size": 2, "num_io_res_blocks": 2,
    "io_block_channels": [8], "pe_mode": "ape", "qk_rms_norm": True, "use_fp16": False,
}


def _shell(n: int, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xyz = torch.unique(torch.randint(0, 16, (n, 3), generator=g), dim=0)  # sorted row-major
    return torch.cat([torch.full((xyz.shape[0], 1), batch), xyz], 1).int()


def _tiny(**over) -> SLatFlowModel:
    m = SLatFlowModel(SLatFlowConfig.from_official({**TINY, **over}))
    fill_model(m, 11)
    return m.eval()


def test_fixture_e_parity():
    comps = run_fixture(fixture_dir("e_slat_flow"))
    assert comps and all(c.passed for c in comps), [(c.name, c.relative_error(), c.note) for c in comps]


def test_cli_passes_on_e():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "synchuman_core.parity", str(fixture_dir("e_slat_flow"))],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "feats_out" in res.stdout


def test_manifest_keys_shapes_dtypes_on_meta():
    man = json.loads(manifest_path("slat_flow").read_text())
    cfg = SLatFlowConfig.from_official(man["config"])
    with torch.device("meta"):
        m = SLatFlowModel(cfg)
    got = [(k, [list(v.shape), str(v.dtype).removeprefix("torch.")]) for k, v in m.state_dict().items()]
    assert got == list(man["state_dict"].items())
    assert sum(v.numel() for v in m.state_dict().values()) == man["total_parameters"]


@torch.no_grad()
def test_batch_items_are_independent():
    m = _tiny()
    c0, c1 = _shell(60, 0, 1), _shell(40, 0, 2)
    f0, f1 = torch.randn(c0.shape[0], 8), torch.randn(c1.shape[0], 8)
    cond = torch.randn(2, 5, 16)
    t = torch.tensor([750.0, 250.0])
    c1b = c1.clone()
    c1b[:, 0] = 1
    both = m(SparseTensor(torch.cat([f0, f1]), torch.cat([c0, c1b])), t, cond)
    a = m(SparseTensor(f0, c0), t[:1], cond[:1])
    b = m(SparseTensor(f1, c1), t[1:], cond[1:])
    assert torch.equal(both.coords, torch.cat([c0, c1b]))
    torch.testing.assert_close(both.feats, torch.cat([a.feats, b.feats]), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_fp16_torso_dtypes_and_close_to_fp32():
    m32 = _tiny()
    m16 = SLatFlowModel(SLatFlowConfig.from_official({**TINY, "use_fp16": True}))
    m16.load_state_dict(m32.state_dict())
    sd = m16.state_dict()
    assert sd["blocks.0.self_attn.to_qkv.weight"].dtype == torch.float16
    assert sd["input_blocks.0.conv1.conv.weight"].dtype == torch.float16
    assert sd["input_blocks.0.norm1.weight"].dtype == torch.float32
    assert sd["input_layer.weight"].dtype == torch.float32 and sd["out_layer.weight"].dtype == torch.float32
    c = _shell(80, 0, 3)
    x = SparseTensor(torch.randn(c.shape[0], 8), c)
    t, cond = torch.tensor([500.0]), torch.randn(1, 5, 16)
    a, b = m32(x, t, cond).feats, m16.eval()(x, t, cond).feats
    assert b.dtype == torch.float32
    assert (a - b).abs().max() / a.abs().max() < 2e-2


def test_config_validation():
    assert SLatFlowConfig.from_official({"name": "SLatFlowModel", "args": TINY}).heads == 2
    with pytest.raises(ConfigError, match="io_block_channels"):
        SLatFlowConfig.from_official({**TINY, "patch_size": 4})
    with pytest.raises(ConfigError, match="window_size"):
        SLatFlowConfig.from_official({**TINY, "window_size": 8})
    with pytest.raises(ConfigError, match="rope"):
        SLatFlowConfig.from_official({**TINY, "pe_mode": "rope"})


def test_wrong_feature_width_raises():
    m = _tiny()
    c = _shell(10, 0, 4)
    with pytest.raises(ValueError, match="SLat features"):
        m(SparseTensor(torch.randn(c.shape[0], 4), c), torch.tensor([1.0]), torch.randn(1, 5, 16))
