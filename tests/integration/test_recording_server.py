"""The recording tool server: dedup by Idempotency-Key, fault controls, stats, process mode."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.support.recording_server import (
    OPENAPI,
    RecordingServer,
    RecordingServerProcess,
    openapi_document,
)


@pytest.fixture(scope="module")
def server() -> Iterator[RecordingServer]:
    with RecordingServer() as running:
        yield running


@pytest.fixture
def sink(server: RecordingServer) -> RecordingServer:
    server.reset()
    return server


def post(
    sink: RecordingServer | RecordingServerProcess, path: str, body: object, key: str | None = None
) -> httpx2.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return httpx2.post(f"{sink.base_url}{path}", json=body, headers=headers, timeout=10)


def test_a_repeated_key_replays_the_stored_response_without_a_new_effect(
    sink: RecordingServer,
) -> None:
    first = post(sink, "/effects/charge", {"amount": 5}, key="k1")
    second = post(sink, "/effects/charge", {"amount": 5}, key="k1")
    other = post(sink, "/effects/charge", {"amount": 5}, key="k2")
    assert first.status_code == second.status_code == other.status_code == 200
    assert first.json() == {"effect": 1, "name": "charge", "key": "k1", "body": {"amount": 5}}
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert other.json()["effect"] == 2
    assert sink.stats() == {
        "requests": 3,
        "effects": 2,
        "by_key": {"k1": 2, "k2": 1},
        "effects_by_name": {"charge": 2},
        "replayed": 1,
        "failed": 0,
        "in_flight": {"/effects": 0},
        "max_in_flight": {"/effects": 1},
    }


def test_requests_without_a_key_always_make_an_effect(sink: RecordingServer) -> None:
    assert post(sink, "/effects/mail", {"to": "a"}).json()["effect"] == 1
    assert post(sink, "/effects/mail", {"to": "a"}).json()["effect"] == 2
    stats = sink.stats()
    assert (stats["requests"], stats["effects"], stats["by_key"]) == (2, 2, {})


def test_a_key_reused_with_a_different_body_is_refused(sink: RecordingServer) -> None:
    assert post(sink, "/effects/charge", {"amount": 5}, key="k").status_code == 200
    reused = post(sink, "/effects/charge", {"amount": 6}, key="k")
    assert reused.status_code == 422
    assert post(sink, "/effects/refund", {"amount": 5}, key="k").status_code == 422
    assert sink.stats()["effects"] == 1
    assert [e["outcome"] for e in sink.log()] == ["effect", "conflict", "conflict"]


def test_the_unsafe_endpoint_makes_an_effect_per_request_despite_the_key(
    sink: RecordingServer,
) -> None:
    first = post(sink, "/unsafe/launch", {"n": 1}, key="same")
    second = post(sink, "/unsafe/launch", {"n": 1}, key="same")
    assert [first.json()["effect"], second.json()["effect"]] == [1, 2]
    assert "idempotent-replayed" not in second.headers
    stats = sink.stats()
    assert (stats["effects"], stats["by_key"], stats["effects_by_name"]) == (
        2,
        {"same": 2},
        {"launch": 2},
    )


async def test_concurrent_requests_with_one_key_make_one_effect(sink: RecordingServer) -> None:
    sink.slow("race", 0.05)  # every request is in flight at once before any is recorded
    async with httpx2.AsyncClient(base_url=sink.base_url, timeout=10) as client:
        responses = await asyncio.gather(
            *(
                client.post("/effects/race", json={"v": 1}, headers={"Idempotency-Key": "r"})
                for _ in range(20)
            )
        )
    assert {r.status_code for r in responses} == {200}
    assert {r.json()["effect"] for r in responses} == {1}
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 19
    stats = sink.stats()
    assert (stats["requests"], stats["effects"], stats["replayed"]) == (20, 1, 19)


def test_injected_failures_come_before_any_effect(sink: RecordingServer) -> None:
    sink.fail("flaky", times=2, status=503, retry_after=1)
    statuses = []
    for _ in range(3):
        response = post(sink, "/effects/flaky", {"x": 1}, key="f")
        statuses.append((response.status_code, response.headers.get("retry-after")))
    assert statuses == [(503, "1"), (503, "1"), (200, None)]
    stats = sink.stats()
    assert (stats["requests"], stats["effects"], stats["failed"]) == (3, 1, 2)
    assert stats["by_key"] == {"f": 3}
    assert post(sink, "/effects/other", {}, key="o").status_code == 200  # other names unaffected


def test_injected_failure_without_retry_after_and_with_another_status(
    sink: RecordingServer,
) -> None:
    sink.fail("limited", times=1, status=429)
    response = post(sink, "/unsafe/limited", {}, key="u")
    assert response.status_code == 429
    assert "retry-after" not in response.headers
    assert post(sink, "/unsafe/limited", {}, key="u").status_code == 200
    assert sink.stats()["effects"] == 1


def test_slow_delays_only_its_name_and_still_makes_the_effect_after_a_client_timeout(
    sink: RecordingServer,
) -> None:
    sink.slow("slow", 0.6)
    started = time.monotonic()
    assert post(sink, "/effects/slow", {}, key="s1").status_code == 200
    assert time.monotonic() - started >= 0.6
    started = time.monotonic()
    post(sink, "/effects/fast", {}, key="q")
    assert time.monotonic() - started < 0.3
    # The client gives up; the server still makes the effect, as a real slow tool would.
    with pytest.raises(httpx2.TimeoutException):
        httpx2.post(
            f"{sink.base_url}/effects/slow", json={}, headers={"Idempotency-Key": "s2"}, timeout=0.1
        )
    deadline = time.monotonic() + 5
    while sink.stats()["effects"] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sink.stats()["effects_by_name"] == {"slow": 2, "fast": 1}


def test_reset_forgets_effects_keys_and_controls(sink: RecordingServer) -> None:
    post(sink, "/effects/a", {}, key="k")
    sink.fail("a", times=5)
    sink.reset()
    assert sink.stats() == {
        "requests": 0,
        "effects": 0,
        "by_key": {},
        "effects_by_name": {},
        "replayed": 0,
        "failed": 0,
        "in_flight": {},
        "max_in_flight": {},
    }
    again = post(sink, "/effects/a", {}, key="k")
    assert again.status_code == 200
    assert "idempotent-replayed" not in again.headers


def test_noop_answers_without_recording(sink: RecordingServer) -> None:
    response = httpx2.get(f"{sink.base_url}/noop", timeout=10)
    assert response.json() == {"ok": True}
    assert sink.stats()["requests"] == 0


def test_openapi_document_declares_the_effect_operations(sink: RecordingServer) -> None:
    effect = OPENAPI["paths"]["/effects/{name}"]["post"]
    unsafe = OPENAPI["paths"]["/unsafe/{name}"]["post"]
    assert OPENAPI["openapi"].startswith("3.0")
    assert (effect["operationId"], effect["x-planexec-side-effect"]) == ("effect", "write")
    assert effect["x-planexec-idempotent"] is True
    assert (unsafe["operationId"], unsafe["x-planexec-side-effect"]) == ("effect_unsafe", "write")
    assert unsafe["x-planexec-idempotent"] is False
    document = openapi_document(sink.base_url)
    assert document["servers"] == [{"url": sink.base_url}]
    assert "servers" not in OPENAPI
    # the paths the document names are the ones the server serves
    assert post(sink, "/effects/x", {}, key="d").status_code == 200
    assert post(sink, "/unsafe/x", {}, key="d").status_code == 200


def test_process_mode_keeps_state_in_a_file_across_a_kill(tmp_path: Path) -> None:
    state = tmp_path / "sink.json"
    proc = RecordingServerProcess(state)
    with proc:
        assert post(proc, "/effects/pay", {"to": "bob"}, key="p1").json()["effect"] == 1
        proc.fail("pay", times=1, status=500)
        saved = json.loads(state.read_text())
        assert (saved["effects"], saved["by_key"]) == (1, {"p1": 1})
        port = proc.port
        proc.kill()
        assert json.loads(state.read_text())["effects"] == 1  # readable after the sink died
        proc.start()
        assert proc.port == port
        assert post(proc, "/effects/pay", {"to": "bob"}, key="p1").status_code == 500
        replay = post(proc, "/effects/pay", {"to": "bob"}, key="p1")
        assert replay.json()["effect"] == 1
        assert replay.headers["idempotent-replayed"] == "true"
        assert proc.stats()["effects"] == 1
        assert proc.stats()["by_key"] == {"p1": 3}
    assert proc.process is None
    assert json.loads(state.read_text())["requests"] == 3
