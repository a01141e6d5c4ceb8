"""Parity runner for fixture ``g_schedules_cfg``: the stage-1 joint loop and the stage-2 SLat sampler
of the official code, driven by spy models (fixture README).

Both spies are re-implemented here exactly as the README states them; the conditioning of stage 1 is
taken from the recorded first model call (so the stubbed encoders need not be reproduced), and the
initial noise from the recorded draws. Every setting comes from ``config.json`` / ``meta.json``, and the
pipeline seed from the name of the output ``trellis_noise_seed<N>_first_cpu_draw``. Checked: the time
schedules (exact), the fp16 ``trellis_t`` values, the seed-N 3D noise of our generator, the first call's CFG batch, the final 2D and 3D
latents, the stage-2 per-step guidance decisions, call order and model times, and the de-normalised
slat.
"""

from __future__ import annotations

import re

import torch

from ...samplers import SamplerSettings, make_generator, randn, rescaled_t_schedule
from ...sparse.tensor import SparseTensor
from ...stage1.sampling import Stage1Conditioning, cfg_inputs, duplicate_for_cfg, sample_joint
from ...stage2.sampling import SlatNormalization, sample_slat
from .. import Comparison, Fixture


class Stage1Spy:
    """The fixture's spy 2D-3D model; records every call."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, sample, timestep, *, encoder_hidden_states, class_labels, trellis_x, trellis_t, trellis_cond):
        self.calls.append(
            dict(sample=sample, timestep=timestep, encoder_hidden_states=encoder_hidden_states,
                 class_labels=class_labels, trellis_x=trellis_x, trellis_t=trellis_t, trellis_cond=trellis_cond)
        )
        v = (
            0.1 * sample[:, :4]
            - 0.05 * sample[:, 4:]
            + 0.02 * class_labels.mean(-1)[:, None, None, None]
            + 0.01 * encoder_hidden_states.mean((1, 2))[:, None, None, None]
            + 1e-4 * timestep
        )
        vt = (
            0.1 * trellis_x
            + 0.05 * trellis_cond.mean((1, 2))[:, None, None, None, None]
            + 1e-4 * trellis_t.view(-1, 1, 1, 1, 1)
        )
        return v, vt


class Stage2Spy:
    """The fixture's spy SLat flow model: ``0.5 tanh(x) + mean(cond)[batch] + 3e-4 t[batch]``."""

    def __init__(self, neg_cond: torch.Tensor) -> None:
        self.neg_cond = neg_cond
        self.calls: list[dict] = []

    def __call__(self, x: SparseTensor, t: torch.Tensor, cond: torch.Tensor) -> SparseTensor:
        self.calls.append(dict(t=t.clone(), neg=bool(torch.equal(cond, self.neg_cond))))
        b = x.coords[:, 0].long()
        return x.replace(0.5 * torch.tanh(x.feats) + cond.mean(dim=(1, 2))[b][:, None] + 3e-4 * t[b][:, None])


def _stage1_conditioning(fx: Fixture) -> Stage1Conditioning:
    """Conditioning recovered from the recorded first call (layout ``[n_u, n_c, c_u, c_c]``)."""
    i = fx.inputs
    v = fx.config["stage1"]["num_views"]
    cond_rows = torch.cat([torch.arange(v, 2 * v), torch.arange(3 * v, 4 * v)])
    return Stage1Conditioning(
        prompt_embeds=i["prompt_embeds"],
        image_embeds=i["first_call_class_labels"][cond_rows],
        image_latents=i["first_call_sample"][cond_rows, 4:],
        structure_cond=i["first_call_trellis_cond"][1:],
    )


_SEEDED_NOISE = re.compile(r"trellis_noise_seed(\d+)_first_cpu_draw")


def _seeded_noise_outputs(fx: Fixture) -> list[tuple[str, int]]:
    """``[(output name, seed)]`` of the recorded first CPU draws after ``torch.manual_seed(seed)``."""
    return [(k, int(m.group(1))) for k in fx.outputs if (m := _SEEDED_NOISE.fullmatch(k))]


def _exact(name: str, ok: bool, note: str = "") -> Comparison:
    return Comparison(name, None, None, 0.0, error=0.0 if ok else float("inf"), note=note)


def _stage1(fx: Fixture) -> list[Comparison]:
    c1 = fx.config["stage1"]
    settings = SamplerSettings.stage1(steps=c1["num_inference_steps"], guidance=c1["guidance_scale"],
                                      rescale_t=c1["rescale_t"])
    out: list[Comparison] = []
    t_seq = rescaled_t_schedule(settings.steps, settings.rescale_t)
    out.append(fx.compare("stage1_t_seq", torch.tensor(t_seq, dtype=torch.float64), tol=0.0))

    # fp16 trellis_t as in the real pipeline (model dtype fp16), built as our sampler builds it
    tt16 = torch.tensor([1000.0 * t for t in t_seq[:-1]], dtype=torch.float16)
    out.append(fx.compare("stage1_trellis_t_fp16_as_in_pipeline", tt16, tol=0.0))
    # the pipeline seed through our generator: the 3D noise is its first CPU draw
    for key, seed in _seeded_noise_outputs(fx):
        z = randn(tuple(fx.outputs[key].shape), make_generator(seed))
        out.append(fx.compare(key, z, tol=0.0))

    cond = _stage1_conditioning(fx)
    inp = cfg_inputs(cond)
    lat0, z0 = fx.inputs["latents0"], fx.inputs["trellis_noise_used"]
    first = {
        "first_call_sample": torch.cat([duplicate_for_cfg(lat0), inp.image_latents], 1),
        "first_call_encoder_hidden_states": inp.encoder_hidden_states,
        "first_call_class_labels": inp.class_labels,
        "first_call_trellis_cond": inp.trellis_cond,
        "first_call_trellis_x": torch.cat([z0, z0]),
    }
    for k, v in first.items():
        out.append(Comparison(k + " (built)", v, fx.inputs[k], 0.0))

    for mode in ("batched", "sequential"):
        spy = Stage1Spy()
        res = sample_joint(spy, cond, settings, noise=(lat0, z0), cfg_batching=mode, dtype=torch.float32)
        sfx = "" if mode == "batched" else " [sequential CFG]"
        out.append(fx.compare("stage1_final_latents" + sfx, res.latents, "stage1_final_latents"))
        out.append(fx.compare("stage1_final_trellis_latent" + sfx, res.structure_latent, "stage1_final_trellis_latent"))
        if mode == "batched":
            calls = fx.meta["stage1"]["calls"]
            ts_ok = len(spy.calls) == len(calls) and all(
                abs(float(c["timestep"]) - 1000.0 * t) == 0.0 for c, t in zip(calls, t_seq, strict=False)
            ) and all(
                s["timestep"].dtype == torch.float64 and s["timestep"].ndim == 0 for s in spy.calls
            )
            out.append(_exact("stage1 timesteps (float64, one per step)", ts_ok))
            tt_ok = all(
                tuple(s["trellis_t"].shape) == (1,) and float(s["trellis_t"][0]) == c["trellis_t"][0]
                for s, c in zip(spy.calls, calls, strict=True)
            )
            out.append(_exact("stage1 trellis_t (shape [1], model dtype)", tt_ok))
            for k, v in spy.calls[0].items():
                if k in ("timestep", "trellis_t"):
                    continue
                key = "first_call_" + k
                out.append(Comparison(key + " (passed)", v, fx.inputs[key], 0.0))
    return out


def _stage2(fx: Fixture) -> list[Comparison]:
    out: list[Comparison] = []
    settings = SamplerSettings.from_pipeline_json({"args": {"slat_sampler": fx.config["stage2"]}})
    norm = SlatNormalization.from_pipeline_json({"args": {"slat_normalization": fx.config["slat_normalization"]}})
    t_seq = settings.schedule()
    out.append(fx.compare("stage2_t_seq", torch.tensor(t_seq, dtype=torch.float64), tol=0.0))

    cond = fx.inputs["stage2_cond"]
    neg = torch.zeros_like(cond)
    spy = Stage2Spy(neg)
    slat = sample_slat(spy, fx.inputs["stage2_coords"], cond, settings, noise=fx.inputs["stage2_noise"],
                       normalization=norm)
    out.append(fx.compare("stage2_slat_feats", slat.feats))
    out.append(_exact("stage2 coords kept", torch.equal(slat.coords, fx.inputs["stage2_coords"].int())))

    guidance = settings.make_guidance()
    applied = torch.tensor([guidance.needs_uncond(t) for t in t_seq[:-1]])
    out.append(Comparison("stage2_cfg_applied", applied.float(), fx.outputs["stage2_cfg_applied"].float(), 0.0))

    ref_calls = [c for s in fx.meta["stage2"]["steps"] for c in s["calls"]]
    order_ok = len(ref_calls) == len(spy.calls) and all(
        r["neg"] == o["neg"] and r["t"] == o["t"].tolist() and o["t"].dtype == torch.float32
        for r, o in zip(ref_calls, spy.calls, strict=False)
    )
    out.append(_exact("stage2 call order (cond, then neg) and model t", order_ok,
                      f"{len(spy.calls)} calls, official {len(ref_calls)}"))
    return out


def run(fx: Fixture) -> list[Comparison]:
    return _stage1(fx) + _stage2(fx)
