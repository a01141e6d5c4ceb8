"""The multi-server ComfyUI API client (``python -m synchuman_core workflow``) against stand-in servers on
127.0.0.1 (threads in this process; one of them dies mid-run). Every wait is bounded by a time-out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from comfy_api_standin import StandinComfy

from synchuman_core.cli import main as cli_main
from synchuman_core.comfy_api import WorkflowTemplate, output_refs, run_workflow_inputs
from synchuman_core.comfy_api import server as server_mod
from synchuman_core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _workflow() -> dict:
    """Our API-format example workflow (api_workflows/), or a graph of the same shape if it moved."""
    p = ROOT / "api_workflows" / "synchuman_image_to_textured_mesh.json"
    if p.exists():
        data = json.loads(p.read_text())
        if all(isinstance(v, dict) and "class_type" in v for v in data.values()):
            return data
    return {"3": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
            "6": {"class_type": "SyncHumanJointSampler", "inputs": {"seed": 43, "input": ["3", 0]}},
            "11": {"class_type": "SyncHumanExportMesh", "inputs": {"mesh": ["6", 0]}}}


def _inputs(tmp_path: Path, n: int, fail: tuple[int, ...] = ()) -> Path:
    d = tmp_path / "inputs"
    d.mkdir()
    for i in range(n):
        body = b"FAIL" if i in fail else b"ok"
        (d / f"person_{i}.png").write_bytes(b"\x89PNG fake " + body + bytes([i]))
    (d / "notes.txt").write_text("not an input")
    return d


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "workflow_results.jsonl").read_text().splitlines()]


def test_two_servers_one_dies_inputs_finish_on_the_other(tmp_path):
    inputs = _inputs(tmp_path, 6, fail=(4,))
    out = tmp_path / "out"
    template = WorkflowTemplate(_workflow(), seed=7)
    with StandinComfy("A", step_delay=0.15) as a, StandinComfy("B", step_delay=0.02, die_on_prompt=2) as b:
        run = run_workflow_inputs(template, [a.url, b.url], out, inputs=inputs, timeout=30, idle=0.5,
                                  http_timeout=5, progress=False)
    assert run.dead_servers == [b.url]
    assert run.counts == {"ok": 5, "failed": 1, "skipped": 0}
    latest = {r["name"]: r for r in run.records}
    failed = latest["person_4"]
    assert failed["status"] == "failed" and "failed on purpose" in failed["error"]
    assert failed["error_type"] == "WorkflowError"
    # the prompt B was running when it died was finished by A
    retried = [r for r in latest.values() if r["status"] == "ok" and r["attempts"] == 2]
    assert len(retried) == 1 and retried[0]["server"] == a.url
    for i in (0, 1, 2, 3, 5):
        rec = latest[f"person_{i}"]
        assert rec["status"] == "ok" and len(rec["files"]) == 1 and rec["files"][0].endswith(".glb")
        data = (out / rec["files"][0]).read_bytes()
        server_name = "A" if rec["server"] == a.url else "B"
        assert data.startswith(f"{server_name}:".encode())  # the bytes this server made, downloaded
        assert data.decode().endswith(rec["prompt_id"])
    # the seed went into every seed input; the input went into the LoadImage node
    sent = a.prompts[0]["prompt"]
    assert all(n["inputs"]["seed"] == 7 for n in sent.values() if "seed" in n["inputs"])
    loader = next(k for k, v in sent.items() if v["class_type"] == "LoadImage")
    assert sent[loader]["inputs"]["image"] in a.uploads
    assert not list(out.rglob("*.part")) and not list(out.rglob("preview.png"))  # temp previews not fetched
    summary = json.loads((out / "workflow_results.json").read_text())
    assert summary["counts"] == {"ok": 5, "failed": 1} and summary["dead_servers"] == [b.url]


def test_rerun_skips_done_inputs_and_retries_failures(tmp_path):
    inputs = _inputs(tmp_path, 3, fail=(1,))
    out = tmp_path / "out"
    template = WorkflowTemplate(_workflow())
    with StandinComfy("A") as a:
        first = run_workflow_inputs(template, [a.url], out, inputs=inputs, timeout=30, idle=0.5, progress=False)
        assert first.counts == {"ok": 2, "failed": 1, "skipped": 0}
        n_prompts = len(a.prompts)
        second = run_workflow_inputs(template, [a.url], out, inputs=inputs, timeout=30, idle=0.5, progress=False)
    assert second.counts == {"ok": 0, "failed": 1, "skipped": 2}
    assert len(a.prompts) == n_prompts + 1  # only the failed input ran again
    skipped = [r for r in _records(out)[-3:] if r["status"] == "skipped"]
    assert {r["name"] for r in skipped} == {"person_0", "person_2"}


def test_all_servers_dead_records_every_input(tmp_path):
    inputs = _inputs(tmp_path, 2)
    dead = StandinComfy("gone")
    url = dead.url
    dead.httpd.server_close()  # nothing listens there
    run = run_workflow_inputs(WorkflowTemplate(_workflow()), [url], tmp_path / "out", inputs=inputs,
                              timeout=5, http_timeout=2, progress=False)
    assert run.counts == {"ok": 0, "failed": 2, "skipped": 0} and run.dead_servers == [url]
    assert all("server" in r["error"] for r in run.records)


def test_polling_without_websocket_client(tmp_path, monkeypatch):
    monkeypatch.setattr(server_mod, "_ws_module", lambda: None)
    inputs = _inputs(tmp_path, 2)
    with StandinComfy("A") as a:
        run = run_workflow_inputs(WorkflowTemplate(_workflow()), [a.url], tmp_path / "out", inputs=inputs,
                                  timeout=30, idle=0.2, progress=False)
    assert run.counts["ok"] == 2


def test_cli_workflow_multi_server(tmp_path, capsys):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(_workflow()))
    inputs = _inputs(tmp_path, 2)
    with StandinComfy("A") as a, StandinComfy("B") as b:
        rc = cli_main(["workflow", str(wf), "--inputs", str(inputs), "--server", a.url, "--server", b.url,
                       "-o", str(tmp_path / "out"), "--quiet", "--timeout", "30"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["ok"] == 2 and not report["dead_servers"]


def test_template_errors_speak_in_flags(tmp_path, capsys):
    with pytest.raises(ConfigError, match="API-format"):
        WorkflowTemplate({"nodes": [], "links": []})
    two = {"1": {"class_type": "LoadImage", "inputs": {"image": "a"}},
           "2": {"class_type": "LoadImage", "inputs": {"image": "b"}}}
    t = WorkflowTemplate(two)
    with pytest.raises(ConfigError, match="--image-node"):
        t.bind("x.png")
    assert WorkflowTemplate(two, image_node="2").bind("x.png")["2"]["inputs"]["image"] == "x.png"
    with pytest.raises(ConfigError, match="no node 9"):
        WorkflowTemplate(two, image_node="9")
    rc = cli_main(["workflow", str(tmp_path / "missing.json"), "--quiet"])
    assert rc == 2 and "missing.json does not exist" in capsys.readouterr().err


def test_output_refs_reads_every_output_list():
    entry = {"outputs": {"9": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"},
                                          {"filename": "p.png", "subfolder": "", "type": "temp"}]},
                         "11": {"3d": [{"filename": "m.glb", "subfolder": "3d", "type": "output"}], "text": ["x"]}}}
    refs = output_refs(entry)
    assert [(r["node"], r["filename"], r["subfolder"]) for r in refs] == [("9", "a.png", ""), ("11", "m.glb", "3d")]


def test_without_inputs_the_workflow_runs_once_as_saved(tmp_path):
    prompt = _workflow()
    loader = next(k for k, v in prompt.items() if v["class_type"] == "LoadImage")
    template = WorkflowTemplate(prompt, source=str(tmp_path / "portrait.json"))
    with StandinComfy("A", input_files=(prompt[loader]["inputs"]["image"],)) as a:
        run = run_workflow_inputs(template, [a.url], tmp_path / "out", timeout=30, idle=0.5, progress=False)
    assert run.counts["ok"] == 1 and len(a.uploads) == 0, run.records
    rec = run.records[0]
    assert rec["name"] == "portrait" and rec["uploaded"] is None
    assert (tmp_path / "out" / rec["files"][0]).read_bytes().startswith(b"A:")
