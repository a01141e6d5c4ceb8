"""The joint model built from the real config on the meta device matches the official manifest."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import manifest_path

from synchuman_core.errors import ConfigError
from synchuman_core.stage1.joint import OFFICIAL_SYNC_POINTS, JointModelConfig, SyncHumanJointModel


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads(manifest_path("SyncHuman_2D3DCrossSpaceDiffusion").read_text())


def test_meta_state_dict_matches_manifest_exactly(manifest):
    cfg = JointModelConfig.from_official(manifest["config"])
    assert cfg.sync_points == OFFICIAL_SYNC_POINTS
    assert [(s.start, s.stop) for s in cfg.segments] == [(0, 8), (8, 16), (16, 24)]
    with torch.device("meta"):
        model = SyncHumanJointModel(cfg)
    sd = model.state_dict()
    want = manifest["state_dict"]
    assert len(sd) == manifest["num_state_dict_keys"] == 1397
    assert list(sd) == list(want)  # same keys, same (official) order
    for k, t in sd.items():
        shape, dtype = want[k]
        assert list(t.shape) == shape, k
        assert str(t.dtype).removeprefix("torch.") == dtype, k
        assert t.device.type == "meta"
    assert sum(p.numel() for p in model.parameters()) == manifest["total_parameters"]


def test_from_official_rejects_what_it_cannot_honour(manifest):
    base = dict(manifest["config"])
    with pytest.raises(ConfigError, match="not supported"):
        JointModelConfig.from_official({**base, "my_new_switch": 1})
    with pytest.raises(ConfigError, match="selfattn_block"):
        JointModelConfig.from_official({**base, "selfattn_block": "custom"})
    with pytest.raises(ConfigError, match="num_dual_CrossAttblocks"):
        JointModelConfig.from_official({**base, "num_dual_CrossAttblocks": 3})
    with pytest.raises(ConfigError, match="SyncHuman_2D3DCrossSpaceDiffusion"):
        JointModelConfig.from_official({**base, "_class_name": "UNet2DConditionModel"})
    cfg = JointModelConfig.from_official(base)
    assert cfg.unet.num_attention_heads == (5, 10, 20, 20)  # diffusers' "attention_head_dim"
    assert cfg.structure.num_blocks == 24 and cfg.structure.model_channels == 1024
