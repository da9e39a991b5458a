"""LangGraph: a ``StateGraph`` of ``steps`` sequential nodes with a ``PostgresSaver``.

Compiled with the sync ``PostgresSaver`` on one psycopg connection opened as
``PostgresSaver.from_conn_string`` opens it (autocommit, ``prepare_threshold=0``,
``dict_row``), invoked with ``durability="sync"`` (each step's checkpoint is written before
the next step starts) and a distinct ``thread_id`` per run. LangSmith tracing is off (the
child process is started with ``LANGSMITH_TRACING=false``). Run in a fresh interpreter by
:func:`measure`, like every peer.

Commits: we own the saver's one connection, so ``SELECT pg_stat_force_next_flush()`` on it
flushes its stats before each read; the second request's own commit is subtracted.
"""

from __future__ import annotations

import time
from importlib.metadata import version
from typing import Any, TypedDict

import httpx2
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.graph import END, START, StateGraph
from psycopg import Connection
from psycopg.rows import DictRow, dict_row

from bench.peers.common import (
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


class PlanState(TypedDict):
    """Graph state: ``done`` counts finished steps, ``last`` is the last step's output."""

    done: int
    last: dict[str, Any]


def build_graph(body: Body, steps: int, saver: PostgresSaver) -> Any:
    """Compile ``START -> step_0 -> ... -> step_{steps-1} -> END``; each node runs ``body``."""

    def node(state: PlanState) -> dict[str, Any]:
        return {"done": state["done"] + 1, "last": body()}

    builder = StateGraph(PlanState)
    previous = START
    for index in range(steps):
        name = f"step_{index}"
        builder.add_node(name, node)
        builder.add_edge(previous, name)
        previous = name
    builder.add_edge(previous, END)
    return builder.compile(checkpointer=saver)


def measure(
    admin_dsn: str, *, runs: int = 200, steps: int = 10, http_url: str | None
) -> dict[str, Any]:
    """Measure LangGraph in a child process; see :func:`bench.peers.common.summarize`.

    Raises:
        RuntimeError: when the child process fails.
    """
    return run_peer_process(__name__, admin_dsn, runs=runs, steps=steps, http_url=http_url)


def _flush(conn: Connection[DictRow]) -> None:
    # The backend flushes its pending stats before it answers this statement.
    conn.execute("SELECT pg_stat_force_next_flush()")


def measure_here(
    admin_dsn: str, *, runs: int = 200, steps: int = 10, http_url: str | None
) -> dict[str, Any]:
    """Measure LangGraph in this process."""
    with httpx2.Client() as client, fresh_database(admin_dsn, "langgraph") as (dbname, url):
        body = noop_body if http_url is None else sync_http_body(client, http_url)
        counter = XactCounter(admin_dsn, dbname)
        conn = Connection.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row)
        try:
            saver = PostgresSaver(conn)
            saver.setup()
            graph = build_graph(body, steps, saver)

            def run_once(thread_id: str) -> None:
                config = {"configurable": {"thread_id": thread_id}}
                state = graph.invoke({"done": 0, "last": {}}, config, durability="sync")
                if state["done"] != steps:
                    raise RuntimeError(f"graph ran {state['done']} of {steps} steps")

            for run in range(WARMUP_RUNS):
                run_once(f"warmup-{run}")
            _flush(conn)
            before, started = counter.read(), time.monotonic()
            run_seconds: list[float] = []
            cpu_start = time.process_time()
            for run in range(runs):
                start = time.perf_counter()
                run_once(f"run-{run}")
                run_seconds.append(time.perf_counter() - start)
            cpu_seconds = time.process_time() - cpu_start
            _flush(conn)
            after, elapsed = counter.read(), time.monotonic() - started
        finally:
            conn.close()
            counter.close()
        body_seconds = time_body(body, runs * steps)
    return summarize(
        name="LangGraph + PostgresSaver (durability sync)",
        version=(
            f"langgraph {version('langgraph')}, "
            f"langgraph-checkpoint-postgres {version('langgraph-checkpoint-postgres')}"
        ),
        kind=kind_of(http_url),
        steps=steps,
        run_seconds=run_seconds,
        body_seconds=body_seconds,
        cpu_seconds=cpu_seconds,
        commits=Commits(
            total=after - before - 1,  # less the second flush request's own commit
            elapsed_s=elapsed,
            background_per_s=None,
            method="pg_stat_force_next_flush() on the saver's one connection",
        ),
    )


if __name__ == "__main__":
    peer_main(measure_here)
