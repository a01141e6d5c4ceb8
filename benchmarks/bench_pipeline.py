"""Time and peak memory of every pipeline stage and component, per memory tier (prints numbers).

    python -m benchmarks.bench_pipeline                        # tiny configs, tiers high/balanced/low
    python -m benchmarks.bench_pipeline --preset medium        # mid-size configs (~1-3 min per tier here)
    python -m benchmarks.bench_pipeline --real                 # real size: parameter memory, per-tier
                                                               # estimates, real-size component forwards
    python -m benchmarks.bench_pipeline --fixture-d            # one forward of the fixture-d joint model
    python -m benchmarks.bench_pipeline --device cuda --tiers balanced,low --steps1 50 --steps2 25

Pipeline runs (``--preset``): models with random weights (fixture rules) built in memory from
official-format configs, the whole chain ``preprocess -> prepare_conditioning -> run_stage1 ->
run_stage2`` with :func:`synchuman_core.memory.apply_tier`, each tier in a fresh subprocess. Reported
per stage and per component: wall time, calls, and peak memory above the level at the start of the
stage (host: RSS sampled every 2 ms; CUDA: ``max_memory_allocated`` above the level at the stage
start), plus the peak during each component's calls above the level right before the call
(its activations), and the host-sync count per sampling step (:class:`~synchuman_core.memory.HostSyncCounter`).
The structure decoder's occupancy is cut to the ``--voxels`` largest logits (random weights occupy
half the grid) and, below the real 896 px, the stage-2 DINOv2 features are computed at ``--mv-size``
and upsampled to the 64x64 grid.

``--real`` prints the parameter memory of every real component per precision, the estimate of
:func:`synchuman_core.memory.estimate_peak_memory` per tier, and runs the real-size pieces that fit
a few minutes and a few GB on a CPU (each in a subprocess), next to the estimate's formula for the
same piece: structure decoder, VAE decode (whole and 512-px tiles) and encode of one view, the
stage-1 UNet's level-0 transformer at 96² for one CFG half (10 images; ``attn1`` over 18,432
tokens), one 3D DiT block, DINOv2's global condition.

``--fixture-d``: the fixture-d configuration of the joint model (FIXTURES d: real levels 1-3 of the
UNet, 1.04 B parameters, fp32, batch 20 at 96²) built here with random weights, one forward exactly as
the fixture was made. The official code needs about 600 s and 8.2 GB per forward on this machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import torch

MiB = 2**20
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------------


class Monitor:
    """Background sampler of the process RSS (every ``interval`` s) and CUDA allocator peaks."""

    def __init__(self, device: torch.device, interval: float = 0.002) -> None:
        self.device = device
        self.proc = psutil.Process()
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop:
            self.samples.append((time.perf_counter(), self.proc.memory_info().rss))
            time.sleep(self.interval)

    def start(self) -> Monitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop = True
        self._thread.join()

    def rss(self) -> int:
        return self.proc.memory_info().rss

    def peak_between(self, t0: float, t1: float) -> int:
        vals = [r for t, r in self.samples if t0 <= t <= t1]
        return max(vals) if vals else self.rss()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def cuda_allocated(self) -> int:
        return torch.cuda.memory_allocated() if self.device.type == "cuda" else 0

    def cuda_reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def cuda_peak(self) -> int:
        return torch.cuda.max_memory_allocated() if self.device.type == "cuda" else 0


@dataclass
class Stat:
    calls: int = 0
    seconds: float = 0.0
    host_peak: int = 0  # bytes above the level right before the call
    device_peak: int = 0

    def row(self) -> dict[str, Any]:
        return {"calls": self.calls, "s": round(self.seconds, 3), "host_MiB": round(self.host_peak / MiB),
                "device_MiB": round(self.device_peak / MiB)}


@dataclass
class Recorder:
    mon: Monitor
    stages: dict[str, Stat] = field(default_factory=dict)
    components: dict[str, Stat] = field(default_factory=dict)
    _depth: int = 0

    @contextmanager
    def stage(self, name: str):
        gc.collect()
        self.mon.sync()
        base, dbase = self.mon.rss(), self.mon.cuda_allocated()
        self.mon.cuda_reset_peak()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.mon.sync()
            t1 = time.perf_counter()
            st = self.stages.setdefault(name, Stat())
            st.calls += 1
            st.seconds += t1 - t0
            st.host_peak = max(st.host_peak, self.mon.peak_between(t0, t1) - base)
            st.device_peak = max(st.device_peak, self.mon.cuda_peak() - dbase)

    def wrap(self, label: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            if self._depth:  # nested component call: counted by the outer one
                return fn(*args, **kwargs)
            self.mon.sync()
            base, dbase = self.mon.rss(), self.mon.cuda_allocated()
            t0 = time.perf_counter()
            self._depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1
                self.mon.sync()
                t1 = time.perf_counter()
                st = self.components.setdefault(label, Stat())
                st.calls += 1
                st.seconds += t1 - t0
                st.host_peak = max(st.host_peak, self.mon.peak_between(t0, t1) - base)
                st.device_peak = max(st.device_peak, self.mon.cuda_peak() - dbase)

        return timed


#: Callables timed per component (instance attributes wrap the bound methods).
TIMED = {
    "image_encoder": ("forward",),
    "vae": ("encode", "decode", "tiled_decode"),
    "dinov2": ("global_condition", "multiview_features"),
    "joint": ("forward",),
    "structure_decoder": ("forward",),
    "slat_flow": ("forward",),
    "gs_decoder": ("forward",),
    "mesh_decoder": ("forward_features", "to_representation"),
}


def instrument(models: SimpleNamespace, rec: Recorder) -> None:
    for name, methods in TIMED.items():
        obj = getattr(models, name)
        for m in methods:
            if hasattr(obj, m):
                label = name if m == "forward" else f"{name}.{m}"
                object.__setattr__(obj, m, rec.wrap(label, getattr(obj, m)))


# ---------------------------------------------------------------------------------------------------
# Presets (official-format configs, random weights)
# ---------------------------------------------------------------------------------------------------


def _configs(preset: str) -> dict[str, Any]:
    from synchuman_core.io.tiny_configs import (
        TINY_CROSS_DIM,
        TINY_DINOV2,
        TINY_GS_DECODER,
        TINY_IMAGE_ENCODER,
        TINY_JOINT,
        TINY_MESH_DECODER,
        TINY_SLAT_FLOW,
        TINY_STRUCTURE_DECODER,
        TINY_VAE,
    )

    def dec(base: dict, **args: Any) -> dict:
        return {"name": base["name"], "args": {**base["args"], **args}}

    if preset == "tiny":
        return {
            "joint": {**TINY_JOINT, "sample_size": 24, "model_channels": 32, "num_heads": 2,
                      "num_head_channels": 16},
            "vae": TINY_VAE, "image_encoder": TINY_IMAGE_ENCODER, "dinov2": TINY_DINOV2,
            "structure_decoder": TINY_STRUCTURE_DECODER, "slat_flow": TINY_SLAT_FLOW,
            "mesh_decoder": TINY_MESH_DECODER, "gs_decoder": TINY_GS_DECODER, "cross_dim": TINY_CROSS_DIM,
        }
    if preset != "medium":
        raise SystemExit(f"unknown preset {preset!r}")
    dino, proj, cross = 128, 128, 256
    return {
        # UNet at 1/5 of the real widths with the real depth and head size, 48² latents (384 px views)
        "joint": {**TINY_JOINT, "sample_size": 48, "block_out_channels": [64, 128, 256, 256],
                  "attention_head_dim": [1, 2, 4, 4], "layers_per_block": 2, "cross_attention_dim": cross,
                  "projection_class_embeddings_input_dim": 2 * proj, "model_channels": 256, "num_heads": 4,
                  "num_head_channels": 64, "num_blocks": 8, "mlp_ratio": 4, "cond_channels": dino},
        "vae": {**TINY_VAE, "block_out_channels": [64, 128, 256, 256], "layers_per_block": 2, "sample_size": 384},
        "image_encoder": {**TINY_IMAGE_ENCODER, "hidden_size": 256, "intermediate_size": 1024,
                          "num_attention_heads": 4, "num_hidden_layers": 6, "patch_size": 14, "projection_dim": proj},
        "dinov2": {**TINY_DINOV2, "embed_dim": dino, "num_heads": 2, "mlp_ratio": 4.0},
        "structure_decoder": dec(TINY_STRUCTURE_DECODER, channels=[128, 64, 32], num_res_blocks=2,
                                 num_res_blocks_middle=2),
        "slat_flow": dec(TINY_SLAT_FLOW, model_channels=256, cond_channels=dino, num_blocks=6, num_heads=4,
                         mlp_ratio=4, io_block_channels=[64]),
        "mesh_decoder": dec(TINY_MESH_DECODER, model_channels=256, num_blocks=6, num_heads=4, mlp_ratio=4, mv_dim=dino),
        "gs_decoder": dec(TINY_GS_DECODER, model_channels=256, num_blocks=6, num_heads=4, mlp_ratio=4, mv_dim=dino),
        "cross_dim": cross,
    }


class TopKOccupancy(torch.nn.Module):
    """The structure decoder with all but its ``k`` largest logits pushed below 0."""

    def __init__(self, decoder: torch.nn.Module, k: int) -> None:
        super().__init__()
        self.decoder, self.k = decoder, k

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(z)
        kth = logits.flatten().topk(self.k).values[-1]
        return logits - kth + 1e-3


class FeatureSize(torch.nn.Module):
    """DINOv2 whose stage-2 features are computed at ``size`` px and upsampled to the 64x64 grid."""

    def __init__(self, dino: torch.nn.Module, size: int) -> None:
        super().__init__()
        self.dino, self.size = dino, size

    def global_condition(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.dino.global_condition(*args, **kwargs)

    def multiview_features(self, views: torch.Tensor) -> torch.Tensor:
        f = self.dino.multiview_features(views, size=self.size)  # [V, g, g, C]
        up = torch.nn.functional.interpolate(f.permute(0, 3, 1, 2).float(), size=(64, 64), mode="nearest")
        return up.permute(0, 2, 3, 1).to(f.dtype)


def build_models(preset: str, voxels: int, mv_size: int, dtypes: dict[str, torch.dtype | None],
                 device: torch.device) -> SimpleNamespace:
    from synchuman_core.io.registry import get_spec
    from synchuman_core.io.tiny import fill_tiny

    cfgs = _configs(preset)
    models = {}
    for i, name in enumerate(TIMED):
        spec = get_spec(name)
        m = spec.build(cfgs[name], device="cpu", dtype=dtypes.get(name))
        spec.finish(m, torch.device("cpu"))
        models[name] = fill_tiny(m, i).eval().to(device)
    g = torch.Generator().manual_seed(3)
    prompts = torch.randn(10, 77, cfgs["cross_dim"], generator=g)
    ns = SimpleNamespace(**models, prompt_embeds=prompts)
    ns.structure_decoder = TopKOccupancy(ns.structure_decoder, voxels)
    if mv_size != 896:
        ns.dinov2 = FeatureSize(ns.dinov2, mv_size)
    return ns


def person_rgba(h: int = 600, w: int = 320):
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    alpha = (((yy - h / 2) / (0.47 * h)) ** 2 + ((xx - w / 2) / (0.4 * w)) ** 2 <= 1).to(torch.uint8) * 255
    rgb = (torch.rand(h, w, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    return torch.cat([rgb, alpha[..., None]], -1).numpy()


def run_preset(args: argparse.Namespace, tier_name: str) -> dict[str, Any]:
    """One tier on one preset, in this process: returns the stage/component tables."""
    from synchuman_core import pipeline
    from synchuman_core.memory import HostSyncCounter, apply_tier, dtype_plan, get_tier, resolve_precision
    from synchuman_core.samplers import SamplerSettings, make_generator

    device = torch.device(args.device)
    tier = get_tier(tier_name)
    if args.precision:
        tier = tier.with_(precision=args.precision)
    plan = dtype_plan(resolve_precision(tier.precision, device), device)
    mon = Monitor(device).start()
    rec = Recorder(mon)
    t_build = time.perf_counter()
    host_before = mon.rss()
    load_device = device if tier.residency == "resident" else torch.device("cpu")
    models = build_models(args.preset, args.voxels, args.mv_size, plan, load_device)
    build_s = time.perf_counter() - t_build
    weights = sum(p.numel() * p.element_size() for n in TIMED for p in getattr(models, n).parameters())
    instrument(models, rec)
    run = apply_tier(tier, models, device=device, cast=False)
    s1 = SamplerSettings.stage1(steps=args.steps1)
    s2 = SamplerSettings.stage2(steps=args.steps2)
    syncs = {}
    with run.active():
        with rec.stage("preprocess"):
            pre = pipeline.preprocess(run.models, person_rgba())
        with rec.stage("conditioning"):
            inputs = pipeline.prepare_conditioning(run.models, pre, **run.conditioning_kwargs())
        with rec.stage("stage1"), HostSyncCounter() as c1:
            out1 = pipeline.run_stage1(run.models, inputs, s1, make_generator(43), **run.stage1_kwargs())
        syncs["stage1"] = c1.total
        with rec.stage("stage2"), HostSyncCounter() as c2:
            out2 = pipeline.run_stage2(run.models, out1, s2, make_generator(7), **run.stage2_kwargs())
        syncs["stage2"] = c2.total
    mon.stop()
    mesh = out2.mesh
    return {
        "preset": args.preset, "tier": tier.name, "precision": resolve_precision(tier.precision, device),
        "device": str(device), "threads": torch.get_num_threads(), "steps": [args.steps1, args.steps2],
        "build_s": round(build_s, 2), "weights_MiB": round(weights / MiB, 1),
        "host_before_MiB": round(host_before / MiB),
        "voxels": int(out1.coords.shape[0]), "view_px": int(out1.color_views.shape[-1]),
        "mesh_faces": int(mesh.faces.shape[0]) if mesh is not None else 0,
        "gaussians": int(out2.gaussians.xyz.shape[0]) if out2.gaussians is not None else 0,
        "stages": {k: v.row() for k, v in rec.stages.items()},
        "components": {k: v.row() for k, v in rec.components.items()},
        "host_syncs": syncs,
        "events": [f"{k}:{n}" for k, n in run.models.events],
    }


def print_preset(res: dict[str, Any]) -> None:
    print(f"\n== preset {res['preset']}, tier {res['tier']} ({res['precision']}, {res['device']}, "
          f"{res['threads']} threads, steps {res['steps'][0]}+{res['steps'][1]}) ==")
    print(f"views {res['view_px']} px, voxels {res['voxels']}, weights {res['weights_MiB']} MiB "
          f"(built in {res['build_s']} s), mesh faces {res['mesh_faces']}, gaussians {res['gaussians']}")
    dev = res["device"].startswith("cuda")
    hdr = f"{'':32s}{'calls':>6s}{'time s':>9s}{'host MiB':>10s}" + (f"{'dev MiB':>9s}" if dev else "")
    print("stage (peak above the level at its start)\n" + hdr)
    for k, v in res["stages"].items():
        print(f"{k:32s}{v['calls']:6d}{v['s']:9.2f}{v['host_MiB']:10d}" + (f"{v['device_MiB']:9d}" if dev else ""))
    print("component (peak above the level before each call)\n" + hdr)
    for k, v in res["components"].items():
        print(f"{k:32s}{v['calls']:6d}{v['s']:9.2f}{v['host_MiB']:10d}" + (f"{v['device_MiB']:9d}" if dev else ""))
    print(f"host syncs: stage 1 {res['host_syncs']['stage1']} in {res['steps'][0]} steps, "
          f"stage 2 {res['host_syncs']['stage2']} in {res['steps'][1]} steps")
    print("residency: " + " ".join(res["events"]))


# ---------------------------------------------------------------------------------------------------
# Real size
# ---------------------------------------------------------------------------------------------------


def real_tables() -> None:
    from synchuman_core.memory import (
        GB,
        REAL_COMPONENT_SIZES,
        TIERS,
        dtype_plan,
        format_estimate_table,
        weight_bytes,
    )

    print("\n== real size: parameters (official manifests) ==")
    print(f"{'component':20s}{'params':>15s}{'fp32 GB':>9s}{'official GB':>12s}{'half GB':>9s}")
    plan = dtype_plan("fp16")
    tot = [0, 0, 0]
    for name, size in REAL_COMPONENT_SIZES.items():
        row = [weight_bytes(size, torch.float32), weight_bytes(size, None), weight_bytes(size, plan[name])]
        if name != "text_encoder":
            tot = [a + b for a, b in zip(tot, row, strict=True)]
        print(f"{name:20s}{size.params:15,d}" + "".join(f"{v / GB:9.2f}" if i != 1 else f"{v / GB:12.2f}"
                                                       for i, v in enumerate(row)))
    print(f"{'run total (no text)':20s}{'':15s}{tot[0] / GB:9.2f}{tot[1] / GB:12.2f}{tot[2] / GB:9.2f}")
    for eff in (True, False):
        print(f"\n== estimated peak GPU memory per stage, GB (CUDA, 768 px, 20k voxels, "
              f"{'flash/memory-efficient attention' if eff else 'attention scores materialised'}) ==")
        print(format_estimate_table(TIERS, device="cuda", voxels=20_000, efficient_attention=eff))


def _piece(name: str) -> dict[str, Any]:
    """One real-size component forward in this process (fp32, CPU): time, peak RSS above the level
    after building the inputs, and the estimate's formula for the same piece."""
    from synchuman_core.memory import (
        REAL_SHAPES,
        unet_activation_bytes,  # noqa: F401  (documents which formula the UNet piece checks)
        vae_decode_bytes,
        vae_encode_bytes,
    )

    torch.manual_seed(0)
    sh = REAL_SHAPES
    est = None
    with torch.no_grad():
        if name == "structure_decoder":
            from synchuman_core.stage1.structure_decoder import SparseStructureDecoder, SparseStructureDecoderConfig

            cfg = SparseStructureDecoderConfig.from_official(
                {"name": "SparseStructureDecoder", "args": {"out_channels": 1, "latent_channels": 8,
                 "num_res_blocks": 2, "num_res_blocks_middle": 2, "channels": [512, 128, 32], "use_fp16": False}})
            model = SparseStructureDecoder(cfg).eval()
            x = (torch.randn(1, 8, 16, 16, 16),)
            fn = model
            est = 6 * 32 * 64**3 * 4  # a few [32, 64³] fp32 tensors at the top level
        elif name.startswith("vae"):
            from synchuman_core.encoders.vae import vae_decode, vae_encode

            model = _real_vae()
            if name == "vae_encode":
                x = (torch.rand(1, 3, 768, 768),)
                fn = lambda im: vae_encode(model, im, slice_size=1)  # noqa: E731
                est = vae_encode_bytes(sh, 1, 4)
            else:
                tile = 512 if name == "vae_decode_tiled" else None
                x = (torch.randn(1, 4, 96, 96),)
                fn = lambda z: vae_decode(model, z, tile_size=tile)  # noqa: E731
                est = vae_decode_bytes(sh, 1, 4, tile)
        elif name == "unet_level0":
            from synchuman_core.stage1.unet_layers import TransformerMV2DModel

            model = TransformerMV2DModel(320, 5, 1024, 5).eval()
            x = (torch.randn(10, 320, 96, 96), torch.randn(10, 77, 1024))
            fn = model
            from synchuman_core.memory import _GEGLU_ROWS_ELEMENTS, _K_TRANSFORMER

            est = int(_K_TRANSFORMER * 10 * 9216 * 320 * 4 + min(10 * 9216, _GEGLU_ROWS_ELEMENTS // 2560) * 2560 * 2 * 4)
        elif name == "dit_block":
            from synchuman_core.modules.transformer import ModulatedTransformerCrossBlock

            model = ModulatedTransformerCrossBlock(1024, 1024, 16, 4.0, qk_rms_norm=True).eval()
            x = (torch.randn(1, 4096, 1024), torch.randn(1, 1024), torch.randn(1, 1374, 1024))
            fn = model
            est = int(4096 * 1024 * 4 * (3 + 6 + 4))
        elif name == "dinov2_global":
            from synchuman_core.encoders.dinov2 import DINOv2

            model = DINOv2().eval()
            for p in model.parameters():
                p.normal_(0, 0.02)
            x = ((torch.rand(518, 518, 3) * 255).to(torch.uint8),)
            fn = model.global_condition
            est = 3 * 1374 * (4096 + 4 * 1024) * 4  # the conditioning formula's DINOv2 term
        else:
            raise SystemExit(f"unknown piece {name}")
        params = sum(p.numel() for p in model.parameters())
        fn(*x) if name == "dit_block" else None  # warm-up only for the cheap one
        mon = Monitor(torch.device("cpu")).start()
        gc.collect()
        base = mon.rss()
        t0 = time.perf_counter()
        fn(*x)
        t1 = time.perf_counter()
        time.sleep(0.01)
        mon.stop()
        peak = mon.peak_between(t0, t1 + 0.01) - base
    return {"piece": name, "params": params, "s": round(t1 - t0, 2), "peak_MiB": round(peak / MiB),
            "estimate_MiB": round(est / MiB) if est else None, "threads": torch.get_num_threads()}


def _real_vae() -> torch.nn.Module:
    from synchuman_core.encoders.vae import build_vae

    cfg = {"_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
           "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4,
           "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 768,
           "scaling_factor": 0.18215, "up_block_types": ["UpDecoderBlock2D"] * 4}
    vae = build_vae(cfg, device="cpu")
    with torch.no_grad():
        for p in vae.parameters():
            p.normal_(0, 0.02)
    return vae


REAL_PIECES = ("structure_decoder", "vae_decode", "vae_decode_tiled", "vae_encode", "dit_block", "dinov2_global",
               "unet_level0")


# ---------------------------------------------------------------------------------------------------
# fixture d
# ---------------------------------------------------------------------------------------------------


def fixture_d(args: argparse.Namespace, mode: str = "batched") -> dict[str, Any]:
    from synchuman_core.io.tiny import fill_tiny
    from synchuman_core.stage1.joint import JointModelConfig, SyncHumanJointModel
    from synchuman_core.stage1.sampling import Stage1Conditioning, cfg_inputs, duplicate_for_cfg

    ref = Path(os.environ.get("SYNCHUMAN_REFERENCE", ROOT.parent / "shared" / "reference"))
    path = ref / "fixtures" / "d_SyncHuman_2D3DCrossSpaceDiffusion" / "config.json"
    if not path.is_file():
        raise SystemExit(f"fixture-d config not found at {path} (set SYNCHUMAN_REFERENCE)")
    official = json.loads(path.read_text())
    mon = Monitor(torch.device("cpu")).start()
    t0 = time.perf_counter()
    model = fill_tiny(SyncHumanJointModel(JointModelConfig.from_official(official)), 4).eval()
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    cond = Stage1Conditioning(torch.randn(10, 77, 64, generator=g), torch.randn(10, 64, generator=g),
                              torch.randn(10, 4, 96, 96, generator=g), torch.randn(1, 32, 64, generator=g))
    lat = torch.randn(10, 4, 96, 96, generator=g)
    z = torch.randn(1, 8, 16, 16, 16, generator=g)
    t = 1000 * 3 * 0.8 / (1 + 2 * 0.8)
    out: dict[str, Any] = {"params": params, "build_s": round(build_s, 1), "threads": torch.get_num_threads()}
    # one mode per process: RSS the allocator retains after the first call would hide the second
    gc.collect()
    base = mon.rss()
    t1 = time.perf_counter()
    with torch.no_grad():
        if mode == "batched":
            inp = cfg_inputs(cond)
            model(torch.cat([duplicate_for_cfg(lat), inp.image_latents], 1), torch.tensor(t, dtype=torch.float64),
                  inp.encoder_hidden_states, inp.class_labels, torch.cat([z, z]), torch.tensor([t]), inp.trellis_cond)
        else:
            from synchuman_core.stage1.sampling import cond_inputs, uncond_inputs

            for inp in (cond_inputs(cond), uncond_inputs(cond)):
                model(torch.cat([lat, inp.image_latents], 1), torch.tensor(t, dtype=torch.float64),
                      inp.encoder_hidden_states, inp.class_labels, z, torch.tensor([t]), inp.trellis_cond)
    t2 = time.perf_counter()
    out[mode] = {"s": round(t2 - t1, 1), "peak_above_weights_MiB": round((mon.peak_between(t1, t2) - base) / MiB),
                 "peak_rss_MiB": round(mon.peak_between(t1, t2) / MiB)}
    mon.stop()
    return out


# ---------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------


def _subprocess(argv: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    res = subprocess.run([sys.executable, "-m", "benchmarks.bench_pipeline", *argv], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stderr[-4000:])
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=("tiny", "medium"), default="tiny")
    ap.add_argument("--tiers", default="high,balanced,low")
    ap.add_argument("--precision", choices=("auto", "fp16", "bf16", "fp32"), default=None,
                    help="override the tiers' precision (default auto: fp16 on CUDA, fp32 on CPU)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps1", type=int, default=2)
    ap.add_argument("--steps2", type=int, default=2)
    ap.add_argument("--voxels", type=int, default=None, help="occupied voxels (default tiny 300, medium 2000)")
    ap.add_argument("--mv-size", type=int, default=None, help="stage-2 DINOv2 feature size (default tiny 224, medium 448)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--real", action="store_true", help="real-size parameter memory, estimates and component forwards")
    ap.add_argument("--pieces", default=",".join(REAL_PIECES), help="real-size pieces to run with --real")
    ap.add_argument("--fixture-d", action="store_true", help="one forward of the fixture-d joint model (~10 min, ~8 GB)")
    ap.add_argument("--fixture-d-sequential", action="store_true", help="with --fixture-d: also the CFG halves in sequence")
    ap.add_argument("--json", type=Path, default=None, help="also write every result to this file")
    ap.add_argument("--_one", default=None, help=argparse.SUPPRESS)  # internal: one tier / piece in this process
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.voxels = args.voxels or (300 if args.preset == "tiny" else 2000)
    args.mv_size = args.mv_size or (224 if args.preset == "tiny" else 448)
    passthrough = ["--preset", args.preset, "--device", args.device, "--steps1", str(args.steps1),
                   "--steps2", str(args.steps2), "--voxels", str(args.voxels), "--mv-size", str(args.mv_size)]
    if args.threads:
        passthrough += ["--threads", str(args.threads)]
    if args.precision:
        passthrough += ["--precision", args.precision]

    if args._one:  # child process: one measurement, JSON on the last stdout line
        kind, name = args._one.split(":", 1)
        res = run_preset(args, name) if kind == "tier" else _piece(name) if kind == "piece" else fixture_d(args, name)
        sys.stdout.write(json.dumps(res) + "\n")
        return 0

    results: list[dict[str, Any]] = []
    if args.real:
        real_tables()
        print("\n== real-size component forwards (fp32, CPU; peak RSS above the level before the call) ==")
        print(f"{'piece':20s}{'params':>13s}{'time s':>9s}{'peak MiB':>10s}{'formula MiB':>13s}")
        for piece in [p for p in args.pieces.split(",") if p]:
            r = _subprocess(["--_one", f"piece:{piece}", *(["--threads", str(args.threads)] if args.threads else [])])
            results.append(r)
            if "error" in r:
                print(f"{piece:20s} failed: {r['error']}")
                continue
            est = "" if r["estimate_MiB"] is None else f"{r['estimate_MiB']:13d}"
            print(f"{piece:20s}{r['params']:13,d}{r['s']:9.2f}{r['peak_MiB']:10d}{est}", flush=True)
    if args.fixture_d:
        r = {}
        for mode in ["batched"] + (["sequential"] if args.fixture_d_sequential else []):
            one = _subprocess(["--_one", f"fixture:{mode}", *(["--threads", str(args.threads)] if args.threads else [])])
            r = {**one, **r} if "error" not in one else {**r, mode: one}
        results.append({"fixture_d": r})
        print("\n== fixture d (joint model, 1.04 B params, fp32, CPU, batch 20 at 96²) ==")
        print(json.dumps(r, indent=1))
    if not args.real and not args.fixture_d:
        for tier in [t for t in args.tiers.split(",") if t]:
            r = _subprocess(["--_one", f"tier:{tier}", *passthrough])
            results.append(r)
            if "error" in r:
                print(f"\n== tier {tier} failed: {r['error']}")
                continue
            print_preset(r)
            sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
