"""Parity runner for ``f_slat_mesh_decoder``: SyncHuman ``SLatMeshDecoder`` up to the FlexiCubes input.

Weights (``fill_model(model, seed)``) and the ``mv_color`` / ``mv_normal`` DINOv2 maps
(``gen_input(name, shape, seed)``, shapes from ``mv_inputs_checksums.json``) are regenerated with fixgen,
``seed`` from ``meta.json``, and verified against the folder's checksum files before the forward. Outputs: the gathered multiview features of each modality
and the 101-channel features after the two subdivide blocks (compared row by row when the coordinate
order matches, otherwise after sorting both by coordinates).
"""

from __future__ import annotations

import torch

from ...sparse import SparseTensor
from ...stage2.decoders import SLatMeshDecoder, SLatMeshDecoderConfig
from .. import Comparison, Fixture
from ..fixgen import fill_model, gen_input, verify_checksums

__all__ = ["run", "sort_by_coords"]

def sort_by_coords(coords: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ordered by (batch, x, y, z)."""
    c = coords.long()
    ext = int(c.max()) + 1 if c.numel() else 1
    key = ((c[:, 0] * ext + c[:, 1]) * ext + c[:, 2]) * ext + c[:, 3]
    order = torch.argsort(key)
    return coords[order], feats[order]


def _mv_inputs(fx: Fixture, seed: int) -> dict[str, torch.Tensor]:
    expected = fx.json("mv_inputs_checksums.json")
    mv = {name: gen_input(name, expected[name]["shape"], seed) for name in ("mv_color", "mv_normal")}
    verify_checksums(mv, expected)
    return mv


def run(fx: Fixture) -> list[Comparison]:
    seed = fx.seed
    cfg = SLatMeshDecoderConfig.from_official(fx.config)
    with torch.device("meta"):
        model = SLatMeshDecoder(cfg)
    model.to_empty(device="cpu")  # untouched storage costs no memory; filled tensor by tensor
    fill_model(model, seed)
    model = model.float().eval()
    verify_checksums(model.state_dict(), fx.json("state_dict_checksums.json"))
    mv = _mv_inputs(fx, seed)

    x = SparseTensor(fx.inputs["feats"].float(), fx.inputs["coords"].int())
    comps: list[Comparison] = []
    cond_normal, cond_color = model.condition_mv(x, mv["mv_color"], mv["mv_normal"])
    comps.append(fx.compare("cond_mv_normal", cond_normal))
    comps.append(fx.compare("cond_mv_color", cond_color))
    del cond_normal, cond_color

    out = model.forward_features(x, mv["mv_color"], mv["mv_normal"])
    ref_c, ref_f = fx.outputs["out_coords"], fx.outputs["out_feats"]
    ours_c, ours_f = out.coords, out.feats
    same_order = ours_c.shape == ref_c.shape and bool((ours_c.int() == ref_c.int()).all())
    if not same_order and ours_c.shape == ref_c.shape:
        ours_c, ours_f = sort_by_coords(ours_c, ours_f)
        ref_c, ref_f = sort_by_coords(ref_c, ref_f)
    coords_err = 0.0 if ours_c.shape == ref_c.shape and bool((ours_c.int() == ref_c.int()).all()) else float("inf")
    comps.append(
        Comparison(
            "out_coords", None, None, 0.0, error=coords_err, note="same order" if same_order else "after sorting"
        )
    )
    comps.append(Comparison("out_feats", ours_f, ref_f, fx.tol))
    return comps
