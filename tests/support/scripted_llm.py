"""A scripted OpenAI-compatible chat-completions server on loopback, for tests (DESIGN §11).

It replays a script of responses over real HTTP, so the real ``openai`` client is exercised
end to end: request encoding, response decoding, status-code error mapping. Each
``POST /v1/chat/completions`` takes the next script item:

* a ``str`` -> a completion whose ``choices[0].message.content`` is that text, verbatim
  (malformed JSON included);
* a ``ScriptedCompletion`` -> the same, with finish reason, usage or refusal set;
* a ``ScriptedError`` -> an HTTP error with an OpenAI-shaped ``{"error": {...}}`` body.

An exhausted script answers 500. Usage tokens default to ``ceil(chars / 4)`` of the request
messages and of the content.

Usage::

    with ScriptedLLM() as llm:
        llm.script(['{"steps": []}', ScriptedError(500)])
        client = AsyncOpenAI(base_url=llm.base_url, api_key="test-key", max_retries=0)
        ...
        assert llm.requests[0]["temperature"] == 0
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .threaded_server import ThreadedServer


@dataclass(frozen=True)
class ScriptedCompletion:
    """A scripted chat completion."""

    content: str | None
    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    refusal: str | None = None


@dataclass(frozen=True)
class ScriptedError:
    """A scripted HTTP error, e.g. 500 or 401."""

    status: int
    message: str = "scripted failure"
    type: str = "server_error"


ScriptItem = str | ScriptedCompletion | ScriptedError


def _estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


class ScriptedLLM:
    """An OpenAI-compatible server on ``127.0.0.1`` (a free port) in a background thread."""

    def __init__(self, model: str = "scripted-model") -> None:
        self.model = model
        self.requests: list[dict[str, Any]] = []
        """JSON bodies received, in order."""
        self.headers: list[dict[str, str]] = []
        """Request headers received (lower-cased names), in order."""
        self._script: deque[ScriptItem] = deque()
        self._lock = threading.Lock()
        self._server: ThreadedServer | None = None
        self._port = 0

    @property
    def base_url(self) -> str:
        """Base URL for ``AsyncOpenAI(base_url=...)``, ending in ``/v1``."""
        return f"http://127.0.0.1:{self._port}/v1"

    def script(self, items: list[ScriptItem]) -> None:
        """Replace the script with ``items`` and forget earlier requests."""
        with self._lock:
            self._script = deque(items)
            self.requests.clear()
            self.headers.clear()

    def _next(self) -> ScriptItem | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    async def _completions(self, request: Request) -> JSONResponse:
        body = await request.json()
        with self._lock:
            self.requests.append(body)
            self.headers.append({k.lower(): v for k, v in request.headers.items()})
        item = self._next()
        if item is None:
            item = ScriptedError(500, "script exhausted")
        if isinstance(item, ScriptedError):
            error = {"message": item.message, "type": item.type, "param": None, "code": None}
            return JSONResponse({"error": error}, status_code=item.status)
        if isinstance(item, str):
            item = ScriptedCompletion(content=item)
        prompt_tokens = item.prompt_tokens
        if prompt_tokens is None:
            prompt_tokens = _estimate_tokens(json.dumps(body.get("messages", [])))
        completion_tokens = item.completion_tokens
        if completion_tokens is None:
            completion_tokens = _estimate_tokens(item.content or "")
        message = {"role": "assistant", "content": item.content, "refusal": item.refusal}
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", self.model),
                "system_fingerprint": "fp_scripted",
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": item.finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    def start(self) -> ScriptedLLM:
        """Start serving; returns once the server accepts connections (at most 10 s)."""
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._completions, methods=["POST"]),
                Route("/chat/completions", self._completions, methods=["POST"]),
            ]
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        self._server = ThreadedServer(app, sock, "scripted-llm")
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving and join the thread (at most 10 s)."""
        if self._server is not None:
            self._server.stop()
        self._server = None

    def __enter__(self) -> ScriptedLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
