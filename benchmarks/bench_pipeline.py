"""Time and peak memory of every pipeline stage and component, per memory tier and precision (JSON + tables).

    python -m benchmarks.bench_pipeline                                # tiny configs, tiers high/balanced/low
    python -m benchmarks.bench_pipeline --preset medium                # mid-size configs (~1-3 min per tier here)
    python -m benchmarks.bench_pipeline --preset real --steps1 1 --steps2 1 --tiers low --precisions fp32,bf16
                                                                       # the CPU rehearsal at real size
    python -m benchmarks.bench_pipeline --preset real --device cuda    # paper settings (50 / 25 steps), 3 tiers
    python -m benchmarks.bench_pipeline --real                         # real-size pieces next to the estimates
    python -m benchmarks.bench_pipeline --fixture-d                    # one forward of the fixture-d joint model

Pipeline runs (``--preset``): the whole chain through the pipeline's public stage functions,
``preprocess -> prepare_conditioning -> run_stage1 -> run_stage2`` under
:func:`synchuman_core.memory.apply_tier`, then ``export_mesh`` (clean-up, UV, texture bake, GLB written to a
temporary folder) and the Gaussian PLY. Models: official-format configs with random weights by the fixture
rules, built in memory (:mod:`benchmarks.presets`; ``real`` = the released checkpoint's configs, no download);
the occupancy is a body-sized shell of exactly ``--voxels`` voxels (default 20k at real size). The export gets
the decoder's mesh, except at real size (``--export-mesh auto``): random decoder weights make a noise surface
of ~1M faces there, on which xatlas alone runs for over half an hour, so the export gets a smooth synthetic
body of ``--export-faces`` (200k) faces instead, with the stage-1 views and the decoded Gaussians. Each
(tier, precision) runs in a fresh subprocess.

Reported per stage and per component: wall time (weight building excluded and reported apart), calls, peak
host memory (RSS sampled every 2 ms, above the level at the start; and the absolute peak), CUDA peaks above
the start and absolute (allocated and reserved), the host-sync count of each sampling stage.

``--drop`` (default on for ``--preset real`` on a CPU): components are dropped after use and built again
when needed (the tier's ``drop_after_use``), so a real-size fp32 run fits ~12 GB of host RAM; the build time
is then inside the stages and reported in ``build_s``. ``--torso-dtype`` (default: bf16 for a bf16 run on a
CPU) casts the fp16 torso of the TRELLIS-style models, whose official dtype is fp16, to another dtype.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .measure import MiB, Monitor, Recorder
from .presets import DEFAULT_MV_SIZE, DEFAULT_VOXELS, PRESETS, RandomModels, person_rgba

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("preprocess", "conditioning", "stage1", "stage2", "export")
_TORSO = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class _DroppingModels(RandomModels):
    """``unload`` also collects the reference cycles of wrapped methods, so dropped weights are freed now."""

    def unload(self, name: str | None = None) -> None:
        super().unload(name)
        gc.collect()


def torso_dtype(args: argparse.Namespace, precision: str, device: torch.device) -> torch.dtype | None:
    choice = args.torso_dtype
    if choice == "auto":
        return torch.bfloat16 if precision == "bf16" and device.type == "cpu" else None
    return None if choice == "official" else _TORSO[choice]


def build_source(args: argparse.Namespace, precision: str, device: torch.device, rec: Recorder) -> RandomModels:
    """The preset's models (random weights), built lazily; every component is instrumented by ``rec``."""
    from synchuman_core.memory import dtype_plan

    return _DroppingModels(args.preset, voxels=args.voxels, mv_size=args.mv_size, dtypes=dtype_plan(precision, device),
                           torso_dtype=torso_dtype(args, precision, device), on_build=rec.instrument)


def run_preset(args: argparse.Namespace, tier_name: str, precision: str | None) -> dict[str, Any]:
    """One tier in one precision on one preset, in this process: the stage and component tables."""
    from synchuman_core.memory import get_tier, resolve_precision

    device = torch.device(args.device)
    tier = get_tier(tier_name, **({"precision": precision} if precision else {}))
    prec = resolve_precision(tier.precision, device)
    rec = Recorder(Monitor(device).start())
    src = build_source(args, prec, device, rec)
    if not args.drop:  # build everything up front: stage times are then pure compute
        for name in src.COMPONENTS:
            src.get(name)
    try:
        return run_once(args, tier, src, rec, compile_models=args.compile)
    finally:
        rec.mon.stop()


def run_once(args: argparse.Namespace, tier: Any, src: RandomModels, rec: Recorder, *,
             compile_models: bool = False) -> dict[str, Any]:
    """The whole chain once on ``src`` under ``tier`` (a :class:`~synchuman_core.memory.MemoryTier`); ``rec``
    is reset first, so one process can measure several tiers on the same models (``gpu_check``). The
    models are moved back to the host afterwards."""
    from synchuman_core import pipeline
    from synchuman_core.memory import HostSyncCounter, apply_tier, compile_heavy_modules, resolve_precision
    from synchuman_core.samplers import SamplerSettings, make_generator

    device = torch.device(args.device)
    if args.drop:
        tier = tier.with_(drop_after_use=True)
    prec = resolve_precision(tier.precision, device)
    rec.reset()
    mon = rec.mon
    host_before = mon.rss()
    run = apply_tier(tier, src, device=device, cast=False)
    compiled: list[str] = []
    t_compile = time.perf_counter()
    if compile_models:
        compile_heavy_modules(run.models, backend=args.compile_backend)
        compiled = ["joint"]
    t_compile = time.perf_counter() - t_compile
    build_upfront = src.build_seconds
    weights = src.weight_bytes()
    builds: dict[str, float] = {}
    syncs: dict[str, int] = {}
    count_syncs = device.type != "cuda"  # the counting mode's per-op Python overhead would skew GPU timings

    @contextmanager
    def stage(name: str, counter: Any = None):
        b0 = src.build_seconds
        with rec.stage(name), (counter or contextlib.nullcontext()) as c:
            yield
        builds[name] = src.build_seconds - b0
        if c is not None:
            syncs[name] = c.total
        if args.progress:  # one JSON line per finished stage: partial results survive a run cut short
            row = rec.stages[name].row() | {"stage": name, "tier": tier.name, "precision": prec,
                                            "s": round(rec.stages[name].seconds - builds[name], 3),
                                            "build_s": round(builds[name], 2), "rss_MiB": round(mon.rss() / MiB),
                                            "components": {k: v.row() for k, v in rec.components.items()}}
            with open(args.progress, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")

    s1 = SamplerSettings.stage1(steps=args.steps1)
    s2 = SamplerSettings.stage2(steps=args.steps2)
    with run.active():
        with stage("preprocess"):
            pre = pipeline.preprocess(run.models, person_rgba())
        with stage("conditioning"):
            inputs = pipeline.prepare_conditioning(run.models, pre, **run.conditioning_kwargs())
        with stage("stage1", HostSyncCounter() if count_syncs else None):
            out1 = pipeline.run_stage1(run.models, inputs, s1, make_generator(43), **run.stage1_kwargs())
        del inputs
        with stage("stage2", HostSyncCounter() if count_syncs else None):
            out2 = pipeline.run_stage2(run.models, out1, s2, make_generator(7), **run.stage2_kwargs())
    faces_out = 0
    if args.export and out2.mesh is not None:
        run.models.release(*run.models.on_device)  # the export needs no model
        with stage("export"):
            faces_out = _export(args, out1, out2, device, rec)
    run.models.release(*run.models.on_device)
    for name in src.loaded:  # leave the device empty for the next run
        src.get(name).to("cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    stages = {}
    for k, v in rec.stages.items():
        row = v.row()
        row["build_s"] = round(builds.get(k, 0.0), 2)
        row["s"] = round(v.seconds - builds.get(k, 0.0), 3)
        row["host_peak_MiB"] = row.pop("host_MiB")
        stages[k] = row
    mesh = out2.mesh
    return {
        "preset": args.preset, "tier": tier.name, "precision": prec, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "steps": [args.steps1, args.steps2],
        "drop_after_use": tier.drop_after_use, "compiled": bool(compiled),
        "compile_backend": args.compile_backend if compiled else None, "compile_call_s": round(t_compile, 2),
        "build_s": round(build_upfront, 2), "weights_MiB": round(weights / MiB, 1),
        "host_before_MiB": round(host_before / MiB), "host_peak_rss_MiB": round(mon.peak_rss() / MiB),
        "voxels": int(out1.coords.shape[0]), "view_px": int(out1.color_views.shape[-1]),
        "mesh_faces": int(mesh.faces.shape[0]) if mesh is not None else 0, "export_faces": faces_out,
        "export_mesh": args.export_mesh if args.export else None,
        "gaussians": int(out2.gaussians.xyz.shape[0]) if out2.gaussians is not None else 0,
        "total_s": round(sum(v["s"] for v in stages.values()), 3),
        "stages": stages,
        "components": {k: v.row() for k, v in rec.components.items()},
        "host_syncs": syncs,
        "events": [f"{k}:{n}" for k, n in run.models.events],
    }


def _export(args: argparse.Namespace, out1: Any, out2: Any, device: torch.device, rec: Recorder) -> int:
    """The export as the CLI runs it (official settings, ``--texture-size``, ``--bake-steps``), files in a
    temporary folder; export sub-steps become components ``export.<step>``."""
    from synchuman_core.pipeline import export_reconstruction, export_settings, mesh_arrays
    from synchuman_core.stage2.gaussians import save_gaussians_ply

    from .measure import Stat

    settings = export_settings("glb", texture_size=args.texture_size, bake_mode=args.recipe)
    if args.bake_steps is not None:
        settings.bake.opt_steps = args.bake_steps
    v, f, colors = mesh_arrays(out2.mesh)
    if args.export_mesh == "body":
        v, f, colors = body_mesh(args.export_faces, v.device)
    with tempfile.TemporaryDirectory() as tmp:
        res = export_reconstruction(v, f, vertex_colors=colors, color_views=out1.color_views,
                                    normal_views=out1.normal_views, settings=settings, output_dir=tmp,
                                    filename="bench", device=device, gaussians=out2.gaussians)
        t0 = time.perf_counter()
        if out2.gaussians is not None:
            save_gaussians_ply(out2.gaussians, Path(tmp) / "bench_gaussians.ply")
        timings = {**res.timings, "gaussians_ply": time.perf_counter() - t0}
    for k, s in timings.items():
        rec.components[f"export.{k}"] = Stat(calls=1, seconds=float(s))
    return int(res.mesh.faces.shape[0])


def body_mesh(faces: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A smooth standing figure of about ``faces`` triangles with vertex colours, in the decoder's frame: what
    the export of a trained checkpoint gets, where random decoder weights give a noise surface."""
    from synchuman_core.geometry.synthetic import smooth_color_field, synthetic_body, synthetic_body_detail

    v, f = synthetic_body(synthetic_body_detail(faces))
    return v.to(device), f.to(device), smooth_color_field(v).to(device)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def print_preset(res: dict[str, Any]) -> None:
    print(f"\n== preset {res['preset']}, tier {res['tier']} ({res['precision']}, {res['device']}, "
          f"{res['threads']} threads, steps {res['steps'][0]}+{res['steps'][1]}"
          f"{', compiled' if res['compiled'] else ''}{', drop after use' if res['drop_after_use'] else ''}) ==")
    print(f"views {res['view_px']} px, voxels {res['voxels']}, weights {res['weights_MiB']} MiB "
          f"(built in {res['build_s']} s), mesh faces {res['mesh_faces']}, export of the "
          f"{res.get('export_mesh') or 'no'} mesh -> {res['export_faces']} faces, "
          f"gaussians {res['gaussians']}, peak RSS {res['host_peak_rss_MiB']} MiB, total {res['total_s']:.1f} s")
    dev = res["device"].startswith("cuda")
    hdr = f"{'':28s}{'calls':>6s}{'time s':>9s}{'build s':>8s}{'host MiB':>10s}" + (
        f"{'dev MiB':>9s}{'alloc pk':>9s}{'resv pk':>9s}" if dev else "")
    print("stage (host/dev: peak above the level at its start; alloc/resv pk: absolute CUDA peaks)\n" + hdr)
    for k, v in res["stages"].items():
        print(f"{k:28s}{v['calls']:6d}{v['s']:9.2f}{v['build_s']:8.1f}{v['host_peak_MiB']:10d}"
              + (f"{v['device_MiB']:9d}{v['device_peak_MiB']:9d}{v['reserved_peak_MiB']:9d}" if dev else ""))
    print("component (peak above the level before each call)\n" + hdr)
    for k, v in res["components"].items():
        print(f"{k:28s}{v['calls']:6d}{v['s']:9.2f}{'':8s}{v['host_MiB']:10d}" + (f"{v['device_MiB']:9d}" if dev else ""))
    if res["host_syncs"]:
        print(f"host syncs: stage 1 {res['host_syncs']['stage1']} in {res['steps'][0]} steps, "
              f"stage 2 {res['host_syncs']['stage2']} in {res['steps'][1]} steps")
    print("residency: " + " ".join(res["events"]))


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


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=PRESETS, default="tiny")
    ap.add_argument("--tiers", default="high,balanced,low", help="comma-separated memory tiers")
    ap.add_argument("--precisions", "--precision", dest="precisions", default="",
                    help="comma-separated precisions (auto, fp16, bf16, fp32); default: each tier's own (auto: "
                         "fp16 on CUDA, fp32 on CPU)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps1", type=int, default=None, help="stage-1 steps (default: 50 for real, else 2)")
    ap.add_argument("--steps2", type=int, default=None, help="stage-2 steps (default: 25 for real, else 2)")
    ap.add_argument("--voxels", type=int, default=None, help="occupied voxels (default tiny 300, medium 2000, real 20000)")
    ap.add_argument("--mv-size", type=int, default=None, help="stage-2 DINOv2 feature size (default 224 / 448 / 896)")
    ap.add_argument("--drop", action=argparse.BooleanOptionalAction, default=None,
                    help="drop components after use (default: on for --preset real on a CPU)")
    ap.add_argument("--torso-dtype", choices=("auto", "official", "bf16", "fp16", "fp32"), default="auto",
                    help="dtype of the TRELLIS-style models' fp16 torso (auto: bf16 for bf16 runs on a CPU)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the joint model's blocks")
    ap.add_argument("--compile-backend", default="inductor")
    ap.add_argument("--export", action=argparse.BooleanOptionalAction, default=True, help="run the export stage")
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--recipe", choices=("official", "fast"), default="official",
                    help="texture recipe of the export (official: 100 observations + opt bake; fast: 5 views)")
    ap.add_argument("--bake-steps", type=int, default=None, help="texture optimisation steps (official 1000)")
    ap.add_argument("--export-mesh", choices=("auto", "decoded", "body"), default="auto",
                    help="mesh the export stage gets: the decoder's, or a synthetic body of --export-faces faces "
                         "(auto: body for --preset real, whose random decoder weights give a noise surface of ~1M "
                         "faces that no trained checkpoint makes and on which xatlas runs for over half an hour)")
    ap.add_argument("--export-faces", type=int, default=200_000,
                    help="faces of the synthetic body for --export-mesh body (before the export's clean-up)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--real", action="store_true", help="real-size parameter memory, estimates and component forwards")
    ap.add_argument("--pieces", default=None, help="real-size pieces to run with --real (comma-separated)")
    ap.add_argument("--fixture-d", action="store_true", help="one forward of the fixture-d joint model (~2-10 min, ~8 GB)")
    ap.add_argument("--fixture-d-sequential", action="store_true", help="with --fixture-d: also the CFG halves in sequence")
    ap.add_argument("--json", type=Path, default=None, help="also write every result to this file")
    ap.add_argument("--progress", type=Path, default=None, help="append one JSON line per finished stage here")
    ap.add_argument("--_one", default=None, help=argparse.SUPPRESS)  # internal: one run / piece in this process
    return ap


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    real = args.preset == "real"
    args.steps1 = args.steps1 if args.steps1 is not None else (50 if real else 2)
    args.steps2 = args.steps2 if args.steps2 is not None else (25 if real else 2)
    args.voxels = args.voxels or DEFAULT_VOXELS[args.preset]
    args.mv_size = args.mv_size or DEFAULT_MV_SIZE[args.preset]
    if args.drop is None:
        args.drop = real and torch.device(args.device).type == "cpu"
    if args.export_mesh == "auto":
        args.export_mesh = "body" if real else "decoded"
    if args.export_faces < 1000:
        raise SystemExit(f"--export-faces must be at least 1000, got {args.export_faces}")
    return args


def passthrough(args: argparse.Namespace) -> list[str]:
    out = ["--preset", args.preset, "--device", args.device, "--steps1", str(args.steps1), "--steps2",
           str(args.steps2), "--voxels", str(args.voxels), "--mv-size", str(args.mv_size),
           "--drop" if args.drop else "--no-drop", "--torso-dtype", args.torso_dtype,
           "--export" if args.export else "--no-export", "--texture-size", str(args.texture_size),
           "--compile-backend", args.compile_backend]
    out += ["--compile"] if args.compile else []
    out += ["--bake-steps", str(args.bake_steps)] if args.bake_steps is not None else []
    out += ["--recipe", args.recipe, "--export-mesh", args.export_mesh, "--export-faces", str(args.export_faces)]
    out += ["--threads", str(args.threads)] if args.threads else []
    out += ["--progress", str(args.progress)] if args.progress else []
    return out


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (tier, precision) in its own subprocess; prints the tables, returns the results."""
    results = []
    for tier in [t for t in args.tiers.split(",") if t]:
        for prec in [p for p in args.precisions.split(",") if p] or [""]:
            r = _subprocess(["--_one", f"tier:{tier}:{prec}", *passthrough(args)])
            r.setdefault("tier", tier)
            r.setdefault("precision", prec or "auto")
            results.append(r)
            if "error" in r:
                print(f"\n== tier {tier} {prec} failed: {r['error']}", flush=True)
                continue
            print_preset(r)
            sys.stdout.flush()
    return results


def main(argv: list[str] | None = None) -> int:
    args = resolve_args(parser().parse_args(argv))
    if args.threads:
        torch.set_num_threads(args.threads)

    if args._one:  # child process: one measurement, JSON on the last stdout line
        from . import bench_pieces

        kind, name, *rest = args._one.split(":")
        if kind == "tier":
            res = run_preset(args, name, rest[0] if rest and rest[0] else None)
        elif kind == "piece":
            res = bench_pieces._piece(name)
        else:
            res = bench_pieces.fixture_d(args, name)
        sys.stdout.write(json.dumps(res) + "\n")
        return 0

    results: list[dict[str, Any]] = []
    if args.real or args.fixture_d:
        from . import bench_pieces

        threads = ["--threads", str(args.threads)] if args.threads else []
        if args.real:
            bench_pieces.real_tables()
            print("\n== real-size component forwards (fp32, CPU; peak RSS above the level before the call) ==")
            print(f"{'piece':20s}{'params':>13s}{'time s':>9s}{'peak MiB':>10s}{'formula MiB':>13s}")
            for piece in [p for p in (args.pieces or ",".join(bench_pieces.REAL_PIECES)).split(",") if p]:
                r = _subprocess(["--_one", f"piece:{piece}", *threads])
                results.append(r)
                if "error" in r:
                    print(f"{piece:20s} failed: {r['error']}")
                    continue
                est = "" if r["estimate_MiB"] is None else f"{r['estimate_MiB']:13d}"
                print(f"{piece:20s}{r['params']:13,d}{r['s']:9.2f}{r['peak_MiB']:10d}{est}", flush=True)
        if args.fixture_d:
            r = {}
            for mode in ["batched"] + (["sequential"] if args.fixture_d_sequential else []):
                one = _subprocess(["--_one", f"fixture:{mode}", *threads])
                r = {**one, **r} if "error" not in one else {**r, mode: one}
            results.append({"fixture_d": r})
            print("\n== fixture d (joint model, 1.04 B params, fp32, CPU, batch 20 at 96²) ==")
            print(json.dumps(r, indent=1))
    else:
        results = run_all(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
