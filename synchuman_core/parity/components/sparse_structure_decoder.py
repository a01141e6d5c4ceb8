"""Parity runner for ``b_sparse_structure_decoder``: logits and occupancy of the 16^3 -> 64^3 decoder."""

from __future__ import annotations

import torch

from ...io.state_dict import load_state_dict_strict
from ...stage1.structure_decoder import SparseStructureDecoder, SparseStructureDecoderConfig, occupancy_coords
from .. import Comparison, Fixture

# tests/reference/FIXTURES.md §6: occupancy (logit > 0) may flip only where the reference logit is this close to 0.
FLIP_MARGIN = 1e-5


def run(fx: Fixture) -> list[Comparison]:
    cfg = SparseStructureDecoderConfig.from_official(fx.config)
    with torch.device("meta"):
        model = SparseStructureDecoder(cfg)
    load_state_dict_strict(model, fx.state_dict, source=f"{fx.path.name}/state_dict.safetensors")
    model.eval()
    logits = model(fx.inputs["x"])
    ref = fx.outputs["logits"]
    out = [fx.compare("logits", logits, "logits")]
    if "occupancy" in fx.outputs:
        ours = logits > 0
        ref_occ = fx.outputs["occupancy"].bool()
        flips = ours != ref_occ
        bad = int((flips & (ref.abs() >= FLIP_MARGIN)).sum()) if ref.shape == ours.shape else ours.numel()
        out.append(Comparison(
            "occupancy", None, None, tol=0.0, error=float(bad),
            note=f"{int(flips.sum())} flips, {bad} where |ref logit| >= {FLIP_MARGIN:g}; "
                 f"{int(ours.sum())} occupied voxels",
        ))
        # Stage-2 coordinates as the pipeline builds them; any difference must come from allowed flips.
        coords, ref_coords = occupancy_coords(logits), occupancy_coords(ref_occ[:, :1].float())
        same = coords.shape == ref_coords.shape and bool((coords == ref_coords).all())
        out.append(Comparison(
            "occupancy_coords", None, None, tol=0.0, error=0.0 if same or bad == 0 else float(bad),
            note=f"{coords.shape[0]} coords vs {ref_coords.shape[0]} in the reference"
                 + ("" if same else " (differences only at allowed flips)"),
        ))
    return out
