"""Parity runner for ``a_DualCrossAttentionSS``: the 2D -> 3D sync bridge (weights stored)."""

from __future__ import annotations

import torch

from ...io.state_dict import load_state_dict_strict
from ...stage1.sync import DualCrossAttentionSS, SyncBridgeConfig
from .. import Comparison, Fixture


def run(fx: Fixture) -> list[Comparison]:
    cfg = SyncBridgeConfig.from_official(fx.config)
    with torch.device("meta"):
        model = DualCrossAttentionSS(cfg)
    load_state_dict_strict(model, fx.state_dict, source=f"{fx.path.name}/state_dict.safetensors")
    model.eval()
    out = model(fx.inputs["MV"], fx.inputs["structure"])
    return [fx.compare("structure_out", out)]
