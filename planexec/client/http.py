"""A small typed HTTP client of the planner and executor APIs, for people's command lines.

Configuration comes from the environment (``PLANEXEC_PLANNER_URL``, ``PLANEXEC_EXECUTOR_URL``,
``PLANEXEC_API_KEY``), never from the services' settings classes: the caller is a person or a
script, not a service. Errors the APIs return are RFC 9457 ``application/problem+json`` bodies
and surface as :class:`ApiProblemError`; a server that cannot be reached surfaces as
:class:`ApiUnreachableError` naming the URL.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import httpx2

from .models import ApprovalRecorded, PlanVersion, RunDetail, RunEvent, RunPage, RunSummary

DEFAULT_PLANNER_URL = "http://127.0.0.1:8100"
DEFAULT_EXECUTOR_URL = "http://127.0.0.1:8200"
STREAM_READ_TIMEOUT_S = 45.0
"""Longest silence on an event stream before it is taken as dropped, in seconds (the executor
sends a keep-alive comment every 15 s)."""


@dataclass(frozen=True)
class ClientConfig:
    """Where the services are and who is calling."""

    planner_url: str = DEFAULT_PLANNER_URL
    """Base URL of the planner API, without a trailing slash."""
    executor_url: str = DEFAULT_EXECUTOR_URL
    """Base URL of the executor API, without a trailing slash."""
    api_key: str | None = field(default=None, repr=False)
    """The caller's API key, sent as ``X-API-Key``; kept out of ``repr`` so it is never printed."""

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        planner_url: str | None = None,
        executor_url: str | None = None,
    ) -> ClientConfig:
        """Read ``PLANEXEC_PLANNER_URL``, ``PLANEXEC_EXECUTOR_URL`` and ``PLANEXEC_API_KEY``.

        Args:
            environ: The environment to read; default ``os.environ``.
            planner_url: Overrides ``PLANEXEC_PLANNER_URL`` (a command-line flag).
            executor_url: Overrides ``PLANEXEC_EXECUTOR_URL`` (a command-line flag).
        """
        env = os.environ if environ is None else environ
        return cls(
            planner_url=(
                planner_url or env.get("PLANEXEC_PLANNER_URL") or DEFAULT_PLANNER_URL
            ).rstrip("/"),
            executor_url=(
                executor_url or env.get("PLANEXEC_EXECUTOR_URL") or DEFAULT_EXECUTOR_URL
            ).rstrip("/"),
            api_key=env.get("PLANEXEC_API_KEY") or None,
        )


class ApiProblemError(Exception):
    """An API answered with an error: an RFC 9457 problem, or a body that stands for one."""

    def __init__(self, status: int, title: str, detail: str, body: Mapping[str, Any]) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.code: str | None = body.get("code")
        self.errors: list[Any] = list(body.get("errors") or [])
        self.body = dict(body)
        super().__init__(f"{title}: {detail}")

    @classmethod
    def from_response(cls, response: httpx2.Response) -> ApiProblemError:
        """Read a problem+json body; any other error body becomes a problem with its text."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            text = response.text.strip()[:300] or "(empty body)"
            return cls(response.status_code, response.reason_phrase or "HTTP error", text, {})
        title = str(body.get("title") or response.reason_phrase or "HTTP error")
        detail = str(body.get("detail") or "")
        return cls(int(body.get("status") or response.status_code), title, detail, body)


class ApiUnreachableError(Exception):
    """A service could not be reached (connection refused, DNS, timeout, dropped stream)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach {url}: {reason}")


def _segment(value: str) -> str:
    """One URL path segment (a run or step id typed by a person may hold anything)."""
    return quote(value, safe="")


class PlanexecClient:
    """Synchronous client of both APIs; use as a context manager or call :meth:`close`.

    Every method raises :class:`ApiProblemError` for an error answer and
    :class:`ApiUnreachableError` when the service cannot be reached.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        timeout_s: float = 30.0,
        transport: httpx2.BaseTransport | None = None,
    ) -> None:
        self.config = config
        headers = {"X-API-Key": config.api_key} if config.api_key else {}
        self._http = httpx2.Client(
            headers=headers, timeout=timeout_s, transport=transport, follow_redirects=False
        )

    def __enter__(self) -> PlanexecClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _call(
        self,
        method: Literal["GET", "POST"],
        url: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        patience_s: float = 0.0,
    ) -> Any:
        deadline = time.monotonic() + patience_s
        delay = 0.2
        while True:
            try:
                response = self._http.request(method, url, json=json, params=params)
                break
            except httpx2.TransportError as exc:
                if time.monotonic() + delay > deadline:
                    raise ApiUnreachableError(url, str(exc) or type(exc).__name__) from exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        if response.is_error:
            raise ApiProblemError.from_response(response)
        return response.json()

    def create_plan(
        self,
        intent: str,
        *,
        context: Mapping[str, Any] | None = None,
        backend: str | None = None,
        draft: Mapping[str, Any] | None = None,
        execute: bool = False,
    ) -> PlanVersion:
        """``POST {planner}/v1/plans``; a rejected plan is a normal answer, not an error.

        Args:
            intent: What to do, in words.
            context: Facts the plan may use (a JSON object).
            backend: ``template``, ``openai`` or ``draft``; None = the planner's choice.
            draft: Caller-written plan body (``{"steps": [...]}``) for the ``draft`` backend.
            execute: Queue the plan for execution once it is ``ready``.
        """
        body: dict[str, Any] = {
            "intent": intent,
            "context": dict(context or {}),
            "options": {"execute": execute},
        }
        if backend is not None:
            body["backend"] = backend
        if draft is not None:
            body["draft"] = dict(draft)
        raw = self._call("POST", f"{self.config.planner_url}/v1/plans", json=body)
        return PlanVersion.model_validate(raw)

    def list_runs(
        self, *, status: str | None = None, plan_id: str | None = None, limit: int = 50
    ) -> RunPage:
        """``GET {executor}/v1/runs``: the tenant's runs, newest first (``limit`` 1..200)."""
        params: dict[str, str | int] = {"limit": limit}
        if status is not None:
            params["status"] = status
        if plan_id is not None:
            params["plan_id"] = plan_id
        raw = self._call("GET", f"{self.config.executor_url}/v1/runs", params=params)
        return RunPage.model_validate(raw)

    def get_run(self, run_id: str, *, patience_s: float = 0.0) -> RunDetail:
        """``GET {executor}/v1/runs/{run_id}``.

        Args:
            run_id: The run.
            patience_s: How long to keep retrying when the executor cannot be reached, in
                seconds (a watch rides out an executor restart; a first look fails fast).
        """
        url = f"{self.config.executor_url}/v1/runs/{_segment(run_id)}"
        raw = self._call("GET", url, patience_s=patience_s)
        return RunDetail.model_validate(raw)

    def wait_for_run_of(self, plan_id: str, *, timeout_s: float = 60.0) -> RunSummary:
        """Poll ``GET {executor}/v1/runs?plan_id=`` until the plan's run exists.

        Raises:
            TimeoutError: no run within ``timeout_s`` seconds (no worker claimed the plan).
        """
        deadline = time.monotonic() + timeout_s
        delay = 0.1
        while True:
            page = self.list_runs(plan_id=plan_id, limit=1)
            if page.items:
                return page.items[0]
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no run of plan {plan_id} after {timeout_s:g} s: is a worker running?"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def decide_approval(
        self, run_id: str, step_id: str, *, approve: bool, comment: str | None = None
    ) -> ApprovalRecorded:
        """``POST {executor}/v1/runs/{run}/steps/{step}/approval`` with ``{decision, comment}``.

        A step that is not waiting at its gate answers 409 (:class:`ApiProblemError`).
        """
        url = (
            f"{self.config.executor_url}/v1/runs/{_segment(run_id)}"
            f"/steps/{_segment(step_id)}/approval"
        )
        body = {"decision": "approve" if approve else "reject", "comment": comment}
        return ApprovalRecorded.model_validate(self._call("POST", url, json=body))

    def events(
        self,
        run_id: str,
        *,
        after: int = 0,
        follow: bool = True,
        max_reconnects: int = 8,
        reached: bool = False,
    ) -> Generator[RunEvent]:
        """Read ``GET {executor}/v1/runs/{run_id}/events`` (Server-Sent Events).

        Yields every event after seq ``after`` exactly once, in order. A dropped or silent
        stream is reopened with ``Last-Event-ID`` set to the last seq seen (the resumption rule
        of Server-Sent Events, WHATWG HTML §9.2). With ``follow`` the server keeps the stream
        open until the run ends; the iterator ends when a stream closes cleanly and reopening
        it brings nothing new. Without ``follow`` it ends once the history so far is read.

        ``reached`` says the caller has already talked to the executor about this run (a
        watch that read the history first): then a failed first connection is retried like a
        dropped stream, since the executor may have gone down in between.

        Raises:
            ApiProblemError: the server refused the stream (e.g. 404 for an unknown run).
            ApiUnreachableError: the first connection failed (unless ``reached``), or
                ``max_reconnects`` reconnects in a row brought nothing.
        """
        url = f"{self.config.executor_url}/v1/runs/{_segment(run_id)}/events"
        params = {"follow": "true" if follow else "false"}
        timeout = httpx2.Timeout(10.0, read=STREAM_READ_TIMEOUT_S)
        last = after
        failures = 0
        connected = reached
        while True:
            progressed = False
            headers = {"Last-Event-ID": str(last)} if last else {}
            try:
                with self._http.sse(url, params=params, headers=headers, timeout=timeout) as source:
                    if source.response.is_error:
                        source.response.read()
                        raise ApiProblemError.from_response(source.response)
                    connected = True
                    for message in source:
                        if not message.data:
                            continue
                        event = RunEvent.model_validate_json(message.data)
                        if event.seq <= last:
                            continue
                        last, progressed = event.seq, True
                        yield event
            except httpx2.TransportError as exc:
                reason = str(exc) or type(exc).__name__
                if not connected:
                    raise ApiUnreachableError(url, reason) from exc
                failures = 0 if progressed else failures + 1
                if failures > max_reconnects:
                    raise ApiUnreachableError(url, reason) from exc
                time.sleep(min(0.2 * 2**failures, 5.0))
                continue
            if not follow or not progressed:
                return  # closed cleanly with nothing new: the run is over
            failures = 0  # closed cleanly after news: reopen once to see whether more follows
