"""Shared harness for the peer benchmarks: step bodies, timing, stats, databases, commits.

Figures (issue 5, Performance): a run is one sequential workflow of ``steps`` steps; its
per-step time is its wall time / ``steps``. ``per_step_ms`` gives the median and p99 of
that over ``runs`` runs; ``overhead_per_step_ms`` subtracts the median of the bare step body
(the same body called in-process with no framework); ``steps_per_s`` is all timed steps
over all timed wall time. Commits come from ``pg_stat_database.xact_commit`` of the peer's
own fresh database (read from a separate connection to the admin database, so the reads
do not count).

Stats are flushed by each backend asynchronously: at most once a second while busy, and at
the latest ``PGSTAT_IDLE_INTERVAL`` (10 s, PostgreSQL 15+) after it goes idle, or at exit.
A peer that owns its connections calls ``SELECT pg_stat_force_next_flush()`` on them, which
flushes before the backend answers (and counts itself as one commit, subtracted); a peer
whose connections are pooled inside the framework waits out the idle interval and closes
its pool (see :mod:`bench.peers.dbos_peer`).

Run as ``python -m bench.peers.common`` it serves the loopback tool: ``GET /noop`` answers
``{"ok": true}``; it prints the port on its first line of output.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import psycopg

Kind = Literal["noop", "http"]
Body = Callable[[], dict[str, Any]]

ROOT = Path(__file__).resolve().parents[2]
PGSTAT_IDLE_INTERVAL_S = 10.0
WARMUP_RUNS = 5
_OK = json.dumps({"ok": True}).encode()


def kind_of(http_url: str | None) -> Kind:
    """Return ``"http"`` when a loopback tool URL is given, else ``"noop"``."""
    return "noop" if http_url is None else "http"


def noop_body() -> dict[str, Any]:
    """The no-op step body: returns ``{"ok": True}`` and does nothing else."""
    return {"ok": True}


def sync_http_body(client: Any, url: str) -> Body:
    """Return a step body that GETs ``url`` with a sync ``httpx2.Client`` and returns its JSON.

    Raises:
        httpx2.HTTPStatusError: when the tool answers with a 4xx/5xx status (on call).
    """

    def body() -> dict[str, Any]:
        response = client.get(url)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    return body


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100] of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def time_body(body: Body, calls: int) -> list[float]:
    """Call ``body`` ``calls`` times in-process after a short warm-up; seconds per call."""
    for _ in range(min(calls, 20)):
        body()
    out: list[float] = []
    for _ in range(calls):
        start = time.perf_counter()
        body()
        out.append(time.perf_counter() - start)
    return out


@dataclass(frozen=True)
class Commits:
    """Commits counted in a peer's database over its timed window.

    Attributes:
        total: ``xact_commit`` delta over the window, less the flush requests themselves.
        elapsed_s: seconds between the two reads.
        background_per_s: commits per second the peer made while idle (framework pollers),
            measured before the window; ``None`` when the peer has no background work.
        method: how stats were flushed before each read.
    """

    total: int
    elapsed_s: float
    background_per_s: float | None
    method: str


def summarize(
    *,
    name: str,
    version: str,
    kind: Kind,
    steps: int,
    run_seconds: Sequence[float],
    body_seconds: Sequence[float],
    cpu_seconds: float,
    commits: Commits,
) -> dict[str, Any]:
    """Build the peer's result dict (times in ms, rounded to 3 decimals).

    Returns:
        ``{"name", "version", "kind", "runs", "steps", "per_step_ms": {"median", "p99"},
        "overhead_per_step_ms": {"median", "p99"}, "body_ms": {"median", "p99"},
        "steps_per_s", "cpu_ms_per_step", "load_avg_1m", "commits_per_step", "commits": {...}}``;
        ``cpu_ms_per_step`` is this process's CPU time (all threads) over the timed runs per
        step, which other load on the machine inflates less than wall time; ``load_avg_1m``
        is the machine's load average at the end (2 cores here). ``commits_per_step`` is the
        raw ``xact_commit`` delta per step, and ``commits.per_step_net_of_background``
        takes out the idle pollers' rate times the window.
    """
    per_step = [s * 1000 / steps for s in run_seconds]
    body_ms = [s * 1000 for s in body_seconds]
    body_median = statistics.median(body_ms)
    total_steps = len(run_seconds) * steps
    per_step_median = statistics.median(per_step)
    per_step_p99 = percentile(per_step, 99)
    detail: dict[str, Any] = {
        "total": commits.total,
        "window_s": round(commits.elapsed_s, 3),
        "method": commits.method,
    }
    if commits.background_per_s is not None:
        background = commits.background_per_s * commits.elapsed_s
        detail["background_per_s"] = round(commits.background_per_s, 3)
        detail["per_step_net_of_background"] = round((commits.total - background) / total_steps, 3)
    return {
        "name": name,
        "version": version,
        "kind": kind,
        "runs": len(run_seconds),
        "steps": steps,
        "per_step_ms": {"median": round(per_step_median, 3), "p99": round(per_step_p99, 3)},
        "overhead_per_step_ms": {
            "median": round(per_step_median - body_median, 3),
            "p99": round(per_step_p99 - body_median, 3),
        },
        "body_ms": {"median": round(body_median, 3), "p99": round(percentile(body_ms, 99), 3)},
        "steps_per_s": round(total_steps / sum(run_seconds), 1),
        "cpu_ms_per_step": round(cpu_seconds * 1000 / total_steps, 3),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "commits_per_step": round(commits.total / total_steps, 3),
        "commits": detail,
    }


def database_url(admin_dsn: str, dbname: str) -> str:
    """Return the URL ``admin_dsn`` (``postgresql://user@host:port/db``) with ``dbname``."""
    return urlsplit(admin_dsn)._replace(path=f"/{dbname}").geturl()


@contextmanager
def fresh_database(admin_dsn: str, prefix: str) -> Iterator[tuple[str, str]]:
    """Create a database ``bench_<prefix>_<hex>``, yield ``(name, url)``, then drop it (FORCE)."""
    name = f"bench_{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name, database_url(admin_dsn, name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class XactCounter:
    """Reads ``pg_stat_database.xact_commit`` of one database over an admin connection."""

    def __init__(self, admin_dsn: str, dbname: str) -> None:
        self._conn = psycopg.connect(admin_dsn, autocommit=True)
        self._dbname = dbname

    def read(self) -> int:
        """Return the flushed commit count now (drops any cached stats snapshot first)."""
        self._conn.execute("SELECT pg_stat_clear_snapshot()")
        row = self._conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (self._dbname,)
        ).fetchone()
        return int(row[0]) if row else 0

    def backends(self) -> int:
        """Return how many backends are connected to the database."""
        row = self._conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self._dbname,)
        ).fetchone()
        return int(row[0]) if row else 0

    def wait_no_backends(self, timeout_s: float = 10.0) -> None:
        """Wait until no backend is connected (exiting backends flush their stats).

        Raises:
            TimeoutError: when backends remain after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while self.backends():
            if time.monotonic() > deadline:
                raise TimeoutError(f"backends still connected to {self._dbname}")
            time.sleep(0.05)

    def close(self) -> None:
        """Close the admin connection."""
        self._conn.close()


@contextmanager
def serve_loopback() -> Iterator[str]:
    """Run the loopback tool server in a child process; yield ``http://127.0.0.1:<port>/noop``.

    A separate process keeps the server off the peers' GIL.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.peers.common"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}/noop"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class _NoopHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a pooled client expects
    disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs (~40 ms)

    def do_GET(self) -> None:
        if self.path != "/noop":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(_OK)))
        self.end_headers()
        self.wfile.write(_OK)

    def log_message(self, format: str, *args: Any) -> None:
        return


def run_peer_process(
    module: str, admin_dsn: str, *, runs: int, steps: int, http_url: str | None
) -> dict[str, Any]:
    """Run ``python -m <module>`` (a peer's CLI) in a fresh interpreter; return its JSON.

    Raises:
        RuntimeError: when the child exits non-zero (its stderr tail is included).
    """
    args = [sys.executable, "-m", module, "--admin-dsn", admin_dsn]
    args += ["--runs", str(runs), "--steps", str(steps)]
    if http_url is not None:
        args += ["--http-url", http_url]
    env = {**os.environ, "LANGSMITH_TRACING": "false", "LANGCHAIN_TRACING_V2": "false"}
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed ({done.returncode}): {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def peer_main(measure_here: Callable[..., dict[str, Any]]) -> None:
    """CLI of a peer module: parse ``--admin-dsn --runs --steps [--http-url]``, print JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--admin-dsn", required=True)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--http-url", default=None)
    ns = parser.parse_args()
    result = measure_here(ns.admin_dsn, runs=ns.runs, steps=ns.steps, http_url=ns.http_url)
    print(json.dumps(result), flush=True)


def _serve() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoopHandler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    _serve()
