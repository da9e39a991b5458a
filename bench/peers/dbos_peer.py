"""DBOS Transact: a sync ``@DBOS.workflow()`` calling ``steps`` sync ``@DBOS.step()`` steps.

DBOS is a process-wide singleton with background threads, so :func:`measure` runs it in a
fresh interpreter (``python -m bench.peers.dbos_peer``). Its system database is a fresh
database on the given Postgres (``DBOSConfig.system_database_url``); DBOS uses no other.
Defaults otherwise: no OTLP endpoints (so no exporter), log level WARNING (nothing is
logged per step at INFO either; this only quiets launch).

Commits: DBOS's pooled connections are not ours to flush, and its queue and background-job
threads commit while idle. So after the warm-up we wait out ``PGSTAT_IDLE_INTERVAL`` twice
(the second window gives the idle pollers' commit rate), read, run, then ``DBOS.destroy()``
and wait until every backend has exited (a backend flushes its stats on exit) and read again.
``commits_per_step`` is the raw delta per step; the result also gives it net of the idle rate.
"""

from __future__ import annotations

import time
from importlib.metadata import version
from typing import Any

import httpx2
from dbos import DBOS, DBOSConfig

from bench.peers.common import (
    PGSTAT_IDLE_INTERVAL_S,
    WARMUP_RUNS,
    Body,
    Commits,
    XactCounter,
    fresh_database,
    kind_of,
    noop_body,
    peer_main,
    run_peer_process,
    summarize,
    sync_http_body,
    time_body,
)

_body: list[Body] = [noop_body]


@DBOS.step()
def tool_step(index: int) -> dict[str, Any]:
    """One step: the configured body (no-op or loopback GET); ``index`` names the step."""
    return _body[0]()


@DBOS.workflow()
def plan_workflow(steps: int) -> int:
    """Run ``steps`` steps one after another; returns ``steps``."""
    for index in range(steps):
        tool_step(index)
    return steps


def measure(
    admin_dsn: str, *, runs: int = 200, steps: int = 10, http_url: str | None
) -> dict[str, Any]:
    """Measure DBOS in a child process; see :func:`bench.peers.common.summarize`.

    Raises:
        RuntimeError: when the child process fails.
    """
    return run_peer_process(__name__, admin_dsn, runs=runs, steps=steps, http_url=http_url)


def measure_here(
    admin_dsn: str, *, runs: int = 200, steps: int = 10, http_url: str | None
) -> dict[str, Any]:
    """Measure DBOS in this process; launches and destroys the DBOS singleton."""
    with httpx2.Client() as client, fresh_database(admin_dsn, "dbos") as (dbname, url):
        _body[0] = noop_body if http_url is None else sync_http_body(client, http_url)
        config: DBOSConfig = {
            "name": "planexec-bench",
            "system_database_url": url,
            "log_level": "WARNING",
        }
        counter = XactCounter(admin_dsn, dbname)
        try:
            DBOS(config=config)
            DBOS.launch()
            for _ in range(WARMUP_RUNS):
                plan_workflow(steps)
            time.sleep(PGSTAT_IDLE_INTERVAL_S + 1)
            idle_from, idle_start = counter.read(), time.monotonic()
            time.sleep(PGSTAT_IDLE_INTERVAL_S + 1)
            before, started = counter.read(), time.monotonic()
            background_per_s = (before - idle_from) / (started - idle_start)
            run_seconds: list[float] = []
            cpu_start = time.process_time()
            for _ in range(runs):
                start = time.perf_counter()
                plan_workflow(steps)
                run_seconds.append(time.perf_counter() - start)
            cpu_seconds = time.process_time() - cpu_start
            DBOS.destroy()
            counter.wait_no_backends()
            after, elapsed = counter.read(), time.monotonic() - started
        finally:
            DBOS.destroy()
            counter.close()
        body_seconds = time_body(_body[0], runs * steps)
    return summarize(
        name="DBOS Transact (sync workflow, sync steps)",
        version=f"dbos {version('dbos')}",
        kind=kind_of(http_url),
        steps=steps,
        run_seconds=run_seconds,
        body_seconds=body_seconds,
        cpu_seconds=cpu_seconds,
        commits=Commits(
            total=after - before,
            elapsed_s=elapsed,
            background_per_s=background_per_s,
            method="idle flush (PGSTAT_IDLE_INTERVAL) before; DBOS.destroy() + backend exit after",
        ),
    )


if __name__ == "__main__":
    peer_main(measure_here)
