"""R7: retries, backoff and timeouts against real servers on loopback (httpbin, the sink).

Exact attempt counts; backoff (jitter off) within ±20 % of the policy; a timeout fires
within +1 s; a 4xx other than 408/429 is not retried; ``Retry-After`` is a lower bound.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import pytest

from executor_service.tools.http_request import HttpRequestTool
from executor_service.tools.netguard import NetPolicy
from planexec.demo.httpbin_server import HttpbinServer

from ..support.recording_server import RecordingServer
from .engine_env import EngineEnv, engine_env


@pytest.fixture(scope="module")
def httpbin() -> Iterator[HttpbinServer]:
    with HttpbinServer() as server:
        yield server


@pytest.fixture(scope="module")
def sink() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.fixture
async def env(
    db_url: str, httpbin: HttpbinServer, sink: RecordingServer
) -> AsyncIterator[EngineEnv]:
    sink.reset()
    policy = NetPolicy(
        allowed_ports=frozenset({_port(httpbin.base_url), _port(sink.base_url)}),
        allowed_networks=frozenset({"127.0.0.1/32"}),
    )
    async with engine_env(db_url, [HttpRequestTool(policy)]) as environment:
        yield environment


def get(url: str, **extra: Any) -> dict[str, Any]:
    return {"id": "call", "tool": "http.request", "args": {"method": "GET", "url": url}, **extra}


def post(url: str, **extra: Any) -> dict[str, Any]:
    args = {"method": "POST", "url": url, "json": {}}
    return {"id": "call", "tool": "http.request", "args": args, **extra}


def _started(attempt: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(attempt["started_at"])).timestamp()


async def test_two_500s_then_200_takes_exactly_three_attempts_with_policy_backoff(
    env: EngineEnv, sink: RecordingServer
) -> None:
    sink.fail("flaky", times=2, status=500)
    retry = {"max_attempts": 5, "initial_backoff_s": 0.4, "multiplier": 2, "jitter": "none"}
    run_id = await env.start([post(f"{sink.base_url}/effects/flaky", retry=retry)])
    run = await env.wait_status(run_id, {"succeeded", "failed"})
    assert run["status"] == "succeeded"
    attempts = run["attempts"]
    assert [a["status"] for a in attempts] == ["failed", "failed", "succeeded"]
    assert sink.stats()["requests"] == 3
    assert sink.stats()["effects"] == 1
    for n, expected in ((1, 0.4), (2, 0.8)):  # waits after the 1st and 2nd failures
        waited = _started(attempts[n]) - (
            _started(attempts[n - 1]) + float(attempts[n - 1]["duration_s"])
        )
        assert expected * 0.8 <= waited <= expected * 1.2 + 0.1, (n, waited)


async def test_429_with_retry_after_waits_at_least_that_long(
    env: EngineEnv, sink: RecordingServer
) -> None:
    sink.fail("limited", times=1, status=429, retry_after=1)
    retry = {"max_attempts": 3, "initial_backoff_s": 0.01, "jitter": "none"}
    run_id = await env.start([post(f"{sink.base_url}/effects/limited", retry=retry)])
    run = await env.wait_status(run_id, {"succeeded", "failed"})
    assert run["status"] == "succeeded"
    first, second = run["attempts"]
    assert first["error"]["code"] == "http_retryable"
    assert "429" in first["error"]["message"]
    assert first["error"]["retry_after_s"] == 1
    assert _started(second) - _started(first) >= 1.0


async def test_a_slow_answer_times_out_within_a_second_of_the_limit(
    env: EngineEnv, httpbin: HttpbinServer
) -> None:
    retry = {"max_attempts": 2, "initial_backoff_s": 0.05, "jitter": "none"}
    began = time.monotonic()
    run_id = await env.start([get(f"{httpbin.base_url}/delay/10", timeout_s=2, retry=retry)])
    run = await env.wait_status(run_id, {"succeeded", "failed"}, timeout_s=30)
    elapsed = time.monotonic() - began
    assert run["status"] == "failed"
    assert [a["error"]["code"] for a in run["attempts"]] == ["timeout", "timeout"]
    for attempt in run["attempts"]:
        assert 2.0 <= float(attempt["duration_s"]) <= 3.0
    assert elapsed < 10  # neither attempt waited for httpbin's 10 s


async def test_a_400_from_httpbin_is_not_retried(env: EngineEnv, httpbin: HttpbinServer) -> None:
    retry = {"max_attempts": 5, "initial_backoff_s": 0.05}
    run_id = await env.start([get(f"{httpbin.base_url}/status/400", retry=retry)])
    run = await env.wait_status(run_id, {"succeeded", "failed"})
    assert run["status"] == "failed"
    assert len(run["attempts"]) == 1
    assert run["attempts"][0]["error"] == {
        "code": "http_4xx",
        "message": f"HTTP 400 from {httpbin.base_url}/status/400",
        "retryable": False,
    }


async def test_a_408_from_httpbin_is_retried_until_the_attempts_are_used(
    env: EngineEnv, httpbin: HttpbinServer
) -> None:
    retry = {"max_attempts": 3, "initial_backoff_s": 0.05, "jitter": "none"}
    run_id = await env.start([get(f"{httpbin.base_url}/status/408", retry=retry)])
    run = await env.wait_status(run_id, {"succeeded", "failed"})
    assert run["status"] == "failed"
    assert len(run["attempts"]) == 3
    assert {a["error"]["retryable"] for a in run["attempts"]} == {True}
