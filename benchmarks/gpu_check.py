"""One command for a GPU machine with nothing but this repository (after README's install): the GPU test
subset, then the real-size pipeline at paper settings in every memory tier, eager and ``torch.compile``d,
and one table of seconds and peak GPU memory per stage.

    python benchmarks/gpu_check.py                              # CUDA, ~5-8 min on an H100/H200-class GPU
    python benchmarks/gpu_check.py --json gpu_check.json        # also keep every number
    python benchmarks/gpu_check.py --device cpu --preset tiny   # dry mode (runs in the test suite)

Steps:

1. environment: torch / CUDA / device, optional attention backends (``flash_attn``), the backend chosen;
2. ``pytest -m gpu tests`` on the device (``SYNCHUMAN_TEST_DEVICE``): fp16 / bf16 through every model, attention
   backend selection, offload between stages, tiers equal within tolerance;
3. the real preset (``benchmarks/presets.py``: the released configs with random weights, 20k voxels, no
   download) at 50 / 25 steps, each tier (``high``, ``balanced``, ``low``) without and with ``torch.compile``
   of the joint model's blocks, in one process on the same models (weights are built once; compiled code
   is reused across tiers). Runs that would not fit the time budget are listed as skipped.

The table: seconds per stage (weight building excluded), total, and per stage the peak CUDA memory allocated /
reserved (absolute, GiB), then the issue's goals (whole pipeline <= 20 s in ``high``; peak <= 12 GB in
``balanced``, <= 8 GB in ``low``) marked met or missed. Exit status 0 when the tests passed and every run
finished.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: `python benchmarks/gpu_check.py`
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks import bench_pipeline as bp  # noqa: E402
from benchmarks.measure import Monitor, Recorder  # noqa: E402

GiB = 2**30
STAGE_COLS = ("preprocess", "conditioning", "stage1", "stage2", "export")
GOALS = {"high_total_s": 20.0, "balanced_peak_GB": 12.0, "low_peak_GB": 8.0}


def environment(device: torch.device) -> dict[str, Any]:
    from synchuman_core.attention import best_backend

    env: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__, "device": str(device),
                           "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(name=props.name, total_GiB=round(props.total_memory / GiB, 1),
                   capability=f"{props.major}.{props.minor}")
    env["optional_backends"] = {m: importlib.util.find_spec(m) is not None
                                for m in ("flash_attn", "xformers", "sageattention")}
    env["attention_fp16"] = best_backend(device, torch.float16)
    return env


def run_tests(device: torch.device, k: str | None, timeout: float) -> dict[str, Any]:
    """``pytest -m gpu tests`` in a subprocess on ``device``: the summary line and the exit status."""
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", str(ROOT / "tests"), "-q", "-p", "no:cacheprovider"]
    if k:
        cmd += ["-k", k]
    env = {**os.environ, "SYNCHUMAN_TEST_DEVICE": str(device)}
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "summary": f"timed out after {timeout:.0f} s", "s": round(time.perf_counter() - t0, 1)}
    lines = [ln for ln in res.stdout.strip().splitlines() if ln.strip()]
    summary = lines[-1] if lines else res.stderr.strip()[-300:]
    out = {"ok": res.returncode == 0, "returncode": res.returncode, "summary": summary,
           "s": round(time.perf_counter() - t0, 1)}
    if res.returncode != 0:
        out["failures"] = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))][:20]
    return out


def _bench_args(a: argparse.Namespace) -> argparse.Namespace:
    argv = ["--preset", a.preset, "--device", a.device, "--texture-size", str(a.texture_size)]
    for flag, value in (("--steps1", a.steps1), ("--steps2", a.steps2), ("--voxels", a.voxels),
                        ("--bake-steps", a.bake_steps)):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--no-drop", "--compile-backend", a.compile_backend, "--export" if a.export else "--no-export"]
    return bp.resolve_args(bp.parser().parse_args(argv))


def run_benchmarks(a: argparse.Namespace, t_start: float) -> list[dict[str, Any]]:
    """Every (compile, tier) on one set of models; skips what would overrun the time budget."""
    from synchuman_core.memory import get_tier, resolve_precision

    args = _bench_args(a)
    device = torch.device(a.device)
    tiers = [t for t in a.tiers.split(",") if t]
    modes = [False] + ([True] if a.compile else [])
    rec = Recorder(Monitor(device).start())
    tier0 = get_tier(tiers[0], **({"precision": a.precision} if a.precision else {}))
    precision = resolve_precision(tier0.precision, device)
    t0 = time.perf_counter()
    src = bp.build_source(args, precision, device, rec)
    for name in src.COMPONENTS:
        src.get(name)
    print(f"built the {a.preset} models ({src.weight_bytes() / GiB:.2f} GiB of weights, {precision}) in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    results: list[dict[str, Any]] = []
    last = 0.0
    for compiled in modes:
        for tier_name in tiers:
            label = f"{tier_name}{' +compile' if compiled else ''}"
            left = a.budget - (time.perf_counter() - t_start)
            need = last * (3.0 if compiled and not any(r.get("compiled") for r in results) else 1.2)
            if left < need:
                print(f"skipped {label}: {left:.0f} s of the time budget left, ~{need:.0f} s needed", flush=True)
                results.append({"tier": tier_name, "compiled": compiled, "skipped": "time budget"})
                continue
            tier = get_tier(tier_name, precision=precision)
            t1 = time.perf_counter()
            try:
                r = bp.run_once(args, tier, src, rec, compile_models=compiled)
            except Exception as e:  # an OOM in one tier must not hide the others
                traceback.print_exc()
                r = {"tier": tier_name, "compiled": compiled, "error": f"{type(e).__name__}: {str(e)[:300]}"}
                for name in src.loaded:
                    src.get(name).to("cpu")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            r["wall_s"] = round(time.perf_counter() - t1, 1)
            last = max(last, r["wall_s"]) if not compiled else r["wall_s"]
            results.append(r)
            print(f"{label}: " + (f"failed: {r['error']}" if "error" in r else f"{r['total_s']:.1f} s"), flush=True)
    rec.mon.stop()
    return results


def _peak(r: dict[str, Any], key: str) -> float:
    return max((v.get(key, 0) for v in r["stages"].values()), default=0) / 1024


def table(results: list[dict[str, Any]], device: torch.device) -> str:
    cuda = device.type == "cuda"
    head = f"{'tier':18s}{'prec':>5s}" + "".join(f"{c[:8]:>9s}" for c in STAGE_COLS) + f"{'total':>8s}"
    head += "   peak GiB alloc/resv per stage (cond, stage1, stage2, export)" if cuda else "   peak host RSS GiB"
    lines = [head]
    for r in results:
        label = f"{r['tier']}{' +compile' if r.get('compiled') else ''}"
        if "stages" not in r:
            lines.append(f"{label:18s}  {r.get('error') or 'skipped: ' + r.get('skipped', '')}")
            continue
        st = r["stages"]
        row = f"{label:18s}{r['precision']:>5s}" + "".join(
            f"{st[c]['s']:9.2f}" if c in st else f"{'-':>9s}" for c in STAGE_COLS) + f"{r['total_s']:8.2f}"
        if cuda:
            row += "   " + "  ".join(
                f"{st[c]['device_peak_MiB'] / 1024:.1f}/{st[c]['reserved_peak_MiB'] / 1024:.1f}" if c in st else "-"
                for c in ("conditioning", "stage1", "stage2", "export"))
        else:
            row += f"   {r['host_peak_rss_MiB'] / 1024:.1f}"
        lines.append(row)
    return "\n".join(lines)


def goals(results: list[dict[str, Any]]) -> list[str]:
    done = {(r["tier"], bool(r.get("compiled"))): r for r in results if "stages" in r}
    out = []
    highs = [r for (t, _), r in done.items() if t == "high"]
    if highs:
        best = min(r["total_s"] for r in highs)
        out.append(f"whole pipeline in high: {best:.1f} s (goal <= {GOALS['high_total_s']:.0f} s): "
                   f"{'met' if best <= GOALS['high_total_s'] else 'missed'}")
    for tier, key in (("balanced", "balanced_peak_GB"), ("low", "low_peak_GB")):
        rs = [r for (t, _), r in done.items() if t == tier]
        if rs:
            peak = max(_peak(r, "reserved_peak_MiB") for r in rs) * 1024**3 / 1e9
            out.append(f"peak reserved in {tier}: {peak:.1f} GB (goal <= {GOALS[key]:.0f} GB): "
                       f"{'met' if peak <= GOALS[key] else 'missed'}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/gpu_check.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", choices=("tiny", "medium", "real"), default="real")
    ap.add_argument("--tiers", default="high,balanced,low")
    ap.add_argument("--precision", choices=("auto", "fp16", "bf16", "fp32"), default=None,
                    help="override the tiers' precision (auto: fp16 on CUDA)")
    ap.add_argument("--steps1", type=int, default=None, help="stage-1 steps (default: the paper's 50 for real)")
    ap.add_argument("--steps2", type=int, default=None, help="stage-2 steps (default: the paper's 25 for real)")
    ap.add_argument("--voxels", type=int, default=None)
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--export", action=argparse.BooleanOptionalAction, default=True, help="run the export stage")
    ap.add_argument("--bake-steps", type=int, default=None, help="texture optimisation steps (official 1000)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                    help="also run every tier with torch.compile")
    ap.add_argument("--compile-backend", default="auto", help="auto: inductor on CUDA, eager elsewhere")
    ap.add_argument("--tests", action=argparse.BooleanOptionalAction, default=True, help="run pytest -m gpu first")
    ap.add_argument("--tests-k", default=None, help="pytest -k expression for the test step")
    ap.add_argument("--tests-timeout", type=float, default=150.0)
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for the whole check (runs that would "
                    "overrun it are skipped)")
    ap.add_argument("--json", type=Path, default=None, help="write everything to this file")
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible to this torch build "
              f"(torch {torch.__version__}, CUDA {torch.version.cuda}); use --device cpu for the dry mode")
        return 2
    if a.compile_backend == "auto":
        a.compile_backend = "inductor" if device.type == "cuda" else "eager"

    env = environment(device)
    print("== environment ==\n" + json.dumps(env), flush=True)
    report: dict[str, Any] = {"environment": env}
    if a.tests:
        print("== pytest -m gpu ==", flush=True)
        report["tests"] = run_tests(device, a.tests_k, a.tests_timeout)
        print(("passed: " if report["tests"]["ok"] else "FAILED: ") + report["tests"]["summary"], flush=True)
        for line in report["tests"].get("failures", []):
            print("  " + line)
    print(f"== {a.preset} preset, tiers {a.tiers}, compile {'on+off' if a.compile else 'off'} ==", flush=True)
    results = run_benchmarks(a, t_start)
    report["runs"] = results
    print("\n== seconds per stage ==")
    print(table(results, device))
    report["goals"] = goals(results) if a.preset == "real" and device.type == "cuda" else []
    for line in report["goals"]:
        print(line)
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    print(f"gpu_check took {report['wall_s']:.0f} s")
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))
    ok = report.get("tests", {"ok": True})["ok"] and all("error" not in r for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
