"""Parity runner for ``c_sparse_structure_flow``: the TRELLIS sparse-structure flow DiT."""

from __future__ import annotations

import torch

from ...io.state_dict import load_state_dict_strict
from ...stage1.structure_flow import SparseStructureFlowConfig, SparseStructureFlowModel
from .. import Comparison, Fixture


def run(fx: Fixture) -> list[Comparison]:
    cfg = SparseStructureFlowConfig.from_official(fx.config)
    with torch.device("meta"):
        model = SparseStructureFlowModel(cfg)
    load_state_dict_strict(model, fx.state_dict, source=f"{fx.path.name}/state_dict.safetensors")
    model.eval()
    inp = fx.inputs
    v = model(inp["x"], inp["t"], inp["cond"])
    return [fx.compare("v", v, "v")]
