"""A stand-in ComfyUI *API* server for client tests: the HTTP endpoints and the websocket protocol that
``synchuman_core.comfy_api`` uses, on 127.0.0.1, in threads, with fake execution.

It answers ``/system_stats``, ``/upload/image`` (multipart), ``/prompt``, ``/history/<id>``, ``/view`` and
``/ws?clientId=`` (RFC 6455 handshake; unmasked text frames server -> client) with ComfyUI's message shapes.
A queued prompt "runs" in a thread: ``progress`` messages, then an output file whose bytes name the server
and the input's hash, listed under a ``3d`` entry of ``/history`` (plus a ``temp`` preview the client must
not download). An input whose bytes contain ``FAIL`` ends in ``execution_error``. ``die_on_prompt=k`` makes
the server vanish (sockets closed, port closed) while running its k-th prompt.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import struct
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_frame(text: str) -> bytes:
    payload = text.encode()
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x81, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 127, n)
    return head + payload


class StandinComfy:
    def __init__(self, name: str, *, step_delay: float = 0.05, steps: int = 3, die_on_prompt: int | None = None,
                 input_files: tuple[str, ...] = ()):
        self.name = name
        self.input_files = set(input_files)  # already in the server's input folder (not uploaded by us)
        self.step_delay = step_delay
        self.steps = steps
        self.die_on_prompt = die_on_prompt
        self.uploads: dict[str, bytes] = {}
        self.prompts: list[dict] = []
        self.history: dict[str, dict] = {}
        self.files: dict[tuple[str, str], bytes] = {}
        self.sockets: dict[str, socket.socket] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> StandinComfy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.stopped.is_set():
            return
        self.stopped.set()
        with self.lock:
            socks = list(self.sockets.values())
            self.sockets.clear()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- fake execution -------------------------------------------------------------------------------

    def send(self, client_id: str, msg: dict) -> None:
        with self.lock:
            s = self.sockets.get(client_id)
        if s is None:
            return
        try:
            s.sendall(ws_frame(json.dumps(msg)))
        except OSError:
            pass

    def execute(self, prompt_id: str, prompt: dict, client_id: str, number: int) -> None:
        send = lambda kind, **data: self.send(client_id, {"type": kind, "data": {"prompt_id": prompt_id, **data}})  # noqa: E731
        send("execution_start", timestamp=0)
        loader = next((k for k, v in prompt.items() if v["class_type"] == "LoadImage"), None)
        image = self.uploads.get(prompt[loader]["inputs"]["image"], b"") if loader else b""
        for i in range(self.steps):
            if self.stopped.is_set():
                return
            send("executing", node="6")
            send("progress", value=i + 1, max=self.steps, node="6")
            if self.die_on_prompt is not None and number >= self.die_on_prompt and i == 0:
                self.stop()
                return
            time.sleep(self.step_delay)
        if b"FAIL" in image:
            send("execution_error", node_id="6", node_type="SyncHumanJointSampler",
                 exception_message="the stand-in failed on purpose\n", exception_type="RuntimeError")
            self.history[prompt_id] = {"prompt": [number, prompt_id, prompt, {}, []], "outputs": {},
                                       "status": {"status_str": "error", "completed": False, "messages": [
                                           ["execution_error", {"node_type": "SyncHumanJointSampler",
                                                                "exception_message": "the stand-in failed on purpose\n"}]]}}
            send("executing", node=None)
            return
        out_name = f"SyncHuman_{number:05d}_.glb"
        self.files[("3d", out_name)] = f"{self.name}:{hashlib.sha256(image).hexdigest()[:12]}:{prompt_id}".encode()
        self.files[("", "preview.png")] = b"temp preview"
        outputs = {"11": {"3d": [{"filename": out_name, "subfolder": "3d", "type": "output"}],
                          "images": [{"filename": "preview.png", "subfolder": "", "type": "temp"}]}}
        send("executed", node="11", output=outputs["11"])
        self.history[prompt_id] = {"prompt": [number, prompt_id, prompt, {}, ["11"]], "outputs": outputs,
                                   "status": {"status_str": "success", "completed": True, "messages": []}}
        send("execution_success", timestamp=1)
        send("executing", node=None)

    # --- HTTP -----------------------------------------------------------------------------------------

    def _handler(self):
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _json(self, code: int, obj) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                url = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/system_stats":
                    return self._json(200, {"system": {"comfyui_version": "stand-in"}, "devices": []})
                if url.path.startswith("/history/"):
                    pid = url.path.split("/", 2)[2]
                    return self._json(200, {pid: srv.history[pid]} if pid in srv.history else {})
                if url.path == "/view":
                    data = srv.files.get((q.get("subfolder", ""), q.get("filename", "")))
                    if data is None:
                        return self._json(404, {"error": "not found"})
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return None
                if url.path == "/ws":
                    return self._websocket(q.get("clientId") or uuid.uuid4().hex)
                return self._json(404, {"error": url.path})

            def _websocket(self, client_id: str) -> None:
                key = self.headers.get("Sec-WebSocket-Key", "")
                accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
                self.send_response(101, "Switching Protocols")
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.send_header("Sec-WebSocket-Accept", accept)
                self.end_headers()
                self.wfile.flush()
                with srv.lock:
                    srv.sockets[client_id] = self.connection
                srv.send(client_id, {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}},
                                                                "sid": client_id}})
                self.connection.settimeout(0.1)
                while not srv.stopped.is_set():  # bounded by stop(); reads only to answer the client's close
                    try:
                        data = self.connection.recv(1024)
                    except TimeoutError:
                        continue
                    except OSError:
                        break
                    if not data or data[0] & 0x0F == 0x8:  # closed, or a close frame: answer it (RFC 6455 5.5.1)
                        with srv.lock:
                            srv.sockets.pop(client_id, None)
                        try:
                            self.connection.sendall(b"\x88\x00")
                        except OSError:
                            pass
                        break
                self.close_connection = True

            def do_POST(self):
                url = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if url.path == "/upload/image":
                    m = re.search(rb'name="image"; filename="([^"]+)"\r\n[^\r\n]*\r\n\r\n', body)
                    boundary = self.headers["Content-Type"].split("boundary=")[1].encode()
                    if m is None:
                        return self._json(400, {"error": "no image"})
                    data = body[m.end():body.rindex(b"\r\n--" + boundary)]
                    name = m.group(1).decode()
                    srv.uploads[name] = data
                    return self._json(200, {"name": name, "subfolder": "", "type": "input"})
                if url.path == "/prompt":
                    req = json.loads(body)
                    prompt = req["prompt"]
                    loader = next((k for k, v in prompt.items() if v["class_type"] == "LoadImage"), None)
                    if loader and prompt[loader]["inputs"]["image"] not in {*srv.uploads, *srv.input_files}:
                        return self._json(400, {"error": {"type": "prompt_outputs_failed_validation"},
                                                "node_errors": {loader: {"errors": ["Invalid image file"]}}})
                    with srv.lock:
                        srv.prompts.append(req)
                        number = len(srv.prompts)
                    pid = uuid.uuid4().hex
                    threading.Thread(target=srv.execute, args=(pid, prompt, req["client_id"], number),
                                     daemon=True).start()
                    return self._json(200, {"prompt_id": pid, "number": number, "node_errors": {}})
                return self._json(404, {"error": url.path})

        return Handler
