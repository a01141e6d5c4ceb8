"""Batch reconstruction on Ray: one actor per GPU (or per CPU slot) loads the models once and takes inputs
from the driver's queue until none are left.

The driver (the process running ``python -m synchuman_core batch``) is the only writer of the output folder:
workers return file bytes, the driver writes each file under a temporary name and renames it into place
(the main output last), then appends a record to ``batch_results.jsonl``. Killing the batch at any moment
therefore leaves finished outputs and temporary ``.*.part`` files (removed by the next run), never a
half-written output under its real name, and a re-run skips every input whose output and record are there.

This is not a scheduler: placement, resources, restarts of dead workers and cluster membership are Ray's
(``--address`` joins a running cluster, ``ray start --head`` / ``ray start --address=...`` builds one).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, SyncHumanError
from ..export.writer import replace_atomically
from .engine import EngineConfig, ReconstructionEngine, WorkPayload
from .inputs import BatchItem
from .records import PART_SUFFIX, ResultsLog, write_atomic

__all__ = ["BatchOptions", "BatchSummary", "run_batch"]

logger = logging.getLogger("synchuman.batch")

@dataclass
class BatchOptions:
    """How a batch runs (the ``batch`` command's flags).

    ``workers`` None: one per GPU of the cluster, else one per ``cpus_per_worker`` cores.
    ``address`` None: start a local Ray instance sized for the workers and stop it at the end;
    ``"auto"`` or ``"ray://host:10001"`` / ``"host:6379"``: join that cluster (left running).
    """

    workers: int | None = None
    cpus_per_worker: int | None = None
    gpus_per_worker: float | None = None
    address: str | None = None
    overwrite: bool = False
    retries: int = 1  # extra attempts for an input whose worker died (a failing input is not retried)
    progress: bool = True
    object_store_mb: int = 256  # local Ray only


@dataclass
class BatchSummary:
    out_dir: Path
    counts: dict[str, int]
    elapsed_s: float
    workers: list[dict[str, Any]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def throughput_per_min(self) -> float:
        done = self.counts.get("ok", 0)
        return round(60.0 * done / self.elapsed_s, 3) if self.elapsed_s > 0 and done else 0.0


# ---------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------


def remove_stale_parts(out_dir: Path) -> list[Path]:
    """Temporary files a killed batch left behind (``.<name>.*.part``); never an output."""
    stale = [p for p in out_dir.rglob(f".*{PART_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _store_outputs(out_dir: Path, item: BatchItem, files: dict[str, bytes], record: Callable[[list[str]], Any]) -> list[str]:
    """Write a worker's files, each under a temporary name renamed into place; the item's main output goes
    last and ``record(files)`` is called between writing it and renaming it. A kill before the rename
    leaves no main output (the input is redone by the next run, whatever its record says); after it, the
    record exists. A finished-looking output without a record therefore never comes from this writer."""
    root = out_dir.resolve()
    main = item.output_name
    if main not in files:
        raise SyncHumanError(f"the worker returned no {main} (got {sorted(files)})")
    for rel in files:
        target = (out_dir / rel).resolve()
        if root not in target.parents:
            raise SyncHumanError(f"the worker returned a file outside the output folder: {rel}")
    names = sorted(files)
    for rel in names:
        if rel != main:
            write_atomic(out_dir / rel, files[rel])

    def write_main(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(files[main])
            f.flush()
            os.fsync(f.fileno())
        record(names)

    replace_atomically(out_dir / main, write_main)
    return names


# ---------------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------------


class _Progress:
    """A live overall bar (tqdm, stderr) and one status line per finished input."""

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, initial=initial, desc="batch", unit="input", file=sys.stderr,
                                dynamic_ncols=True)
            except ImportError:  # pragma: no cover - tqdm ships with huggingface_hub
                self.bar = None

    def line(self, msg: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            sys.stderr.write(msg + "\n")

    def running(self, names: list[str], counts: dict[str, int]) -> None:
        if self.bar is not None:
            post = {k: v for k, v in counts.items() if v}
            post["running"] = ",".join(names[:4]) + ("…" if len(names) > 4 else "")
            self.bar.set_postfix(post, refresh=True)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------------
# Ray
# ---------------------------------------------------------------------------------------------------


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError('batch runs on Ray, which is not installed: pip install "synchuman[batch]" '
                          '(or pip install -e ".[batch]" in a checkout)') from None
    return ray


def _start_ray(ray: Any, opts: BatchOptions, want_workers: int) -> bool:
    """Join ``opts.address`` or start a light local instance; True when we started it (and stop it)."""
    if ray.is_initialized():
        return False
    if opts.address:
        try:
            ray.init(address=opts.address, log_to_driver=True, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ConfigError(f"cannot join the Ray cluster at --address {opts.address}: {e}") from None
        return True
    import torch

    gpus = torch.cuda.device_count()
    cores = os.cpu_count() or 1
    cpus = cores
    if not gpus and opts.workers:
        cpus = max(cores, opts.workers * (opts.cpus_per_worker or 1))
    try:
        ray.init(num_cpus=cpus, num_gpus=gpus, include_dashboard=False, configure_logging=False,
                 object_store_memory=max(80, opts.object_store_mb) * 1024 * 1024,
                 log_to_driver=logger.isEnabledFor(logging.INFO))
    except Exception as e:  # noqa: BLE001 - Ray raises many kinds; the user needs one sentence
        raise SyncHumanError(f"could not start a local Ray for the batch ({type(e).__name__}: {e}); "
                             "start one with `ray start --head` and pass --address auto") from None
    return True


def _worker_layout(ray: Any, opts: BatchOptions, todo: int, cpu_only: bool = False) -> tuple[int, float, float]:
    """``(workers, cpus each, gpus each)`` from the flags and the cluster's resources (``cpu_only``:
    ``--device cpu``, so no GPU is claimed by default)."""
    res = ray.cluster_resources()
    gpus_total = float(res.get("GPU", 0))
    cpus_total = float(res.get("CPU", 1))
    if opts.gpus_per_worker is not None:
        gpu_each = float(opts.gpus_per_worker)
    else:
        gpu_each = 1.0 if gpus_total >= 1 and not cpu_only else 0.0
    if gpu_each > gpus_total:
        raise ConfigError(f"--gpus-per-worker {gpu_each:g} but the Ray cluster has {gpus_total:g} GPU(s)")
    if opts.cpus_per_worker is not None:
        cpu_each = float(opts.cpus_per_worker)
    elif gpu_each:
        cpu_each = 1.0
    else:
        cpu_each = float(max(1, int(cpus_total // (opts.workers or 1))))
    if cpu_each > cpus_total:
        raise ConfigError(f"--cpus-per-worker {cpu_each:g} but the Ray cluster has {cpus_total:g} CPU(s)")
    if opts.workers is not None:
        if opts.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {opts.workers}")
        n = opts.workers
    elif gpu_each:
        n = max(1, int(gpus_total // gpu_each))
    else:
        n = max(1, int(cpus_total // cpu_each))
    return max(1, min(n, todo)), cpu_each, gpu_each


def _actor_class(ray: Any, cpu_each: float, gpu_each: float) -> Any:
    class Worker:
        def __init__(self, config: EngineConfig, index: int) -> None:
            import socket

            self.engine = ReconstructionEngine(config, worker=f"w{index}@{socket.gethostname()}")

        def describe(self) -> dict[str, Any]:
            return self.engine.describe()

        def run(self, payload: WorkPayload) -> dict[str, Any]:
            return self.engine.run(payload)

    return ray.remote(num_cpus=cpu_each, num_gpus=gpu_each, max_restarts=1, max_task_retries=0)(Worker)


def _payload(item: BatchItem) -> WorkPayload:
    return WorkPayload(name=item.name, image=item.image.read_bytes(), image_suffix=item.image.suffix,
                       mask=item.mask.read_bytes() if item.mask is not None else None,
                       mask_suffix=item.mask.suffix if item.mask is not None else "",
                       settings=asdict(item.settings), source=item.source)


# ---------------------------------------------------------------------------------------------------
# The batch
# ---------------------------------------------------------------------------------------------------


def _precheck(item: BatchItem) -> str | None:
    """A reason the input cannot run, found here without a worker: the image or mask is missing or does not
    decode (:func:`synchuman_core.preprocess.loading.open_image`, the check ``reconstruct`` makes)."""
    from ..preprocess.loading import open_image

    for what, p in (("image", item.image), ("mask", item.mask)):
        if p is None:
            continue
        try:
            open_image(p, f"the {what}").close()
        except SyncHumanError as e:
            return str(e)
    return None


def run_batch(items: list[BatchItem], engine: EngineConfig, opts: BatchOptions, out_dir: str | Path) -> BatchSummary:
    """Reconstruct ``items`` into ``out_dir`` on Ray workers; see the module docstring for the guarantees."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stale = remove_stale_parts(out)
    if stale:
        logger.info("removed %d temporary file(s) of an interrupted batch", len(stale))
    log = ResultsLog(out)
    t_start = time.perf_counter()
    todo: deque[tuple[BatchItem, str]] = deque()
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    n_pre = 0
    pre_lines = []
    for item in items:
        fp = item.fingerprint()
        reason = None if opts.overwrite else log.finished(item.name, fp, out / item.output_name)
        if reason is not None:
            log.append({"name": item.name, "status": "skipped", "reason": reason, "fingerprint": fp,
                        "output": item.output_name})
            counts["skipped"] += 1
            n_pre += 1
            pre_lines.append(f"skipped {item.name}: {reason}")
            continue
        problem = _precheck(item)
        if problem is not None:
            log.append({"name": item.name, "status": "failed", "error": problem, "error_type": "InputError",
                        "fingerprint": fp, "image": str(item.image), "attempts": 0})
            counts["failed"] += 1
            n_pre += 1
            pre_lines.append(f"FAILED {item.name}: {problem}")
            continue
        todo.append((item, fp))

    progress = _Progress(len(items), n_pre, opts.progress)
    for line in pre_lines:
        progress.line(line)
    workers_info: list[dict[str, Any]] = []
    try:
        if todo:
            workers_info = _run_on_ray(todo, engine, opts, out, log, counts, progress)
    finally:
        progress.close()
        elapsed = round(time.perf_counter() - t_start, 2)
        summary = BatchSummary(out_dir=out, counts=dict(counts), elapsed_s=elapsed, workers=workers_info,
                               records=log.run_records())
        log.write_summary([i.name for i in items], {
            "elapsed_s": elapsed, "inputs": len(items), "throughput_per_min": summary.throughput_per_min,
            "workers": workers_info, "models": engine.models,
        })
    return summary


def _run_on_ray(todo: deque, engine: EngineConfig, opts: BatchOptions, out: Path, log: ResultsLog,
                counts: dict[str, int], progress: _Progress) -> list[dict[str, Any]]:
    ray = _import_ray()
    from ray.exceptions import RayActorError, RayTaskError

    started = _start_ray(ray, opts, len(todo))
    try:
        n, cpu_each, gpu_each = _worker_layout(ray, opts, len(todo),
                                               cpu_only=str(engine.device or "").startswith("cpu"))
        if not gpu_each and engine.threads is None:
            engine = EngineConfig(**{**asdict(engine), "threads": max(1, int(cpu_each)), "device": engine.device or "cpu"})
        cls = _actor_class(ray, cpu_each, gpu_each)
        actors = [cls.remote(engine, i) for i in range(n)]
        infos: list[dict[str, Any]] = []
        alive = []
        first_error = None
        for a in actors:
            try:
                infos.append(ray.get(a.describe.remote()))
                alive.append(a)
            except (RayActorError, RayTaskError) as e:
                first_error = first_error or e
                logger.warning("a batch worker could not start: %s", e)
        if not alive:
            cause = getattr(first_error, "cause", None) or first_error
            raise SyncHumanError(f"no batch worker could load the models from {engine.models}: {cause}")
        for info in infos:
            progress.line(f"worker {info['worker']} ready on {info['device']} (models loaded in {info['load_s']} s)")

        attempts: dict[str, int] = {}
        deaths: dict[int, int] = {}
        in_flight: dict[Any, tuple[Any, BatchItem, str, float]] = {}
        idle = list(alive)

        def submit() -> None:
            while idle and todo:
                item, fp = todo.popleft()
                actor = idle.pop()
                attempts[item.name] = attempts.get(item.name, 0) + 1
                ref = actor.run.remote(_payload(item))
                in_flight[ref] = (actor, item, fp, time.perf_counter())
            progress.running([v[1].name for v in in_flight.values()], counts)

        submit()
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            ref = ready[0]
            actor, item, fp, t_sub = in_flight.pop(ref)
            try:
                res = ray.get(ref)
            except RayActorError as e:
                # the worker process died (e.g. killed for memory); Ray restarts it once (max_restarts=1)
                deaths[id(actor)] = deaths.get(id(actor), 0) + 1
                if deaths[id(actor)] <= 1:
                    idle.append(actor)
                if attempts[item.name] <= opts.retries:
                    progress.line(f"retry {item.name}: its worker died ({type(e).__name__})")
                    todo.appendleft((item, fp))
                else:
                    _record_failure(log, counts, progress, item, fp, attempts[item.name],
                                    f"the worker died while reconstructing it, {attempts[item.name]} time(s) "
                                    "(out of memory? try --memory-tier balanced or low)", "WorkerDied")
                if not idle and not in_flight:
                    while todo:
                        left, left_fp = todo.popleft()
                        _record_failure(log, counts, progress, left, left_fp, attempts.get(left.name, 0),
                                        "every batch worker died; not attempted", "NoWorkers")
                submit()
                continue
            idle.append(actor)
            if res.get("status") == "ok":
                rec = {"name": item.name, "status": "ok", "output": item.output_name, "fingerprint": fp,
                       "image": str(item.image), "seed": item.settings.seed, "attempts": attempts[item.name],
                       "worker": res.get("worker"), "timings_s": res.get("timings_s"), "wall_s": res.get("wall_s"),
                       "queue_to_done_s": round(time.perf_counter() - t_sub, 2),
                       "voxels": res.get("voxels"), "faces": res.get("faces")}
                try:
                    _store_outputs(out, item, res.pop("files"), lambda names, rec=rec: log.append({**rec, "files": names}))
                except (OSError, SyncHumanError) as e:
                    _record_failure(log, counts, progress, item, fp, attempts[item.name],
                                    f"could not write its outputs: {e}", type(e).__name__)
                else:
                    counts["ok"] += 1
                    progress.line(f"ok {item.name} -> {item.output_name} ({res.get('wall_s')} s on {res.get('worker')})")
                    progress.advance()
            else:
                _record_failure(log, counts, progress, item, fp, attempts[item.name], res.get("error", "?"),
                                res.get("error_type", "Error"), res.get("traceback"), res.get("worker"))
            submit()
        for a in alive:
            ray.kill(a)
        return infos
    finally:
        if started:
            ray.shutdown()


def _record_failure(log: ResultsLog, counts: dict[str, int], progress: _Progress, item: BatchItem, fp: str,
                    attempts: int, error: str, error_type: str, tb: str | None = None, worker: str | None = None) -> None:
    rec = {"name": item.name, "status": "failed", "error": error, "error_type": error_type, "fingerprint": fp,
           "image": str(item.image), "attempts": attempts, "worker": worker}
    if tb:
        rec["traceback"] = tb
    log.append(rec)
    counts["failed"] += 1
    progress.line(f"FAILED {item.name}: {error}")
    progress.advance()

