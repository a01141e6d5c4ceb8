"""Sparse-structure decoder: official parity (logits + occupancy), manifest, occupancy coordinates."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import fixture_dir, manifest_path

from synchuman_core.errors import ConfigError
from synchuman_core.parity import run_fixture
from synchuman_core.parity.fixgen import fill_model
from synchuman_core.stage1.structure_decoder import (
    SparseStructureDecoder,
    SparseStructureDecoderConfig,
    occupancy_coords,
)

TINY = {"out_channels": 1, "latent_channels": 8, "num_res_blocks": 1, "num_res_blocks_middle": 1,
        "channels": [16, 8], "use_fp16": False}


def test_fixture_b_parity_including_occupancy():
    comps = {c.name: c for c in run_fixture(fixture_dir("b_sparse_structure_decoder"))}
    assert set(comps) == {"logits", "occupancy", "occupancy_coords"}
    for c in comps.values():
        assert c.passed, (c.name, c.relative_error(), c.note)


def test_manifest_keys_shapes_dtypes_on_meta():
    man = json.loads(manifest_path("sparse_structure_decoder").read_text())
    cfg = SparseStructureDecoderConfig.from_official(man["config"])
    with torch.device("meta"):
        m = SparseStructureDecoder(cfg)
    got = [(k, [list(v.shape), str(v.dtype).removeprefix("torch.")]) for k, v in m.state_dict().items()]
    assert got == list(man["state_dict"].items())
    assert sum(v.numel() for v in m.state_dict().values()) == man["total_parameters"]


def test_occupancy_coords_matches_pipeline_argwhere():
    logits = torch.randn(2, 1, 5, 6, 7)
    coords = occupancy_coords(logits)
    ref = torch.argwhere(logits > 0)[:, [0, 2, 3, 4]].int()
    assert coords.dtype == torch.int32 and torch.equal(coords, ref)
    with pytest.raises(ValueError):
        occupancy_coords(torch.randn(1, 2, 4, 4, 4))


@torch.no_grad()
def test_resolution_path_and_fp16_torso():
    m32 = SparseStructureDecoder(SparseStructureDecoderConfig.from_official(TINY))
    fill_model(m32, 1)
    m16 = SparseStructureDecoder(SparseStructureDecoderConfig.from_official({**TINY, "use_fp16": True}))
    m16.load_state_dict(m32.state_dict())
    assert m16.torso_dtype() == torch.float16
    assert m16.blocks[0].norm1.weight.dtype == torch.float32 and m16.input_layer.weight.dtype == torch.float32
    x = torch.randn(1, 8, 8, 8, 8)
    a, b = m32.eval()(x), m16.eval()(x)
    assert a.shape == (1, 1, 16, 16, 16) and b.dtype == torch.float32
    assert (a - b).abs().max() / a.abs().max() < 1e-2


def test_config_errors():
    with pytest.raises(ConfigError, match="norm_type"):
        SparseStructureDecoderConfig.from_official({**TINY, "norm_type": "batch"})
    with pytest.raises(ConfigError, match="unknown|not supported"):
        SparseStructureDecoderConfig.from_official({**TINY, "resolution": 64})
    cfg = SparseStructureDecoderConfig.from_official({**TINY, "norm_type": "group", "channels": [32, 32]})
    m = SparseStructureDecoder(cfg)
    assert type(m.blocks[0].norm1).__name__ == "GroupNorm32"
