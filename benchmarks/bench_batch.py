"""Throughput of ``python -m synchuman_core batch`` with 1 and with 2 (or more) Ray workers.

Writes a tiny random checkpoint and N copies of the example person (different sizes), then runs the batch
once per worker count into a fresh folder and prints inputs/minute, the per-input worker time and the
fixed cost (Ray start + model load). On a CPU machine each worker gets ``cores // workers`` torch threads,
so more workers only pay off when one input does not use all cores (small models, the single-threaded
parts: export, Python overhead). On GPUs: one worker per GPU, see README "Many people, many GPUs".

    python benchmarks/bench_batch.py --inputs 6 --workers 1 2 --steps 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=6)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=1, help="steps of each stage")
    ap.add_argument("--color", default="vertex", choices=("vertex", "texture", "none"))
    ap.add_argument("--recipe", default="fast", choices=("fast", "official"), help="export recipe")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPU cores to share among workers")
    a = ap.parse_args(argv)

    from synchuman_core.batch import BatchOptions, EngineConfig, ItemSettings, collect_inputs, run_batch
    from synchuman_core.demo import example_person
    from synchuman_core.io.tiny import write_tiny_checkpoint

    root = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    write_tiny_checkpoint(root / "tiny", seed=5)
    (root / "in").mkdir()
    for i in range(a.inputs):
        example_person(320 + 32 * i).save(root / "in" / f"person_{i}.png")
    items = collect_inputs(root / "in", ItemSettings(seed=1, steps1=a.steps, steps2=a.steps, color=a.color,
                                                     recipe=a.recipe))
    rows = []
    for n in a.workers:
        cpus = max(1, a.cpus // n)
        engine = EngineConfig(models=str(root / "tiny"), device="cpu", threads=cpus)
        opts = BatchOptions(workers=n, cpus_per_worker=cpus, progress=False)
        t = time.perf_counter()
        summary = run_batch(items, engine, opts, root / f"out_{n}")
        wall = time.perf_counter() - t
        per_input = [r["wall_s"] for r in summary.records if r["status"] == "ok"]
        fixed = wall - sum(per_input) / n if per_input else float("nan")
        rows.append({"workers": n, "threads_each": cpus, "ok": summary.counts.get("ok", 0), "wall_s": round(wall, 1),
                     "inputs_per_min": round(60 * summary.counts.get("ok", 0) / wall, 2),
                     "median_input_s": round(statistics.median(per_input), 1) if per_input else None,
                     "load_s": [w["load_s"] for w in summary.workers], "fixed_s_est": round(fixed, 1)})
        sys.stdout.write(json.dumps(rows[-1]) + "\n")
        sys.stdout.flush()
    shutil.rmtree(root, ignore_errors=True)
    if len(rows) > 1 and rows[0]["inputs_per_min"]:
        for r in rows[1:]:
            sys.stdout.write(f"speed-up {r['workers']} vs {rows[0]['workers']} workers: "
                             f"{r['inputs_per_min'] / rows[0]['inputs_per_min']:.2f}x\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
