"""Run every peer benchmark on one Postgres and one loopback tool server; print JSON.

``python -m bench.peers.run_peers [--admin-dsn URL] [--runs 200] [--steps 10]
[--peers floor,dbos,langgraph] [--kinds noop,http] [--http-url URL]`` prints
``{"when", "postgres", "runs", "steps", "http_url", "peers": [<result>, ...]}`` where each
result is the dict documented in :func:`bench.peers.common.summarize`. Without
``--http-url`` it serves its own ``GET /noop`` (see :func:`bench.peers.common.serve_loopback`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from bench.peers.common import serve_loopback

Measure = Callable[..., dict[str, Any]]
# Imported lazily: each peer measures in its own process, so this one needs no framework.
PEERS: dict[str, str] = {
    "floor": "bench.peers.floor",
    "dbos": "bench.peers.dbos_peer",
    "langgraph": "bench.peers.langgraph_peer",
}
KINDS = ("noop", "http")
DEFAULT_ADMIN_DSN = os.environ.get(
    "PLANEXEC_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@contextmanager
def _tool_url(http_url: str | None) -> Iterator[str]:
    if http_url is not None:
        yield http_url
        return
    with serve_loopback() as url:
        yield url


def run_all(
    admin_dsn: str,
    *,
    runs: int = 200,
    steps: int = 10,
    http_url: str | None = None,
    peers: Sequence[str] = tuple(PEERS),
    kinds: Sequence[str] = KINDS,
) -> dict[str, Any]:
    """Measure ``peers`` for each of ``kinds``, one after another, each in its own process.

    Args:
        admin_dsn: URL of a database on the Postgres to use; peers create and drop their own.
        runs: workflow runs per peer and kind.
        steps: sequential steps per run.
        http_url: the loopback tool (``GET`` answering JSON); ``None`` serves our own.
        peers: names from :data:`PEERS`.
        kinds: ``"noop"`` and/or ``"http"``.

    Raises:
        KeyError: for an unknown peer name.
        RuntimeError: when a peer's process fails.
    """
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    results: list[dict[str, Any]] = []
    with _tool_url(http_url) as url:
        for kind in kinds:
            for name in peers:
                measure: Measure = importlib.import_module(PEERS[name]).measure
                target = url if kind == "http" else None
                results.append(measure(admin_dsn, runs=runs, steps=steps, http_url=target))
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "postgres": row[0] if row else None,
        "runs": runs,
        "steps": steps,
        "http_url": url,
        "peers": results,
    }


def main() -> None:
    """CLI entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--admin-dsn", default=DEFAULT_ADMIN_DSN)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--http-url", default=None)
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--kinds", default=",".join(KINDS))
    ns = parser.parse_args()
    result = run_all(
        ns.admin_dsn,
        runs=ns.runs,
        steps=ns.steps,
        http_url=ns.http_url,
        peers=ns.peers.split(","),
        kinds=ns.kinds.split(","),
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
