"""Parity runner for ``e_slat_flow``: the TRELLIS SLat flow DiT on sparse voxels."""

from __future__ import annotations

import torch

from ...io.state_dict import load_state_dict_strict
from ...sparse import SparseTensor
from ...stage2.slat_flow import SLatFlowConfig, SLatFlowModel
from .. import Comparison, Fixture


def run(fx: Fixture) -> list[Comparison]:
    cfg = SLatFlowConfig.from_official(fx.config)
    with torch.device("meta"):
        model = SLatFlowModel(cfg)
    load_state_dict_strict(model, fx.state_dict, source=f"{fx.path.name}/state_dict.safetensors")
    model.eval()
    inp = fx.inputs
    x = SparseTensor(inp["feats"], inp["coords"])
    out = model(x, inp["t"], inp["cond"])
    comps = [fx.compare("feats_out", out.feats, "feats_out")]
    same = out.coords.shape == x.coords.shape and bool((out.coords == x.coords).all())
    comps.append(Comparison("coords", None, None, tol=0.0, error=0.0 if same else 1.0,
                            note="output coords equal input coords" if same else "output coords changed"))
    return comps
