"""Parity runner for ``d_SyncHuman_2D3DCrossSpaceDiffusion``: the whole stage-1 joint model, one step.

The 1.04 B weights are not stored: the model is built on the meta device from ``config.json``, filled
with ``fixgen.fill_model(model, seed)`` with ``meta.json``'s seed (one parameter at a time, so the peak is the model plus one
tensor), ``pos_emb`` is computed as the constructor does, and everything is checked against
``state_dict_checksums.json`` before the forward. Inputs are assembled in the pipeline's CFG layout as
the fixture README says. Besides both outputs, the 38 ``probes.json`` intermediates are compared (64
strided values each, relative to the probe's absmax) to localise a mismatch.
"""

from __future__ import annotations

import logging
import time

import torch

from ...stage1.joint import JointModelConfig, SyncHumanJointModel
from ...stage1.structure_flow import structure_pos_emb
from .. import Comparison, Fixture
from ..fixgen import fill_model, verify_checksums

logger = logging.getLogger(__name__)


def build_model(fx: Fixture) -> SyncHumanJointModel:
    """The fixture model with regenerated, checksum-verified weights (fp32, CPU, eval)."""
    cfg = JointModelConfig.from_official(fx.config)
    with torch.device("meta"):
        model = SyncHumanJointModel(cfg)
    # Uninitialised CPU storage (untouched pages cost no memory), then replaced tensor by tensor.
    model.to_empty(device="cpu")
    fill_model(model, fx.seed)
    model.pos_emb = structure_pos_emb(cfg.structure)  # buffers keep their constructed value
    verify_checksums(model.state_dict(), fx.json("state_dict_checksums.json"))
    return model.eval()


def cfg_inputs(inp: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | float]:
    """The fixture README's CFG assembly (groups [uncond, cond], domains [normal, color])."""
    n, c = inp["latents"].chunk(2)
    img = inp["image_latents_cond"]
    pn, pc = inp["prompt_embeds"].chunk(2)
    e = inp["image_embeds_cond"]
    cond = inp["trellis_cond_pos"]
    z = torch.zeros_like
    return {
        "sample": torch.cat([torch.cat([n, n, c, c]), torch.cat([z(img), img, z(img), img])], dim=1),
        "timestep": float(inp["timestep"].item()),
        "encoder_hidden_states": torch.cat([pn, pn, pc, pc]),
        "class_labels": torch.cat([z(e), e, z(e), e]),
        "trellis_x": torch.cat([inp["trellis_latent"], inp["trellis_latent"]]),
        "trellis_t": inp["trellis_t"],
        "trellis_cond": torch.cat([z(cond), cond]),
    }


def _probe_hooks(model: torch.nn.Module, names: list[str], store: dict[str, list[torch.Tensor]]) -> list:
    handles = []
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            continue

        def hook(_m, _args, out, name=name):
            t = out[0] if isinstance(out, tuple) else out
            flat = t.detach().reshape(-1)
            idx = torch.div(torch.arange(64) * (flat.numel() - 1), 63, rounding_mode="floor")
            store.setdefault(name, []).append(flat[idx].double().clone())

        handles.append(modules[name].register_forward_hook(hook))
    return handles


def run(fx: Fixture) -> list[Comparison]:
    t0 = time.perf_counter()
    model = build_model(fx)
    t_build = time.perf_counter() - t0
    probes = fx.json("probes.json") if (fx.path / "probes.json").exists() else {}
    seen: dict[str, list[torch.Tensor]] = {}
    handles = _probe_hooks(model, list(probes), seen)
    try:
        t1, c1 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            v2d, v3d = model(**cfg_inputs(fx.inputs))
        t_fwd, c_fwd = time.perf_counter() - t1, time.process_time() - c1
    finally:
        for h in handles:
            h.remove()
    logger.info("d fixture: weights %.1f s, forward %.1f s wall / %.1f s CPU", t_build, t_fwd, c_fwd)
    note = f"weights {t_build:.0f} s, forward {t_fwd:.0f} s wall / {c_fwd:.0f} s CPU"
    out = [
        Comparison("sample_out", v2d, fx.outputs["sample_out"], fx.tol, note=note),
        Comparison("trellis_out", v3d, fx.outputs["trellis_out"], fx.tol),
    ]
    for name, calls in probes.items():
        ours = seen.get(name, [])
        if len(ours) != len(calls):
            out.append(Comparison(f"probe {name}", None, None, fx.tol, error=float("inf"),
                                  note=f"{len(ours)} calls vs {len(calls)}"))
            continue
        err = 0.0
        for o, ref in zip(ours, calls):
            r = torch.tensor(ref["strided64"], dtype=torch.float64)
            err = max(err, float((o - r).abs().max()) / max(float(ref["absmax"]), 1e-12))
        out.append(Comparison(f"probe {name}", None, None, fx.tol, error=err))
    return out
