"""One ComfyUI server seen through its HTTP + websocket API (a client; never imports ComfyUI).

Endpoints used (ComfyUI ``server.py``): ``POST /upload/image`` (multipart ``image``, ``type``, ``subfolder``,
``overwrite`` -> ``{"name", "subfolder", "type"}``), ``POST /prompt`` (``{"prompt", "client_id"}`` ->
``{"prompt_id", "number", "node_errors"}``; HTTP 400 with ``node_errors`` when invalid), ``GET /history/<id>``,
``GET /view?filename=&subfolder=&type=``, ``GET /system_stats`` (liveness) and the websocket
``/ws?clientId=<id>`` whose JSON messages (``executing``, ``progress``, ``executed``, ``execution_success``,
``execution_error``, ``execution_interrupted``, ``status``) carry the ``prompt_id``; binary frames are
previews and are ignored.

Two kinds of failure are kept apart, because a multi-server client treats them differently:
:class:`ServerUnavailable` (the server is gone or not answering: try the input on another server) and
:class:`WorkflowError` (the server ran the workflow and it failed, or refused it: the same thing would
happen elsewhere).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import SyncHumanError

__all__ = ["ComfyServer", "ServerUnavailable", "WorkflowError", "PromptEvents"]


class ServerUnavailable(SyncHumanError):
    """The server does not answer (refused, reset, closed websocket, time-out)."""


class WorkflowError(SyncHumanError):
    """The server refused the workflow or its execution failed (``node_errors``, ``execution_error``)."""


def _ws_module() -> Any:
    try:
        import websocket  # websocket-client
    except ImportError:
        return None
    return websocket


@dataclass
class PromptEvents:
    """What the websocket said about one prompt: the final status and the last progress seen."""

    status: str = "queued"  # queued | running | success | error | interrupted
    node: str | None = None
    progress: tuple[int, int] | None = None
    error: str | None = None


class ComfyServer:
    """HTTP calls and the websocket of one ComfyUI at ``url`` (``http://host:port``)."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        url = url.strip().rstrip("/")
        if "://" not in url:
            url = "http://" + url
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SyncHumanError(f"--server {url!r} is not an http(s)://host:port address")
        self.url = url
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex
        self._ws: Any = None

    def __repr__(self) -> str:
        return f"ComfyServer({self.url})"

    # --- HTTP -------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, body: bytes | None = None, headers: dict | None = None,
                 timeout: float | None = None) -> bytes:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as r:  # noqa: S310 - user's server
                return r.read()
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", errors="replace")
            if e.code >= 500 or e.code in (502, 503, 504):
                raise ServerUnavailable(f"{self.url} answered HTTP {e.code} to {method} {path}: {text[:300]}") from None
            raise WorkflowError(f"{self.url} refused {method} {path} (HTTP {e.code}): {text[:2000]}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ServerUnavailable(f"no ComfyUI answers at {self.url} ({reason})") from None

    def _json(self, method: str, path: str, payload: Any = None) -> Any:
        body = json.dumps(payload).encode() if payload is not None else None
        raw = self._request(method, path, body=body, headers={"Content-Type": "application/json"})
        try:
            return json.loads(raw) if raw else None
        except json.JSONDecodeError:
            raise ServerUnavailable(f"{self.url}{path} did not answer JSON (is this a ComfyUI server?)") from None

    def alive(self) -> bool:
        try:
            self._request("GET", "/system_stats", timeout=min(self.timeout, 5.0))
            return True
        except SyncHumanError:
            return False

    def upload_image(self, data: bytes, filename: str, *, subfolder: str = "", overwrite: bool = True) -> str:
        """Upload into the server's ``input`` folder; returns the name ``LoadImage`` takes (``sub/name``)."""
        boundary = uuid.uuid4().hex
        fields = [("type", "input"), ("overwrite", "true" if overwrite else "false")]
        if subfolder:
            fields.append(("subfolder", subfolder))
        chunks = []
        for k, v in fields:
            chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
        safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{safe}"\r\n'
                      "Content-Type: application/octet-stream\r\n\r\n".encode())
        chunks.append(data)
        chunks.append(f"\r\n--{boundary}--\r\n".encode())
        raw = self._request("POST", "/upload/image", body=b"".join(chunks),
                            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            info = json.loads(raw)
            name = info["name"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ServerUnavailable(f"{self.url}/upload/image gave an unexpected answer: {raw[:200]!r}") from None
        sub = info.get("subfolder") or ""
        return f"{sub}/{name}" if sub else name

    def queue(self, prompt: dict[str, Any]) -> str:
        """``POST /prompt`` -> prompt id; :class:`WorkflowError` when ComfyUI reports node errors."""
        resp = self._json("POST", "/prompt", {"prompt": prompt, "client_id": self.client_id})
        if not isinstance(resp, dict) or "prompt_id" not in resp:
            raise WorkflowError(f"{self.url} did not queue the workflow: {json.dumps(resp)[:2000]}")
        if resp.get("node_errors"):
            raise WorkflowError(f"ComfyUI at {self.url} reported node errors (part of the workflow was dropped): "
                                f"{json.dumps(resp['node_errors'])[:2000]}")
        return str(resp["prompt_id"])

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The ``/history`` entry of a finished prompt, or None while it is queued or running."""
        hist = self._json("GET", f"/history/{urllib.parse.quote(prompt_id)}") or {}
        return hist.get(prompt_id)

    def view(self, filename: str, subfolder: str = "", kind: str = "output") -> bytes:
        q = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": kind})
        return self._request("GET", f"/view?{q}", timeout=max(self.timeout, 120.0))

    # --- websocket ------------------------------------------------------------------------------------

    def connect(self) -> bool:
        """Open ``/ws?clientId=`` (before queueing, so no message is missed). False without websocket-client
        (then :meth:`wait` polls ``/history``)."""
        ws_mod = _ws_module()
        if ws_mod is None:
            return False
        if self._ws is not None:
            return True
        scheme = "wss" if self.url.startswith("https") else "ws"
        host = urllib.parse.urlsplit(self.url).netloc
        try:
            self._ws = ws_mod.create_connection(f"{scheme}://{host}/ws?clientId={self.client_id}",
                                                timeout=self.timeout)
        except (OSError, ws_mod.WebSocketException) as e:
            self._ws = None
            raise ServerUnavailable(f"cannot open the websocket of {self.url} ({e})") from None
        return True

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:  # noqa: BLE001 - closing a dead socket
                pass
            self._ws = None

    def _messages(self, idle: float) -> Iterator[dict[str, Any] | None]:
        """JSON messages of the websocket; None after ``idle`` seconds without one."""
        ws_mod = _ws_module()
        self._ws.settimeout(idle)
        while True:
            try:
                frame = self._ws.recv()
            except ws_mod.WebSocketTimeoutException:
                yield None
                continue
            except (OSError, ws_mod.WebSocketException) as e:
                self.close()
                raise ServerUnavailable(f"the websocket of {self.url} closed ({e or type(e).__name__})") from None
            if isinstance(frame, bytes) or not frame:
                continue  # binary preview frames
            try:
                msg = json.loads(frame)
            except json.JSONDecodeError:
                continue
            if isinstance(msg, dict):
                yield msg

    def wait(self, prompt_id: str, *, timeout: float, on_event: Callable[[PromptEvents], None] | None = None,
             idle: float = 10.0) -> dict[str, Any]:
        """Follow the prompt until it ends; returns its ``/history`` entry.

        Over the websocket when connected (progress reported through ``on_event``), polling ``/history``
        otherwise. Every ``idle`` seconds without news the server is checked (``/history``, which also
        catches a finish whose message was missed); a server that stops answering raises
        :class:`ServerUnavailable`, an execution error :class:`WorkflowError`, and ``timeout`` a
        :class:`ServerUnavailable` (the server may be stuck; try another).
        """
        deadline = time.monotonic() + timeout
        ev = PromptEvents()
        if self._ws is None:
            while time.monotonic() < deadline:
                entry = self.history(prompt_id)
                if entry is not None:
                    return self._finished(prompt_id, entry)
                time.sleep(min(1.0, idle))
            raise ServerUnavailable(f"{self.url} did not finish prompt {prompt_id} within {timeout:g} s")
        for msg in self._messages(idle):
            if time.monotonic() > deadline:
                raise ServerUnavailable(f"{self.url} did not finish prompt {prompt_id} within {timeout:g} s")
            if msg is None:
                entry = self.history(prompt_id)  # raises ServerUnavailable when the server is gone
                if entry is not None:
                    return self._finished(prompt_id, entry)
                continue
            kind, data = msg.get("type"), msg.get("data") or {}
            if not isinstance(data, dict) or data.get("prompt_id") != prompt_id:
                continue
            if kind == "execution_start":
                ev.status = "running"
            elif kind == "executing":
                if data.get("node") is None:
                    break  # the prompt is done (success or not: /history says)
                ev.status, ev.node = "running", str(data.get("node"))
            elif kind == "progress":
                ev.status, ev.node = "running", str(data.get("node"))
                ev.progress = (int(data.get("value", 0)), int(data.get("max", 0)))
            elif kind == "execution_success":
                break
            elif kind == "execution_error":
                ev.status, ev.error = "error", _error_text(data)
                break
            elif kind == "execution_interrupted":
                ev.status = "interrupted"
                break
            else:
                continue
            if on_event is not None:
                on_event(ev)
        if ev.status == "error":
            raise WorkflowError(f"the workflow failed on {self.url}: {ev.error}")
        if ev.status == "interrupted":
            raise WorkflowError(f"the workflow was interrupted on {self.url}")
        for _ in range(50):  # the history entry is written right after the last message
            entry = self.history(prompt_id)
            if entry is not None:
                return self._finished(prompt_id, entry)
            time.sleep(0.1)
        raise ServerUnavailable(f"{self.url} finished prompt {prompt_id} but has no history of it")

    def _finished(self, prompt_id: str, entry: dict[str, Any]) -> dict[str, Any]:
        status = entry.get("status") or {}
        if status.get("status_str") not in (None, "success"):
            msgs = [m[1] for m in status.get("messages", []) if isinstance(m, list) and len(m) == 2
                    and m[0] == "execution_error" and isinstance(m[1], dict)]
            detail = _error_text(msgs[-1]) if msgs else str(status.get("status_str"))
            raise WorkflowError(f"the workflow failed on {self.url}: {detail}")
        return entry


def _error_text(data: dict[str, Any]) -> str:
    node = data.get("node_type") or data.get("node_id") or "?"
    return f"{node}: {str(data.get('exception_message', '')).strip() or data.get('exception_type', 'error')}"
