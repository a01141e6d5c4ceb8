"""Many inputs through one API-format workflow on one or more ComfyUI servers.

A client of ComfyUI's own queue, not a scheduler: one thread per server uploads an input, queues the
workflow with that input in its ``LoadImage`` node, follows it over the websocket and downloads the
outputs; then takes the next input. Each server therefore holds one of our prompts at a time (other
clients' prompts queue there as usual). When a server dies (refused or reset connections, a closed
websocket, a time-out), the input it was running goes back to the queue for the other servers and the dead
server takes no more work. A workflow that *fails* (ComfyUI's ``node_errors`` or ``execution_error``) is
recorded as failed and not retried: it would fail the same way elsewhere.

Outputs: ``OUT/<input name>/<file>`` (every ``type: output`` file of the prompt's ``/history`` entry:
``images``, ``3d``, ... lists), written under a temporary name and renamed. ``OUT/workflow_results.jsonl``
records each input (status, server, prompt id, error, timings); a re-run skips inputs already done with
the same image, workflow and seed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..batch.inputs import IMAGE_SUFFIXES
from ..batch.records import ResultsLog, write_atomic
from ..errors import ConfigError, SyncHumanError
from ..export.paths import sanitize_name
from .server import ComfyServer, PromptEvents, ServerUnavailable, WorkflowError

__all__ = ["RESULTS_LOG", "WorkflowTemplate", "WorkflowRun", "output_refs", "run_workflow_inputs"]

RESULTS_LOG = "workflow_results.jsonl"


class WorkflowTemplate:
    """An API-format workflow whose ``LoadImage`` node receives each input in turn."""

    def __init__(self, prompt: dict[str, Any], *, image_node: str | None = None, seed: int | None = None,
                 source: str = "the workflow") -> None:
        if "prompt" in prompt and isinstance(prompt["prompt"], dict):
            prompt = prompt["prompt"]
        if not prompt or any(not isinstance(v, dict) or "class_type" not in v for v in prompt.values()):
            raise ConfigError(f"{source} is not an API-format workflow (export it with 'Export (API)' in ComfyUI)")
        self.prompt = prompt
        self.source = source
        self.seed = seed
        loaders = [k for k, v in prompt.items() if v["class_type"] == "LoadImage"]
        if image_node is not None:
            if image_node not in prompt:
                raise ConfigError(f"--image-node {image_node}: {source} has no node {image_node} "
                                  f"(LoadImage nodes: {', '.join(loaders) or 'none'})")
            if "image" not in prompt[image_node].get("inputs", {}):
                raise ConfigError(f"--image-node {image_node} ({prompt[image_node]['class_type']}) has no 'image' input")
            self.image_node: str | None = image_node
        elif len(loaders) == 1:
            self.image_node = loaders[0]
        else:
            self.image_node = None
            self._loaders = loaders

    @classmethod
    def from_file(cls, path: str | Path, **kw: Any) -> WorkflowTemplate:
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"workflow file {p} does not exist") from None
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read the workflow {p} as JSON: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p} is not an API-format workflow")
        return cls(data, source=str(p), **kw)

    def require_image_node(self) -> str:
        if self.image_node is None:
            found = ", ".join(getattr(self, "_loaders", [])) or "none"
            raise ConfigError(f"{self.source} has {'no' if found == 'none' else 'several'} LoadImage node(s) "
                              f"({found}); say which one receives the inputs with --image-node ID")
        return self.image_node

    def bind(self, image_name: str | None) -> dict[str, Any]:
        """A copy of the workflow with the input image (an uploaded name) and ``seed`` set."""
        p = copy.deepcopy(self.prompt)
        if image_name is not None:
            p[self.require_image_node()]["inputs"]["image"] = image_name
        if self.seed is not None:
            for node in p.values():
                inputs = node.get("inputs", {})
                for key in ("seed", "noise_seed"):
                    if key in inputs and not isinstance(inputs[key], list):
                        inputs[key] = self.seed
        return p

    def digest(self) -> str:
        return hashlib.sha256(json.dumps([self.prompt, self.seed], sort_keys=True).encode()).hexdigest()[:16]


def output_refs(entry: dict[str, Any], kinds: tuple[str, ...] = ("output",)) -> list[dict[str, str]]:
    """Every file a ``/history`` entry lists (``{"filename", "subfolder", "type"}``) of the given types."""
    refs = []
    for node_id, node_out in (entry.get("outputs") or {}).items():
        if not isinstance(node_out, dict):
            continue
        for value in node_out.values():
            if not isinstance(value, list):
                continue
            for f in value:
                if isinstance(f, dict) and isinstance(f.get("filename"), str) and f.get("type", "output") in kinds:
                    refs.append({"node": str(node_id), "filename": f["filename"],
                                 "subfolder": str(f.get("subfolder") or ""), "type": f.get("type", "output")})
    return refs


@dataclass
class _Task:
    name: str
    image: Path | None
    fingerprint: str
    attempts: int = 0
    tried: set[str] = field(default_factory=set)


@dataclass
class WorkflowRun:
    counts: dict[str, int]
    elapsed_s: float
    records: list[dict[str, Any]]
    dead_servers: list[str]


class _Progress:
    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.bar = None
        self.enabled = enabled
        self.lock = threading.Lock()
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, initial=initial, desc="workflow", unit="input", file=sys.stderr)
            except ImportError:  # pragma: no cover
                self.bar = None

    def line(self, msg: str) -> None:
        if not self.enabled:
            return
        with self.lock:
            if self.bar is not None:
                self.bar.write(msg, file=sys.stderr)
            else:
                sys.stderr.write(msg + "\n")

    def status(self, text: str) -> None:
        if self.bar is not None:
            with self.lock:
                self.bar.set_postfix_str(text[:80], refresh=True)

    def advance(self) -> None:
        if self.bar is not None:
            with self.lock:
                self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _finished_files(log: ResultsLog, name: str, fingerprint: str, out: Path) -> list[str] | None:
    """The files of an input finished before with the same fingerprint, all still there; else None."""
    rec = log.latest.get(name)
    if rec is None or rec.get("status") not in ("ok", "skipped") or rec.get("fingerprint") != fingerprint:
        return None
    files = list(rec.get("files") or [])
    return files if all((out / f).is_file() for f in files) else None


def _collect(inputs: str | Path | None) -> list[Path]:
    if inputs is None:
        return []
    p = Path(inputs).expanduser()
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise ConfigError(f"--inputs {p} is not a folder or an image")
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"--inputs {p} holds no images ({' '.join(IMAGE_SUFFIXES)})")
    return files


def run_workflow_inputs(template: WorkflowTemplate, servers: list[str], out_dir: str | Path, *,
                        inputs: str | Path | None = None, timeout: float = 3600.0, idle: float = 10.0,
                        http_timeout: float = 30.0, overwrite: bool = False, progress: bool = True) -> WorkflowRun:
    """Run the workflow once per image of ``inputs`` (or once, as it is, without inputs) on ``servers``."""
    if not servers:
        raise ConfigError("give at least one --server")
    clients = [ComfyServer(u, timeout=http_timeout) for u in dict.fromkeys(servers)]
    images = _collect(inputs)
    if images:
        template.require_image_node()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = ResultsLog(out, RESULTS_LOG)
    digest = template.digest()
    tasks: deque[_Task] = deque()
    names: list[str] = []
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    seen: set[str] = set()
    for img in images or [None]:
        name = sanitize_name(img.stem if img is not None else Path(template.source).stem, default="input")
        if name.lower() in seen:
            raise ConfigError(f"two inputs are named {name!r} (only the extension differs); rename one")
        seen.add(name.lower())
        h = hashlib.sha256(digest.encode())
        if img is not None:
            h.update(img.read_bytes())
        fp = h.hexdigest()[:20]
        names.append(name)
        done = None if overwrite else _finished_files(log, name, fp, out)
        if done is not None:
            log.append({"name": name, "status": "skipped", "reason": "done before (same image, workflow, seed)",
                        "fingerprint": fp, "files": done})
            counts["skipped"] += 1
            continue
        tasks.append(_Task(name=name, image=img, fingerprint=fp))

    bar = _Progress(len(names), counts["skipped"], progress)
    cond = threading.Condition()
    state = {"in_flight": 0}
    live = {c.url for c in clients}
    dead: list[str] = []
    t0 = time.perf_counter()

    def record(task: _Task, rec: dict[str, Any]) -> None:
        with cond:
            log.append({"name": task.name, "fingerprint": task.fingerprint, "attempts": task.attempts, **rec})
            counts[rec["status"]] += 1
        bar.advance()

    def take(server: ComfyServer) -> _Task | None:
        with cond:
            while True:
                if server.url not in live:
                    return None
                for i, task in enumerate(tasks):
                    if server.url not in task.tried:
                        del tasks[i]
                        state["in_flight"] += 1
                        return task
                if state["in_flight"] == 0:
                    return None
                cond.wait(0.5)

    def unavailable(task: _Task, error: str) -> None:
        """Record ``task`` as failed for want of a server (caller holds ``cond``)."""
        log.append({"name": task.name, "status": "failed", "fingerprint": task.fingerprint,
                    "attempts": task.attempts, "error": error, "error_type": "ServerUnavailable",
                    "servers_tried": sorted(task.tried)})
        counts["failed"] += 1
        bar.advance()

    def give_back(task: _Task, server: ComfyServer, err: Exception) -> None:
        with cond:
            task.tried.add(server.url)
            state["in_flight"] -= 1
            if live - task.tried:
                tasks.appendleft(task)
                bar.line(f"retry {task.name} on another server: {err}")
            else:
                unavailable(task, f"no server could run it (last: {err})")
            cond.notify_all()

    def mark_dead(server: ComfyServer, err: Exception) -> None:
        with cond:
            live.discard(server.url)
            dead.append(server.url)
            # inputs that only this server had left to try can go nowhere now
            for task in list(tasks):
                if not (live - task.tried):
                    tasks.remove(task)
                    unavailable(task, f"no live server left to try it ({err})")
            cond.notify_all()
        bar.line(f"server {server.url} is gone: {err}")
        server.close()

    def serve(server: ComfyServer) -> None:
        if not server.alive():
            mark_dead(server, ServerUnavailable(f"no ComfyUI answers at {server.url}"))
            return
        while True:
            task = take(server)
            if task is None:
                break
            task.attempts += 1
            started = time.perf_counter()
            try:
                rec = _run_one(server, template, task, out, timeout, idle, bar)
            except ServerUnavailable as e:
                give_back(task, server, e)
                mark_dead(server, e)
                break
            except (WorkflowError, SyncHumanError, OSError) as e:
                with cond:
                    state["in_flight"] -= 1
                    cond.notify_all()
                record(task, {"status": "failed", "error": str(e), "error_type": type(e).__name__,
                              "server": server.url, "wall_s": round(time.perf_counter() - started, 2)})
                bar.line(f"FAILED {task.name}: {e}")
                continue
            with cond:
                state["in_flight"] -= 1
                cond.notify_all()
            record(task, {"status": "ok", **rec, "wall_s": round(time.perf_counter() - started, 2)})
            bar.line(f"ok {task.name} on {server.url} ({len(rec['files'])} file(s))")
        server.close()

    threads = [threading.Thread(target=serve, args=(c,), name=f"comfy-{c.url}", daemon=True) for c in clients]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        while tasks:  # every server died before these were tried
            task = tasks.popleft()
            record(task, {"status": "failed", "error": "every server is unreachable; not attempted",
                          "error_type": "ServerUnavailable"})
    finally:
        bar.close()
        elapsed = round(time.perf_counter() - t0, 2)
        log.write_summary(names, {"elapsed_s": elapsed, "servers": [c.url for c in clients], "dead_servers": dead,
                                  "workflow": template.source})
    return WorkflowRun(counts=dict(counts), elapsed_s=elapsed, records=log.run_records(), dead_servers=dead)


def _run_one(server: ComfyServer, template: WorkflowTemplate, task: _Task, out: Path, timeout: float,
             idle: float, bar: _Progress) -> dict[str, Any]:
    """Upload, queue, follow, download one input on one server -> the ok record's fields."""
    server.connect()
    uploaded = None
    if task.image is not None:
        upload_name = f"synchuman_{task.name}_{task.fingerprint[:8]}{task.image.suffix.lower()}"
        uploaded = server.upload_image(task.image.read_bytes(), upload_name)
    prompt_id = server.queue(template.bind(uploaded))

    def on_event(ev: PromptEvents) -> None:
        if ev.progress:
            bar.status(f"{task.name}: node {ev.node} {ev.progress[0]}/{ev.progress[1]}")
        elif ev.node:
            bar.status(f"{task.name}: node {ev.node}")

    entry = server.wait(prompt_id, timeout=timeout, on_event=on_event, idle=idle)
    refs = output_refs(entry)
    files = []
    folder = out / task.name
    for ref in refs:
        data = server.view(ref["filename"], ref["subfolder"], ref["type"])
        rel = Path(*[sanitize_name(p, default="_") for p in Path(ref["subfolder"]).parts],
                   sanitize_name(ref["filename"], default="output"))
        write_atomic(folder / rel, data)
        files.append(str(Path(task.name) / rel))
    if not files:
        folder.mkdir(parents=True, exist_ok=True)
    return {"server": server.url, "prompt_id": prompt_id, "uploaded": uploaded, "files": files}
