"""``python -m synchuman_core batch`` on a local Ray, on CPU, with the tiny random checkpoint.

One scenario end to end: 6 inputs (one corrupt) on 2 workers; the first run (a subprocess) is killed after
two inputs are done; the re-run finishes only the missing ones (no input is reconstructed twice, no partial
file is left), records the corrupt input as failed, and its GLB is byte-identical to ``reconstruct``'s
for the same seed. The input-collection tests are fast and need no Ray.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synchuman_core.batch import ItemSettings, collect_inputs, read_records
from synchuman_core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["--steps1", "1", "--steps2", "1", "--color", "vertex", "--recipe", "fast", "--device", "cpu"]


# ---------------------------------------------------------------------------------------------------
# Inputs (no Ray)
# ---------------------------------------------------------------------------------------------------


def _png(path: Path, size: int = 64) -> Path:
    from PIL import Image

    Image.new("RGBA", (size, size), (200, 100, 50, 255)).save(path)
    return path


def test_folder_glob_and_mask_pairing(tmp_path):
    for n in ("b", "a", "a_mask"):
        _png(tmp_path / f"{n}.png")
    (tmp_path / "readme.txt").write_text("x")
    items = collect_inputs(tmp_path, ItemSettings(seed=5))
    assert [i.name for i in items] == ["a", "b"]
    assert items[0].mask == tmp_path / "a_mask.png" and items[1].mask is None
    assert all(i.settings.seed == 5 for i in items)
    assert [i.name for i in collect_inputs(str(tmp_path / "b*.png"))] == ["b"]
    with pytest.raises(ConfigError, match="no input images"):
        collect_inputs(str(tmp_path / "zzz*.png"))
    with pytest.raises(ConfigError, match="does not exist"):
        collect_inputs(tmp_path / "missing")


def test_manifest_rows_and_their_errors(tmp_path):
    _png(tmp_path / "p.png")
    _png(tmp_path / "m.png")
    (tmp_path / "cast.csv").write_text("image,mask,seed,name,steps1,color,recipe\np.png,m.png,7,alice,2,vertex,fast\n"
                                       "p.png,,,bob,,,\n")
    a, b = collect_inputs(tmp_path / "cast.csv", ItemSettings(seed=43))
    assert (a.name, a.mask, a.settings.seed, a.settings.steps1, a.settings.color) == ("alice", tmp_path / "m.png", 7, 2, "vertex")
    assert (a.settings.recipe, b.settings.recipe) == ("fast", "official")
    assert (b.name, b.mask, b.settings.seed, b.settings.steps1) == ("bob", None, 43, None)
    assert a.fingerprint() != b.fingerprint()

    (tmp_path / "x.jsonl").write_text('{"image": "p.png", "seed": 1}\n{"image": "p.png", "name": "p2", "seed": -3}\n')
    with pytest.raises(ConfigError, match=r"x.jsonl line 2: seed"):
        collect_inputs(tmp_path / "x.jsonl")
    (tmp_path / "dup.jsonl").write_text('{"image": "p.png"}\n{"image": "p.png"}\n')
    with pytest.raises(ConfigError, match="both write p.glb"):
        collect_inputs(tmp_path / "dup.jsonl")
    (tmp_path / "bad.csv").write_text("image,sed\np.png,3\n")
    with pytest.raises(ConfigError, match="unknown column.*'sed'"):
        collect_inputs(tmp_path / "bad.csv")
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    with pytest.raises(ConfigError, match="broken.jsonl line 1 is not JSON"):
        collect_inputs(tmp_path / "broken.jsonl")


def test_missing_ray_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    from synchuman_core.batch import runner

    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray":
            raise ImportError("no ray")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ConfigError, match=r"\[batch\]"):
        runner._import_ray()


# ---------------------------------------------------------------------------------------------------
# Ray, end to end
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from synchuman_core.io.tiny import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("batch") / "tiny"
    write_tiny_checkpoint(root, seed=5)
    return root


def _make_inputs(folder: Path) -> list[str]:
    from synchuman_core.demo import example_person

    folder.mkdir()
    names = []
    for i, size in enumerate((320, 352, 384, 416, 448)):
        example_person(size).save(folder / f"person_{i}.png")
        names.append(f"person_{i}")
    good = (folder / "person_0.png").read_bytes()
    (folder / "corrupt.png").write_bytes(good[: len(good) // 3])  # a truncated PNG
    return names


def _ok_records(out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in read_records(out / "batch_results.jsonl"):
        if r["status"] == "ok":
            counts[r["name"]] = counts.get(r["name"], 0) + 1
    return counts


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the batch and everything it started (its own session: Ray's local processes included)."""
    import psutil

    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    _, alive = psutil.wait_procs(kids, timeout=15)
    for k in alive:  # a Ray helper outside the group: never leave it on the machine
        k.kill()


@pytest.mark.slow
def test_batch_killed_and_resumed_matches_reconstruct(tiny_models, tmp_path, capsys):
    from synchuman_core.cli import main as cli_main

    inputs, out = tmp_path / "inputs", tmp_path / "out"
    names = _make_inputs(inputs)
    cmd = [sys.executable, "-m", "synchuman_core", "batch", str(inputs), "-o", str(out), "--models", str(tiny_models),
           "--workers", "2", "--cpus-per-worker", "1", "--seed", "9", "--quiet", *STEPS]

    # 1. first run, killed (SIGKILL, no clean-up) once two inputs are done
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = (tmp_path / "first_run.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    deadline = time.monotonic() + 400
    try:
        while time.monotonic() < deadline and proc.poll() is None and sum(_ok_records(out).values()) < 2:
            time.sleep(0.2)
    finally:
        _kill_group(proc)
        log.close()
    done_first = {n for n, c in _ok_records(out).items() if c}
    assert len(done_first) >= 2, (tmp_path / "first_run.log").read_text()[-3000:]
    before = {n: (out / f"{n}.glb").stat().st_mtime_ns for n in done_first}

    # 2. the re-run finishes only the missing ones
    rc = cli_main(cmd[3:])
    report = json.loads(capsys.readouterr().out)
    assert rc == 1  # one input failed
    summary = json.loads((out / "batch_results.json").read_text())
    assert summary["counts"] == report["counts"] == {"ok": 5 - len(done_first), "skipped": len(done_first), "failed": 1}
    assert len(report["workers"]) == min(2, 5 - len(done_first))
    assert sorted(p.stem for p in out.glob("*.glb")) == names
    assert _ok_records(out) == {n: 1 for n in names}  # nothing reconstructed twice
    for n in done_first:
        assert (out / f"{n}.glb").stat().st_mtime_ns == before[n]
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".part"]
    latest = {r["name"]: r for r in summary["results"]}
    assert latest["corrupt"]["status"] == "failed" and "corrupt.png" in latest["corrupt"]["error"]
    assert all(latest[n]["status"] in ("ok", "skipped") for n in names)
    ok = [latest[n] for n in names if latest[n]["status"] == "ok"]
    assert all(r["files"] == sorted([f"{r['name']}.glb", f"{r['name']}_gaussians.ply"]) for r in ok)
    assert all(r["timings_s"]["total"] > 0 for r in ok)

    # 3. same seed, same bytes as `reconstruct` (models loaded once per worker vs once per command), with the
    # worker's torch thread count (--cpus-per-worker 1): CPU float sums depend on how many threads split them
    import torch

    single = tmp_path / "single" / "person_2.glb"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli_main(["reconstruct", str(inputs / "person_2.png"), "-o", str(single), "--models",
                         str(tiny_models), "--seed", "9", *STEPS]) == 0
    finally:
        torch.set_num_threads(threads)
    assert single.read_bytes() == (out / "person_2.glb").read_bytes()
    assert (tmp_path / "single" / "person_2_gaussians.ply").read_bytes() == (out / "person_2_gaussians.ply").read_bytes()

    # 4. a third run has nothing left to do but the corrupt input
    capsys.readouterr()
    assert cli_main(cmd[3:]) == 1
    assert json.loads(capsys.readouterr().out)["counts"] == {"ok": 0, "skipped": 5, "failed": 1}


class _FakeRay:
    def __init__(self, cpus: float, gpus: float) -> None:
        self.res = {"CPU": cpus, "GPU": gpus} if gpus else {"CPU": cpus}

    def cluster_resources(self) -> dict:
        return self.res


def test_worker_layout_one_per_gpu_or_cpu_slot():
    from synchuman_core.batch.runner import BatchOptions, _worker_layout

    assert _worker_layout(_FakeRay(32, 4), BatchOptions(), todo=100) == (4, 1.0, 1.0)
    assert _worker_layout(_FakeRay(32, 4), BatchOptions(gpus_per_worker=0.5), todo=100) == (8, 1.0, 0.5)
    assert _worker_layout(_FakeRay(32, 4), BatchOptions(), todo=3) == (3, 1.0, 1.0)  # never more than inputs
    assert _worker_layout(_FakeRay(8, 4), BatchOptions(), todo=9, cpu_only=True) == (1, 8.0, 0.0)
    assert _worker_layout(_FakeRay(8, 0), BatchOptions(cpus_per_worker=2), todo=9) == (4, 2.0, 0.0)
    assert _worker_layout(_FakeRay(8, 0), BatchOptions(workers=2), todo=9) == (2, 4.0, 0.0)
    with pytest.raises(ConfigError, match="--gpus-per-worker 1 but the Ray cluster has 0"):
        _worker_layout(_FakeRay(8, 0), BatchOptions(gpus_per_worker=1), todo=9)
    with pytest.raises(ConfigError, match="--workers must be at least 1"):
        _worker_layout(_FakeRay(8, 0), BatchOptions(workers=0), todo=9)


def test_finished_and_broken_inputs_need_no_worker(tmp_path, monkeypatch):
    """Skips and pre-check failures are decided by the driver alone; Ray starts only for real work."""
    from synchuman_core.batch import BatchOptions, EngineConfig, ResultsLog, run_batch, runner

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    for n in ("done", "handmade", "redo"):
        _png(inputs / f"{n}.png")
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    items = collect_inputs(inputs, ItemSettings(seed=1))
    by = {i.name: i for i in items}
    log = ResultsLog(out)
    log.append({"name": "done", "status": "ok", "fingerprint": by["done"].fingerprint()})
    log.append({"name": "redo", "status": "ok", "fingerprint": "another-seed"})
    for n in ("done", "handmade", "redo"):
        (out / f"{n}.glb").write_bytes(b"glb")
    (out / ".done.glb.1234-abcd.part").write_bytes(b"half")  # left by a killed run

    def no_ray():
        raise ConfigError("ray was asked for")

    monkeypatch.setattr(runner, "_import_ray", no_ray)
    with pytest.raises(ConfigError, match="ray was asked for"):  # "redo" changed: it needs a worker
        run_batch(items, EngineConfig(models=str(tmp_path)), BatchOptions(progress=False), out)
    latest = {r["name"]: r for r in read_records(out / "batch_results.jsonl")}
    assert latest["done"]["status"] == "skipped" and "same input" in latest["done"]["reason"]
    assert latest["handmade"]["status"] == "skipped" and "--overwrite" in latest["handmade"]["reason"]
    assert latest["broken"]["status"] == "failed" and "broken.png" in latest["broken"]["error"]
    assert latest["redo"]["status"] == "ok"  # untouched: not yet redone
    assert not list(out.glob("*.part")) and (out / "done.glb").read_bytes() == b"glb"
    summary = run_batch([by["done"], by["broken"]], EngineConfig(models=str(tmp_path)), BatchOptions(progress=False), out)
    assert summary.counts == {"ok": 0, "failed": 1, "skipped": 1}
