"""The pack in a real ComfyUI (skipped unless ``COMFYUI_URL`` is set).

The server must have this pack loaded and the tiny checkpoint in ``models/synchuman/<SYNCHUMAN_TINY_NAME>``
(default ``tiny``; ``python tests/comfy_standin/tiny.py ComfyUI/models/synchuman/tiny``). The tests upload
their input images, queue the API workflows over HTTP, follow the websocket, and read ``/history``::

    bash ../shared/tools/comfyui-host.sh start .      # or any ComfyUI with the pack installed
    COMFYUI_URL=http://127.0.0.1:8199 python -m pytest -q tests/test_comfy_server.py
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import sys
import time
import uuid
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlencode, urlparse
from urllib.request import Request, urlopen

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "comfy_standin"))

from harness import load_api, small_prompt, workflow_names, write_example_inputs  # noqa: E402

URL = os.environ.get("COMFYUI_URL", "").rstrip("/")
TINY = os.environ.get("SYNCHUMAN_TINY_NAME", "tiny")
TIMEOUT = float(os.environ.get("SYNCHUMAN_SERVER_TIMEOUT", "900"))

pytestmark = [pytest.mark.comfy_server,
              pytest.mark.skipif(not URL, reason="set COMFYUI_URL to a ComfyUI running this pack")]


# ------------------------------------------------------------------------------------------------ http


def _get(path: str):
    with urlopen(URL + path, timeout=120) as r:
        return json.loads(r.read())


def _post(path: str, payload: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(payload or {}).encode()
    req = Request(URL + path, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urlopen(req, timeout=120) as r:
            body = r.read()
            return r.status, (json.loads(body) if body.strip() else {})
    except HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _upload(path: Path) -> None:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{path.name}\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + path.read_bytes() + (
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n--{boundary}--\r\n"
    ).encode()
    req = Request(URL + "/upload/image", data=body, method="POST",
                  headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urlopen(req, timeout=120) as r:
        assert r.status == 200


def _view(entry: dict) -> bytes:
    q = urlencode({"filename": entry["filename"], "subfolder": entry["subfolder"], "type": entry["type"]})
    with urlopen(f"{URL}/view?{q}", timeout=120) as r:
        return r.read()


class Socket:
    """A minimal websocket client (stdlib only) for ComfyUI's ``/ws``: text messages as dicts."""

    def __init__(self, client_id: str):
        u = urlparse(URL)
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert b" 101 " in head.split(b"\r\n")[0], head

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("websocket closed")
            buf += chunk
        return buf

    def recv(self) -> dict | None:
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._read(8))[0]
        payload = self._read(n)
        return json.loads(payload) if b0 & 0x0F == 1 else None  # text frames only (binary = previews)

    def close(self) -> None:
        self.sock.close()


def _run(prompt: dict, *, on_message=None) -> tuple[str, dict, list[dict]]:
    """Queue ``prompt``; returns (prompt_id, history entry, websocket messages for it)."""
    client_id = uuid.uuid4().hex
    ws = Socket(client_id)
    try:
        status, body = _post("/prompt", {"prompt": prompt, "client_id": client_id})
        assert status == 200 and not body.get("node_errors"), body
        pid = body["prompt_id"]
        messages = []
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            msg = ws.recv()
            if msg is None or msg.get("data", {}).get("prompt_id") not in (pid, None):
                continue
            messages.append(msg)
            if on_message is not None:
                on_message(msg)
            t = msg["type"]
            if t in ("execution_error", "execution_interrupted") or (
                    t == "executing" and msg["data"].get("node") is None):
                break
        else:
            pytest.fail(f"prompt {pid} did not finish within {TIMEOUT} s")
    finally:
        ws.close()
    for _ in range(50):
        hist = _get(f"/history/{pid}")
        if pid in hist:
            return pid, hist[pid], messages
        time.sleep(0.2)
    pytest.fail(f"prompt {pid} is not in /history")


@pytest.fixture(scope="module")
def uploaded(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    write_example_inputs(d)
    from PIL import Image

    Image.new("RGB", (64, 96), (200, 100, 50)).save(d / "synchuman_no_alpha.png")
    for p in d.glob("*.png"):
        _upload(p)
    return d


def _with_seed(prompt: dict, seed: int) -> dict:
    """A different seed, so that ComfyUI's cache does not answer from an earlier run."""
    for node in prompt.values():
        if "seed" in node["inputs"]:
            node["inputs"]["seed"] = seed
    return prompt


# ------------------------------------------------------------------------------------------------ tests


def test_object_info_lists_every_node_as_the_standin_does():
    from harness import local_object_info

    from nodes import NODES

    info = _get("/object_info")
    ours = [n.GET_SCHEMA().node_id for n in NODES]
    assert [k for k in info if k.startswith("SyncHuman")] == ours
    assert TINY in info["SyncHumanModelLoader"]["input"]["required"]["model"][1]["options"]
    local = local_object_info()  # our nodes + the stand-in's core nodes
    for name, entry in local.items():
        real = json.loads(json.dumps(info[name]))
        for d in (real, entry):
            if name == "SyncHumanModelLoader":
                d["input"]["required"]["model"][1]["options"] = None
            if name == "LoadImage":
                d["input"]["required"]["image"][0] = None
            d.pop("python_module", None)
        for field in ("input", "input_order", "output", "output_name", "output_is_list", "output_node", "category"):
            assert real.get(field) == entry.get(field), (name, field)


def test_templates_are_served():
    templates = _get("/workflow_templates")
    pack = next(k for k, v in templates.items() if "synchuman_image_to_textured_mesh" in v)
    assert sorted(templates[pack]) == workflow_names()  # the UI files only, each once
    with urlopen(f"{URL}/api/workflow_templates/{pack}/synchuman_image_to_textured_mesh.json", timeout=60) as r:
        assert json.loads(r.read())["version"] == 0.4
    for name in workflow_names():  # each with its thumbnail
        with urlopen(f"{URL}/api/workflow_templates/{pack}/{name}.jpg", timeout=60) as r:
            assert r.headers.get_content_type() == "image/jpeg" and r.read(3) == b"\xff\xd8\xff"


def test_example_inputs_are_in_input_at_start():
    """prestartup_script.py copied the files the templates load into ComfyUI's input/ (no upload needed)."""
    shipped = Path(__file__).resolve().parents[1] / "example_inputs"
    for f in sorted(shipped.iterdir()):
        assert _view({"filename": f.name, "subfolder": "", "type": "input"}) == f.read_bytes(), f.name


def _template_model() -> str:
    loader = next(n for n in load_api("synchuman_image_to_textured_mesh").values()
                  if n["class_type"] == "SyncHumanModelLoader")
    return loader["inputs"]["model"]


@pytest.mark.slow
@pytest.mark.parametrize("name", workflow_names())
def test_template_runs_as_loaded(name):
    """The API copy of each template, unchanged (every widget as shipped: full steps, texture size), on
    whatever checkpoint the server has under the templates' model name (the tiny one in CI:
    ``python tests/comfy_standin/tiny.py ComfyUI/models/synchuman/SyncHuman``)."""
    options = _get("/object_info/SyncHumanModelLoader")["SyncHumanModelLoader"]["input"]["required"]["model"]
    options = options[1]["options"] if options[0] == "COMBO" else options[0]
    if _template_model() not in options:
        pytest.skip(f"the server has no checkpoint named {_template_model()!r} in models/synchuman/")
    pid, hist, _ = _run(load_api(name))
    assert hist["status"]["status_str"] == "success", hist["status"]
    glbs = [e for v in hist["outputs"].values() for e in v.get("3d", [])]
    assert glbs and all(_view(e)[:4] == b"glTF" for e in glbs)


@pytest.mark.parametrize("name", workflow_names())
def test_api_workflow_runs(name, uploaded):
    prompt = _with_seed(small_prompt(load_api(name), model=TINY), 1000 + workflow_names().index(name))
    pid, hist, messages = _run(prompt)
    assert hist["status"]["status_str"] == "success", hist["status"]
    outputs = hist["outputs"]
    glbs = [e for v in outputs.values() for e in v.get("3d", [])]
    assert glbs and all(_view(e)[:4] == b"glTF" for e in glbs)
    assert any(m["type"] == "progress" for m in messages)  # sampler progress reached the browser
    if name == "synchuman_stage_by_stage":
        frames = next(n["inputs"]["frames"] for n in load_api(name).values()
                      if n["class_type"] == "SyncHumanRenderGaussians")
        assert sum(len(v.get("images", [])) for v in outputs.values()) == 15 + frames
        ply = next(v["ply"][0] for v in outputs.values() if "ply" in v)
        assert _view(ply).startswith(b"ply")
        preview = next(v["result"] for v in outputs.values() if "result" in v)
        assert preview[0].endswith(".glb")


def test_bad_input_is_an_execution_error_and_the_server_survives(uploaded):
    prompt = small_prompt(load_api("synchuman_image_to_textured_mesh"), model=TINY)
    loader = next(n for n in prompt.values() if n["class_type"] == "LoadImage")
    loader["inputs"]["image"] = "synchuman_no_alpha.png"
    pre = next(n for n in prompt.values() if n["class_type"] == "SyncHumanPreprocess")
    pre["inputs"]["remove_background"] = "off"  # with background removal on, a plain photo is valid input
    pid, hist, messages = _run(prompt)
    assert hist["status"]["status_str"] == "error"
    err = next(m["data"] for m in messages if m["type"] == "execution_error")
    assert err["node_type"] == "SyncHumanPreprocess"
    assert "no alpha channel" in err["exception_message"]
    assert err["exception_type"].endswith("InputImageError")
    assert _get("/system_stats")["system"]


def test_validation_errors_match_the_standin(uploaded):
    """A wrong wire, a missing input and a value out of range: HTTP 400 with the error types the stand-in
    executor gives for the same prompt."""
    from executor import PromptValidationError, validate_prompt
    from harness import node_classes

    prompt = small_prompt(load_api("synchuman_image_to_textured_mesh"), model=TINY)
    joint = next(k for k, n in prompt.items() if n["class_type"] == "SyncHumanJointSampler")
    prompt[joint]["inputs"]["input"] = prompt[joint]["inputs"]["models"]  # SYNCHUMAN_MODELS into SYNCHUMAN_INPUT
    del prompt[joint]["inputs"]["models"]
    settings = next(k for k, n in prompt.items() if n["class_type"] == "SyncHumanSamplerSettings")
    prompt[settings]["inputs"]["steps"] = 0
    status, body = _post("/prompt", {"prompt": prompt})
    assert status == 400
    server = {(k, e["type"]) for k, ne in body["node_errors"].items() for e in ne["errors"]}
    assert {(joint, "return_type_mismatch"), (joint, "required_input_missing"),
            (settings, "value_smaller_than_min")} <= server
    with pytest.raises(PromptValidationError) as e:
        validate_prompt(prompt, node_classes())
    local = {(k, x["type"]) for k, ne in e.value.node_errors.items() for x in ne["errors"]}
    assert {x for x in local if x[1] != "value_not_in_list"} == server  # (the stand-in has no input files)


def test_interrupt_stops_the_sampler(uploaded):
    prompt = _with_seed(small_prompt(load_api("synchuman_image_to_textured_mesh"), model=TINY, steps1=40), 7)
    sent = {}

    def interrupt_on_progress(msg):
        if msg["type"] == "progress" and not sent:
            sent["node"] = msg["data"]["node"]
            _post("/interrupt")

    pid, hist, messages = _run(prompt, on_message=interrupt_on_progress)
    assert prompt[sent["node"]]["class_type"] == "SyncHumanJointSampler"
    stop = next(m["data"] for m in messages if m["type"] == "execution_interrupted")
    assert stop["node_type"] == "SyncHumanJointSampler"
    steps = [m["data"]["value"] for m in messages if m["type"] == "progress" and m["data"]["node"] == sent["node"]]
    assert max(steps) < 40  # stopped mid-run
    assert hist["status"]["status_str"] == "error" and not hist["outputs"]
