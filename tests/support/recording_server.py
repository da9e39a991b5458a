"""The recording tool server: counts effects at the receiving end (RELIABILITY §1, §2).

An HTTP sink that dedups by ``Idempotency-Key`` (draft-ietf-httpapi-idempotency-key-header),
so durability tests count *effects*, not rows in planexec's own tables. Routes:

* ``POST /effects/{name}``: a keyed request whose key was seen returns the STORED response
  with ``Idempotent-Replayed: true`` (no new effect); a seen key with a different name or body
  is refused with 422 (no effect); otherwise one effect is made and the response
  ``{"effect": n, "name": name, "key": key|null, "body": body}`` is stored. No key: always a
  new effect.
* ``POST /unsafe/{name}``: the same response, but every request is a new effect (the endpoint
  declared not idempotent).
* ``POST /fail/{name}?times=N&status=503&retry_after=1``: the next N requests to ``name``
  (either endpoint) answer ``status`` (with ``Retry-After`` when given) before any effect.
* ``POST /slow/{name}?seconds=S``: requests to ``name`` sleep S seconds first (0 clears).
* ``GET /stats``: ``{"requests", "effects", "by_key": {key: requests}, "effects_by_name",
  "replayed", "failed"}``; ``GET /log``: every request in order; ``POST /reset``;
  ``GET /noop``: ``{"ok": true}``, nothing recorded (latency benchmarks).

In process: ``with RecordingServer() as sink: ... sink.stats()``. As a process (for tests that
kill executors or the sink): ``python -m tests.support.recording_server --port N --state FILE``
prints ``READY port=<port>`` once listening; ``--state`` keeps the state in a JSON file, written
atomically on every change and loaded at start, so dedup survives a restart of the sink.
``RecordingServerProcess`` wraps that.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .threaded_server import ThreadedServer

_NAME = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}
_EFFECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "effect": {"type": "integer", "description": "Sequence number of the effect."},
        "name": {"type": "string"},
        "key": {"type": "string", "nullable": True},
        "body": {},
    },
    "required": ["effect", "name", "key", "body"],
}


def _effect_operation(operation_id: str, summary: str, idempotent: bool) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": summary,
        "x-planexec-side-effect": "write",
        "x-planexec-idempotent": idempotent,
        "parameters": [{"name": "name", "in": "path", "required": True, "schema": _NAME}],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        "responses": {
            "200": {
                "description": "The effect made, or the stored one for a repeated key.",
                "content": {"application/json": {"schema": _EFFECT_SCHEMA}},
            },
            "422": {"description": "The key was used before with a different name or body."},
        },
    }


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "planexec recording tool server", "version": "1"},
    "paths": {
        "/effects/{name}": {
            "post": _effect_operation(
                "effect", "Make one effect per Idempotency-Key and record it.", True
            )
        },
        "/unsafe/{name}": {
            "post": _effect_operation(
                "effect_unsafe", "Make a new effect on every request, key or not.", False
            )
        },
        "/noop": {
            "get": {
                "operationId": "ping",
                "summary": "Answer at once; nothing is recorded.",
                "x-planexec-idempotent": True,
                "responses": {
                    "200": {
                        "description": "Always ok.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"ok": {"type": "boolean"}},
                                    "required": ["ok"],
                                }
                            }
                        },
                    }
                },
            }
        },
    },
}
"""OpenAPI 3.0 document of the effect endpoints, for the executor's OpenAPI import: operations
``effect`` (write, idempotent), ``effect_unsafe`` (write, not idempotent) and ``ping``."""


def openapi_document(base_url: str) -> dict[str, Any]:
    """``OPENAPI`` with ``servers`` set to ``base_url`` (e.g. ``sink.base_url``)."""
    return {**OPENAPI, "servers": [{"url": base_url}]}


def _fresh_state() -> dict[str, Any]:
    return {
        "requests": 0,
        "effects": 0,
        "replayed": 0,
        "failed": 0,
        "by_key": {},
        "effects_by_name": {},
        "stored": {},  # key -> {"fingerprint": str, "response": {...}}
        "log": [],  # one entry per request: seq, time, endpoint, name, key, outcome
        "fail": {},  # name -> {"times": int, "status": int, "retry_after": str | None}
        "slow": {},  # name -> seconds ("*": every name without its own)
        "in_flight": {},  # endpoint ("/effects", "/unsafe") -> requests being handled now
        "max_in_flight": {},  # endpoint -> most requests handled at once
    }


class _Sink:
    """The server's state and routes; the state is touched only from the event loop."""

    def __init__(self, state_path: Path | None) -> None:
        self.state_path = state_path
        self.state = _fresh_state()
        if state_path is not None and state_path.exists():
            self.state = json.loads(state_path.read_text(encoding="utf-8"))

    def _save(self) -> None:
        if self.state_path is None:
            return
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(self.state), encoding="utf-8")
        os.replace(tmp, self.state_path)  # atomic: a reader sees the old or the new file

    async def effect(self, request: Request) -> JSONResponse:
        return await self._handle(request, idempotent=True)

    async def unsafe(self, request: Request) -> JSONResponse:
        return await self._handle(request, idempotent=False)

    async def _handle(self, request: Request, *, idempotent: bool) -> JSONResponse:
        # Requests in flight per endpoint, from arrival to response (a client that died
        # mid-request still counts until its handler ends): for concurrency caps (R15).
        endpoint = "/effects" if idempotent else "/unsafe"
        in_flight = self.state.setdefault("in_flight", {})
        peak = self.state.setdefault("max_in_flight", {})
        in_flight[endpoint] = in_flight.get(endpoint, 0) + 1
        peak[endpoint] = max(peak.get(endpoint, 0), in_flight[endpoint])
        try:
            response = await self._effect(request, idempotent=idempotent)
        finally:
            in_flight[endpoint] -= 1
        return response

    async def _effect(self, request: Request, *, idempotent: bool) -> JSONResponse:
        name = request.path_params["name"]
        key = request.headers.get("idempotency-key")
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        delay = self.state["slow"].get(name, self.state["slow"].get("*", 0))
        if delay > 0:
            await asyncio.sleep(delay)
        # From here to the end nothing awaits: check-and-record is atomic on the event loop.
        st = self.state
        st["requests"] += 1
        if key is not None:
            st["by_key"][key] = st["by_key"].get(key, 0) + 1
        entry = {"seq": st["requests"], "time": time.time(), "endpoint": request.url.path}
        entry |= {"name": name, "key": key}
        st["log"].append(entry)
        failure = st["fail"].get(name)
        if failure is not None and failure["times"] > 0:
            failure["times"] -= 1
            st["failed"] += 1
            entry["outcome"] = "failed"
            self._save()
            headers = {}
            if failure["retry_after"] is not None:
                headers["Retry-After"] = failure["retry_after"]
            error = {"error": "injected failure", "status": failure["status"]}
            return JSONResponse(error, status_code=failure["status"], headers=headers)
        fingerprint = json.dumps([name, body], sort_keys=True)
        stored = st["stored"].get(key) if idempotent and key is not None else None
        if stored is not None:
            if stored["fingerprint"] != fingerprint:
                entry["outcome"] = "conflict"
                self._save()
                detail = "Idempotency-Key reused with a different request"
                return JSONResponse({"error": detail}, status_code=422)
            st["replayed"] += 1
            entry["outcome"] = "replayed"
            self._save()
            return JSONResponse(stored["response"], headers={"Idempotent-Replayed": "true"})
        st["effects"] += 1
        st["effects_by_name"][name] = st["effects_by_name"].get(name, 0) + 1
        response = {"effect": st["effects"], "name": name, "key": key, "body": body}
        if idempotent and key is not None:
            st["stored"][key] = {"fingerprint": fingerprint, "response": response}
        entry["outcome"] = "effect"
        self._save()
        return JSONResponse(response)

    async def fail(self, request: Request) -> JSONResponse:
        q = request.query_params
        self.state["fail"][request.path_params["name"]] = {
            "times": int(q.get("times", "1")),
            "status": int(q.get("status", "503")),
            "retry_after": q.get("retry_after"),
        }
        self._save()
        return JSONResponse({"ok": True})

    async def slow(self, request: Request) -> JSONResponse:
        self.state["slow"][request.path_params["name"]] = float(
            request.query_params.get("seconds", "0")
        )
        self._save()
        return JSONResponse({"ok": True})

    async def stats(self, request: Request) -> JSONResponse:
        keys: tuple[str, ...] = ("requests", "effects", "by_key", "effects_by_name")
        keys += ("replayed", "failed", "in_flight", "max_in_flight")
        return JSONResponse({k: self.state.get(k, {}) for k in keys})

    async def log(self, request: Request) -> JSONResponse:
        return JSONResponse(self.state["log"])

    async def reset(self, request: Request) -> JSONResponse:
        self.state = _fresh_state()
        self._save()
        return JSONResponse({"ok": True})

    async def noop(self, request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/effects/{name}", self.effect, methods=["POST"]),
                Route("/unsafe/{name}", self.unsafe, methods=["POST"]),
                Route("/fail/{name}", self.fail, methods=["POST"]),
                Route("/slow/{name}", self.slow, methods=["POST"]),
                Route("/stats", self.stats, methods=["GET"]),
                Route("/log", self.log, methods=["GET"]),
                Route("/reset", self.reset, methods=["POST"]),
                Route("/noop", self.noop, methods=["GET"]),
            ]
        )


def _listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart on the same port
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)  # from here connections queue, so the port can be announced
    return sock


def _server(sink: _Sink) -> uvicorn.Server:
    config = uvicorn.Config(sink.app(), log_level="warning", lifespan="off", access_log=False)
    return uvicorn.Server(config)


class _Controls:
    """Client side of the control routes, shared by the thread and the process forms."""

    port: int

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``; effects are at ``base_url + "/effects/<name>"``."""
        return f"http://127.0.0.1:{self.port}"

    def _post(self, path: str, **params: Any) -> None:
        query = {k: v for k, v in params.items() if v is not None}
        httpx2.post(f"{self.base_url}{path}", params=query, timeout=10).raise_for_status()

    def stats(self) -> dict[str, Any]:
        """``GET /stats``: requests, effects, by_key, effects_by_name, replayed, failed,
        in_flight and max_in_flight (per endpoint, ``/effects`` and ``/unsafe``)."""
        response = httpx2.get(f"{self.base_url}/stats", timeout=10).raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def log(self) -> list[dict[str, Any]]:
        """``GET /log``: every recorded request, in order."""
        result: list[dict[str, Any]] = httpx2.get(f"{self.base_url}/log", timeout=10).json()
        return result

    def reset(self) -> None:
        """``POST /reset``: forget requests, effects, stored responses and controls."""
        self._post("/reset")

    def fail(
        self, name: str, times: int, status: int = 503, retry_after: int | None = None
    ) -> None:
        """Make the next ``times`` requests to ``name`` answer ``status`` (no effect).

        ``retry_after`` (whole seconds, RFC 9110 §10.2.3) is sent as ``Retry-After``.
        """
        self._post(f"/fail/{name}", times=times, status=status, retry_after=retry_after)

    def slow(self, name: str, seconds: float) -> None:
        """Make requests to ``name`` sleep ``seconds`` before anything else (0 clears).

        ``name="*"`` sets the delay of every name that has none of its own.
        """
        self._post(f"/slow/{name}", seconds=seconds)


class RecordingServer(_Controls):
    """The recording server on ``127.0.0.1`` in a background thread of this process."""

    def __init__(self, port: int = 0, state_path: Path | None = None) -> None:
        self.port = port
        self._sink = _Sink(state_path)
        self._server: ThreadedServer | None = None

    def start(self) -> RecordingServer:
        """Start serving; returns once the server accepts connections (at most 10 s)."""
        sock = _listen(self.port)
        self.port = sock.getsockname()[1]
        self._server = ThreadedServer(self._sink.app(), sock, "recording-server")
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving and join the thread (at most 10 s)."""
        if self._server is not None:
            self._server.stop()
        self._server = None

    def __enter__(self) -> RecordingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RecordingServerProcess(_Controls):
    """The recording server as a child process (``python -m tests.support.recording_server``).

    Args:
        state_path: the JSON state file (kept across restarts).
        port: port to listen on; 0 picks a free one at the first start and keeps it after.
    """

    def __init__(self, state_path: Path, port: int = 0) -> None:
        self.state_path = state_path
        self.port = port
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> RecordingServerProcess:
        """Start the process and wait for its ``READY`` line (at most 20 s)."""
        root = Path(__file__).resolve().parents[2]
        command = [sys.executable, "-m", "tests.support.recording_server"]
        command += ["--port", str(self.port), "--state", str(self.state_path)]
        proc = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True)
        self.process = proc
        stdout = proc.stdout
        assert stdout is not None
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=20)
        if not ready or not ready[0].startswith("READY port="):
            self.kill()
            raise RuntimeError(f"recording server process did not start: {ready}")
        self.port = int(ready[0].strip().split("=", 1)[1])
        return self

    def kill(self) -> None:
        """SIGKILL the process and reap it (no chance to write anything more)."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM the process and wait for it (at most 10 s, then SIGKILL)."""
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
        self.process = None

    def __enter__(self) -> RecordingServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM/SIGINT: ``--port N`` (0 = any free port), ``--state FILE``."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.recording_server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state", type=Path, default=None)
    args = parser.parse_args(argv)
    sock = _listen(args.port)
    server = _server(_Sink(args.state))
    print(f"READY port={sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
