"""The people CLI (``planexec plan|runs|approve``) run as a subprocess against service processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest

from .conftest import Pair, start_pair
from .processes import PLANEXEC, Service, base_env, eventually, free_port, wait_healthy
from .test_pair import FAN

RUN_LINE = re.compile(r"^run ([0-9a-f-]{36})$", re.MULTILINE)
EVENT_LINE = re.compile(r"^\s*(\d+)  (\S+)")


def cli_env(pair: Pair, key: str | None, **extra: str) -> dict[str, str]:
    """The caller's environment: the pair's URLs and one API key (no terminal unless asked)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PLANEXEC_") and k not in ("FORCE_COLOR", "TTY_COMPATIBLE")
    }
    env |= {"PLANEXEC_PLANNER_URL": pair.planner, "PLANEXEC_EXECUTOR_URL": pair.executor}
    if key is not None:
        env["PLANEXEC_API_KEY"] = key
    return env | extra


def cli(pair: Pair, key: str | None, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PLANEXEC, *args],
        env=cli_env(pair, key, **env),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def event_lines(stdout: str) -> list[tuple[int, str]]:
    """``(seq, type)`` of every event line ``watch`` printed."""
    found = []
    for line in stdout.splitlines():
        match = EVENT_LINE.match(line)
        if match and "." in match.group(2):
            found.append((int(match.group(1)), match.group(2)))
    return found


def api_events(pair: Pair, run_id: str) -> list[tuple[int, str]]:
    with httpx2.stream(
        "GET",
        f"{pair.executor}/v1/runs/{run_id}/events",
        params={"follow": "false"},
        headers=pair.h(pair.submitter),
    ) as stream:
        events = [json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:")]
    return [(e["seq"], e["type"]) for e in events]


def test_plan_execute_watch_then_list_show_and_errors(pair: Pair, tmp_path: Path) -> None:
    draft = tmp_path / "fan.json"
    draft.write_text(json.dumps(FAN), encoding="utf-8")
    done = cli(pair, pair.submitter, "plan", "sum the seeds", "--draft", f"@{draft}", "--watch")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    run_match = RUN_LINE.search(out)
    assert run_match, out
    run_id = run_match.group(1)
    run = httpx2.get(f"{pair.executor}/v1/runs/{run_id}", headers=pair.h(pair.submitter)).json()
    assert run["status"] == "succeeded"
    # the plan table: every step with its tool and the rule ids that allowed it
    plan_line = re.search(r"^plan (\S+) version 1: ready", out, re.MULTILINE)
    assert plan_line and plan_line.group(1) == run["plan_id"], out
    for decision in run["policy_decisions"]:
        row = next(line for line in out.splitlines() if line.split()[:1] == [decision["step_id"]])
        assert decision["tool"] in row and "allow" in row
        assert all(rule in row for rule in decision["rule_ids"]) and decision["rule_ids"]
    # one line per event, exactly the stream's events in order, then the outcome
    assert event_lines(out) == api_events(pair, run_id)
    assert {line.split()[2] for line in out.splitlines() if " step.succeeded " in line} == {
        "seed",
        "sum",
        "count",
        "report",
    }
    assert out.rstrip().endswith(f"run {run_id} succeeded: 4/4 steps finished")

    listed = cli(pair, pair.submitter, "runs", "list", "--plan-id", run["plan_id"])
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if run_id in line)
    assert "succeeded" in row and f"{run['plan_id']}:1" in row
    as_json = json.loads(cli(pair, pair.submitter, "runs", "list", "--json").stdout)
    assert [r["run_id"] for r in as_json["items"]] == [run_id]

    shown = cli(pair, pair.submitter, "runs", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["run_id"] == run_id and detail["status"] == "succeeded"
    assert {s["step_id"]: s["status"] for s in detail["steps"]} == dict.fromkeys(
        ("seed", "sum", "count", "report"), "succeeded"
    )
    table = cli(pair, pair.submitter, "runs", "show", run_id).stdout
    assert re.search(r"^report\s+noop\s+succeeded\s+1\s+\d+\.\d{3} s", table, re.MULTILINE), table

    # watching a finished run replays it and gives the same exit code; on a terminal the
    # events drive a live view instead of lines
    again = cli(pair, pair.submitter, "runs", "watch", run_id)
    assert again.returncode == 0 and event_lines(again.stdout) == event_lines(out)
    tty = cli(pair, pair.submitter, "runs", "watch", run_id, TTY_COMPATIBLE="1", COLUMNS="200")
    assert tty.returncode == 0, tty.stderr
    assert event_lines(tty.stdout) == [] and "\x1b[" in tty.stdout
    assert f"run {run_id} succeeded: 4/4 steps finished" in tty.stdout

    check_problems(pair, run_id)
    check_rejected_plan(pair)


def check_problems(pair: Pair, run_id: str) -> None:
    """RFC 9457 problems print ``error: <title>: <detail>`` on stderr and exit 2."""
    unknown = "6f1c1a52-6a1e-4f6e-9d0b-3f2a8c9e0d11"
    missing = cli(pair, pair.submitter, "runs", "show", unknown)
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.strip() == f"error: Not found: run {unknown} not found"
    not_waiting = cli(pair, pair.approver, "approve", run_id, "seed")
    assert not_waiting.returncode == 2
    assert not_waiting.stderr.startswith(
        f"error: Conflict: step 'seed' of run {run_id} is not waiting for an approval"
    )
    anonymous = cli(pair, None, "runs", "list")
    assert anonymous.returncode == 2
    assert anonymous.stderr.startswith("error: Authentication required: ")
    port = free_port()
    down = cli(pair, pair.submitter, "runs", "list", "--executor-url", f"http://127.0.0.1:{port}")
    assert down.returncode == 2
    assert down.stderr.startswith(f"error: cannot reach http://127.0.0.1:{port}/v1/runs: ")
    assert pair.submitter not in down.stderr + down.stdout + missing.stderr


def check_rejected_plan(pair: Pair) -> None:
    """A rejected plan prints its validation issues and exits 1."""
    rejected = cli(
        pair,
        pair.submitter,
        "plan",
        "bad",
        "--draft",
        json.dumps({"steps": [{"id": "x", "tool": "nope"}]}),
        "--execute",
    )
    assert rejected.returncode == 1, rejected.stdout + rejected.stderr
    assert re.search(r"version 1: rejected", rejected.stdout)
    assert re.search(r"^x\s+unknown_tool\s", rejected.stdout, re.MULTILINE), rejected.stdout


def test_watch_resumes_after_the_executor_is_killed(
    pair: Pair, db_url: str, keys_for: dict[str, str], tmp_path: Path
) -> None:
    draft = {
        "steps": [
            {"id": "a", "tool": "noop"},
            {"id": "w", "tool": "wait", "depends_on": ["a"], "args": {"seconds": 3}},
            {"id": "b", "tool": "noop", "depends_on": ["w"]},
        ]
    }
    plan = httpx2.post(
        f"{pair.planner}/v1/plans",
        json={"intent": "wait a bit", "draft": draft, "options": {"execute": True}},
        headers=pair.h(pair.submitter),
    ).json()

    def run_of() -> str:
        items = httpx2.get(
            f"{pair.executor}/v1/runs",
            params={"plan_id": plan["plan_id"]},
            headers=pair.h(pair.submitter),
        ).json()["items"]
        assert items
        return str(items[0]["run_id"])

    run_id = eventually(run_of)
    watch = subprocess.Popen(
        [PLANEXEC, "runs", "watch", run_id],
        env=cli_env(pair, pair.submitter),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(watch.stdout or []), daemon=True)
    reader.start()
    try:
        # `a` is done and `w` waits 3 s: the executor goes down in the middle of the run
        eventually(lambda: _assert(any(" step.succeeded " in x and " a " in x for x in lines)))
        old = pair.services[0]
        assert old.name == "executor"
        old.proc.kill()  # the stream drops mid-run, without a clean end
        old.stop()
        assert not any("run.succeeded" in x for x in lines), "the run ended before the drop"
        env = base_env(
            db_url,
            PLANEXEC_PLANNER_URL=pair.planner,
            PLANEXEC_SERVICE_API_KEY=keys_for["service"],
        )
        port = str(httpx2.URL(pair.executor).port)
        fresh = Service("executor", ["executor", "--port", port], env, tmp_path)
        pair.services[0] = fresh
        wait_healthy(pair.executor, fresh)
        assert watch.wait(timeout=60) == 0, (lines, watch.stderr.read() if watch.stderr else "")
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    reader.join(timeout=5)
    out = "".join(lines)
    # every event exactly once, in order, across the reconnect
    assert event_lines(out) == api_events(pair, run_id)
    assert out.rstrip().endswith(f"run {run_id} succeeded: 3/3 steps finished")


def _assert(condition: bool) -> None:
    assert condition


# --- a gate: the built-in catalog has no destructive tool, so this pair imports one -------------

ITEMS_OPENAPI = """
openapi: 3.0.3
info: {title: items, version: "1"}
paths:
  /items/{item_id}:
    delete:
      operationId: delete_item
      parameters:
        - {name: item_id, in: path, required: true, schema: {type: string}}
      responses:
        "200":
          description: deleted
          content: {application/json: {schema: {type: object}}}
"""


class ItemsServer(ThreadingHTTPServer):
    """A real HTTP server the destructive tool calls; it records every DELETE it serves."""

    deleted: list[str]


class _ItemsHandler(BaseHTTPRequestHandler):
    server: ItemsServer

    def do_DELETE(self) -> None:
        self.server.deleted.append(self.path)
        body = json.dumps({"deleted": self.path.rsplit("/", 1)[-1]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def items_server() -> Iterator[ItemsServer]:
    server = ItemsServer(("127.0.0.1", 0), _ItemsHandler)
    server.deleted = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def gated_pair(
    db_url: str, keys_for: dict[str, str], tmp_path: Path, items_server: ItemsServer
) -> Iterator[Pair]:
    """Like ``pair``, with the executor and worker also serving ``items.delete_item``.

    The tool is imported from an OpenAPI document (DELETE = destructive), so the shipped Cedar
    policy ``planexec.destructive-tools-need-approval`` puts its step behind a gate.
    """
    port = items_server.server_address[1]
    (tmp_path / "items.yaml").write_text(ITEMS_OPENAPI, encoding="utf-8")
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        json.dumps(
            {
                "builtins": ["noop", "transform", "wait"],
                "http": {"allow_networks": ["127.0.0.1/32"], "allow_ports": [port]},
                "openapi": [
                    {
                        "prefix": "items",
                        "document": "items.yaml",
                        "base_url": f"http://127.0.0.1:{port}",
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    with start_pair(
        db_url,
        keys_for,
        tmp_path,
        extra_env={"PLANEXEC_CATALOG_CONFIG": str(catalog)},
        worker_concurrency=2,
    ) as running:
        yield running


def test_a_gated_run_pauses_is_approved_and_finishes(
    gated_pair: Pair, items_server: ItemsServer
) -> None:
    pair = gated_pair
    draft = {
        "steps": [
            {"id": "look", "tool": "noop", "args": {"value": "42"}},
            {
                "id": "drop",
                "tool": "items.delete_item",
                "depends_on": ["look"],
                "args": {"item_id": "42"},
            },
        ]
    }
    paused = cli(
        pair, pair.submitter, "plan", "delete item 42", "--draft", json.dumps(draft), "--watch"
    )
    assert paused.returncode == 2, paused.stdout + paused.stderr
    out = paused.stdout
    drop_row = next(line for line in out.splitlines() if line.startswith("drop "))
    assert "items.delete_item" in drop_row and "require_approval" in drop_row
    assert "planexec.destructive-tools-need-approval" in drop_row and "required" in drop_row
    run_match = RUN_LINE.search(out)
    assert run_match, out
    run_id = run_match.group(1)
    assert f"run {run_id} paused: 1/2 steps finished" in out
    assert f"  planexec approve {run_id} drop " in out
    assert items_server.deleted == []

    # a submitter may not approve; an approver's decision is recorded once
    forbidden = cli(pair, pair.submitter, "approve", run_id, "drop")
    assert forbidden.returncode == 2 and forbidden.stderr.startswith("error: Forbidden: ")
    approved = cli(pair, pair.approver, "approve", run_id, "drop", "--comment", "item is stale")
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.splitlines() == [
        f"step drop of run {run_id} approved by acme-approver",
        "recorded by this call",
    ]
    late = cli(pair, pair.approver, "approve", run_id, "drop", "--reject")
    assert late.returncode == 1, late.stderr
    assert "was already approved by acme-approver" in late.stdout
    assert "not recorded by this call" in late.stdout

    finished = cli(pair, pair.submitter, "runs", "watch", run_id)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert any(t == "approval.granted" for _, t in event_lines(finished.stdout))
    assert finished.stdout.rstrip().endswith(f"run {run_id} succeeded: 2/2 steps finished")
    assert items_server.deleted == ["/items/42"]
    shown = cli(pair, pair.submitter, "runs", "show", run_id).stdout
    assert re.search(
        r"^drop\s+approve\s+acme-approver\s+\d{4}-\d\d-\d\d \S+\s+item is stale",
        shown,
        re.MULTILINE,
    )


def test_a_watch_that_already_reached_the_executor_retries_a_failed_first_connect() -> None:
    """The live stream of ``watch`` opens after its history replay: if the executor went down
    in between, that first connect is a drop to ride out, not "the executor is unreachable"."""
    from planexec.client.http import ApiUnreachableError, ClientConfig, PlanexecClient

    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = PlanexecClient(ClientConfig(planner_url=down, executor_url=down, api_key="k"))
    tries: list[float] = []
    for reached in (False, True):
        started = time.monotonic()
        with pytest.raises(ApiUnreachableError):
            next(client.events("r1", after=3, reached=reached, max_reconnects=2))
        tries.append(time.monotonic() - started)
    # Without ``reached`` the first refusal ends it at once; with it, two backoffs come first
    # (0.4 s and 0.8 s) before the third refusal gives up.
    assert tries[0] < 0.3, tries
    assert tries[1] >= 1.2, tries
