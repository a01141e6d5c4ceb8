"""Real-size pieces and the fixture-d forward, each run in a subprocess by ``bench_pipeline``.

    python -m benchmarks.bench_pipeline --real          # parameter memory, per-tier estimates, pieces
    python -m benchmarks.bench_pipeline --fixture-d     # one forward of the fixture-d joint model

``--real`` prints the parameter memory of every real component per precision, the estimate of
:func:`synchuman_core.memory.estimate_peak_memory` per tier, and runs the real-size pieces that fit
a few minutes and a few GB on a CPU, next to the estimate's formula for the same piece: structure
decoder, VAE decode (whole and 512-px tiles) and encode of one view, the stage-1 UNet's level-0
transformer at 96² for one CFG half (10 images; ``attn1`` over 18,432 tokens), one 3D DiT block,
DINOv2's global condition.

``--fixture-d``: the fixture-d configuration of the joint model (FIXTURES d: real levels 1-3 of the
UNet, 1.04 B parameters, fp32, batch 20 at 96²) built here with random weights, one forward exactly as
the fixture was made.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from .measure import MiB, Monitor

ROOT = Path(__file__).resolve().parents[1]


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
    from synchuman_core.memory.estimate import (
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
            from synchuman_core.memory.estimate import _GEGLU_ROWS_ELEMENTS, _K_TRANSFORMER

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
