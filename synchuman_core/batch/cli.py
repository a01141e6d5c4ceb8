"""``python -m synchuman_core batch INPUTS -o OUT``: many reconstructions on Ray workers.

Examples::

    # a folder of RGBA cut-outs (or photo.png + photo_mask.png pairs), local machine, one worker per GPU
    python -m synchuman_core batch photos/ -o out/ --models models/synchuman

    # a manifest with per-row mask/seed/settings, on a running Ray cluster (ray start --head ...)
    python -m synchuman_core batch cast.csv -o /shared/out --models /shared/models/synchuman --address auto

    # CPU only, two workers of 4 cores each
    python -m synchuman_core batch "photos/*.png" -o out/ --device cpu --workers 2 --cpus-per-worker 4

Re-running the same command skips finished inputs and retries failed ones; out/batch_results.jsonl says
what happened to each input (status, error, timings).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable

__all__ = ["add_batch_parser", "cmd_batch"]


def cmd_batch(a: argparse.Namespace) -> int:
    from ..cli_inputs import BACKGROUND_NONE, check_settings
    from .engine import EngineConfig
    from .inputs import ItemSettings, collect_inputs
    from .runner import BatchOptions, run_batch

    check_settings(a)  # the flags, in their own words, before the inputs are read
    defaults = ItemSettings(seed=a.seed, steps1=a.steps1, steps2=a.steps2, texture_size=a.texture_size,
                            color=a.color, format=a.format, recipe=a.recipe, turntable=a.turntable,
                            save_views=a.save_views)
    items = collect_inputs(a.inputs, defaults)
    engine = EngineConfig(models=a.models, device=a.device, memory_tier=a.memory_tier or "high", dtype=a.dtype,
                          background=None if a.background_model == BACKGROUND_NONE else a.background_model)
    opts = BatchOptions(workers=a.workers, cpus_per_worker=a.cpus_per_worker, gpus_per_worker=a.gpus_per_worker,
                        address=a.address, overwrite=a.overwrite, retries=a.retries, progress=not a.quiet)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # a polite kill stops like Ctrl-C: records kept, local Ray stopped

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        summary = run_batch(items, engine, opts, a.output)
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted: finished outputs are kept; run the same command again to do the rest\n")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.stdout.write(json.dumps({
        "counts": summary.counts, "elapsed_s": summary.elapsed_s, "throughput_per_min": summary.throughput_per_min,
        "workers": summary.workers, "results": str(summary.out_dir / "batch_results.json"),
    }, indent=2) + "\n")
    return 0 if summary.counts.get("failed", 0) == 0 else 1


def add_batch_parser(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None],
                     default_models: str, dtypes: tuple[str, ...]) -> None:
    from ..cli_inputs import BACKGROUND_NONE
    from ..preprocess.background import DEFAULT_REMBG_MODEL, REMBG_MODELS
    from .inputs import FORMATS, MANIFEST_COLUMNS

    p = sub.add_parser(
        "batch", help="reconstruct many inputs on Ray workers (models loaded once per worker)",
        description="One Ray worker per GPU (or per --cpus-per-worker CPU cores) loads the models once and "
                    "reconstructs inputs until none are left. Finished outputs are skipped on a re-run; a "
                    "failing input is recorded and the batch goes on. Needs: pip install \"synchuman[batch]\".",
        epilog=__doc__.split("Examples::", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", metavar="INPUTS", help="a folder of images, a quoted glob ('photos/*.png'), or a "
                   f".csv/.jsonl manifest with columns {', '.join(MANIFEST_COLUMNS)} (only image is required)")
    p.add_argument("-o", "--output", required=True, help="output folder (OUT/<name>.<format> per input)")
    p.add_argument("--models", default=default_models, help="SyncHuman model folder (the same path on every node)")
    p.add_argument("--format", choices=FORMATS, default="glb", help="output format (manifest column 'format')")
    p.add_argument("--dtype", choices=dtypes, default="auto")
    p.add_argument("--background-model", choices=(*REMBG_MODELS, BACKGROUND_NONE), default=DEFAULT_REMBG_MODEL,
                   help="rembg model for inputs with no transparency and no mask, as in reconstruct (file "
                        f"<--models>/rembg/<model>.onnx on every node); '{BACKGROUND_NONE}': such inputs fail")
    p.add_argument("--address", default=None, help="join this Ray cluster ('auto', 'host:6379', "
                   "'ray://host:10001'); default: start a local Ray for this batch")
    p.add_argument("--workers", type=int, default=None, help="number of workers (default: one per GPU, or one "
                   "per --cpus-per-worker cores without GPUs)")
    p.add_argument("--cpus-per-worker", type=int, default=None, help="CPU cores per worker (torch threads on CPU)")
    p.add_argument("--gpus-per-worker", type=float, default=None, help="GPUs per worker (default 1 when the "
                   "cluster has GPUs; 0.5 puts two workers on each GPU)")
    p.add_argument("--retries", type=int, default=1, help="extra attempts for an input whose worker died")
    p.add_argument("--overwrite", action="store_true", help="reconstruct every input again, even finished ones")
    p.add_argument("--save-views", action="store_true",
                   help="also write each input's 5 colour + 5 normal views and input framings as PNGs")
    p.add_argument("--quiet", action="store_true", help="no progress bar or status lines")
    common(p)
    p.set_defaults(func=cmd_batch)
