"""``make bench``: run every benchmark, write ``bench/results.json`` and print a table.

Figures are medians over repeated runs on this machine; they are measurements, not tests.
The executor figures run planexec and its peers (DBOS Transact, LangGraph with its Postgres
checkpointer, and the floor: one ``INSERT ... COMMIT`` per step) in the same run, on the same
Postgres, against the same loopback tool server, and report ratios.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from . import executor_bench, planner_checks, planner_load
from .peers import run_peers
from .peers.common import serve_loopback

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
CHART = HERE / "results.png"
ADMIN_DSN = os.environ.get(
    "PLANEXEC_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
RUNS = int(os.environ.get("PLANEXEC_BENCH_RUNS", "200"))


def short(name: str) -> str:
    """``DBOS Transact (sync workflow, ...)`` -> ``DBOS``: labels for ratios and the chart."""
    return name.split(" ", 1)[0]


def executor_figures() -> dict[str, Any]:
    """Planexec and the peers, noop and loopback-HTTP steps, with ratios."""
    rows: list[dict[str, Any]] = []
    with serve_loopback() as url:
        base = url.removesuffix("/noop")
        rows.append(executor_bench.measure(ADMIN_DSN, runs=RUNS, steps=10))
        rows.append(executor_bench.measure(ADMIN_DSN, runs=RUNS, steps=10, http_url=base))
        peers = run_peers.run_all(ADMIN_DSN, runs=RUNS, steps=10, http_url=url)
    rows += peers["peers"]
    ratios: dict[str, Any] = {}
    for kind in ("noop", "http"):
        by_name = {r["name"]: r for r in rows if r["kind"] == kind}
        mine = by_name["planexec"]["per_step_ms"]["median"]
        ratios[kind] = {
            f"planexec/{short(name)}": round(mine / row["per_step_ms"]["median"], 3)
            for name, row in by_name.items()
            if name != "planexec"
        }
    return {
        "rows": rows,
        "ratios": ratios,
        "postgres": peers.get("postgres"),
        "targets": {
            "per_step_vs_dbos": "<= 0.5",
            "per_step_vs_langgraph": "< 1.0",
            "planexec_commits_per_step_idempotent": "<= 1.2",
        },
    }


def chart(executor: dict[str, Any]) -> None:
    """A bar chart of per-step medians (ms) per system and step kind, to ``results.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = executor["rows"]
    names = [r["name"] for r in rows if r["kind"] == "noop"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.38
    for offset, kind in ((-width / 2, "noop"), (width / 2, "http")):
        values = [
            next(r["per_step_ms"]["median"] for r in rows if r["name"] == n and r["kind"] == kind)
            for n in names
        ]
        positions = [i + offset for i in range(len(names))]
        bars = ax.bar(positions, values, width, label=f"{kind} step")
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(range(len(names)), [short(n) for n in names])
    ax.set_ylabel("ms per step (median)")
    ax.set_title("10-step sequential plan, same Postgres, same tool server")
    ax.legend()
    fig.tight_layout()
    fig.savefig(CHART, dpi=110)
    plt.close(fig)


def _row(name: str, value: Any, target: str) -> str:
    return f"| {name} | {value} | {target} |"


def table(results: dict[str, Any]) -> str:
    """The short table printed after a run."""
    lines = ["| figure | measured | target |", "|---|---|---|"]
    for key, fig in results["planner_checks"].items():
        lines.append(
            _row(
                key.replace("_ms", ""),
                f"median {fig['median']} ms, p99 {fig['p99']} ms",
                f"median < {fig['target_median']} ms",
            )
        )
    load = results["planner_load"]
    lines.append(
        _row("POST /v1/plans (template, persisted)", f"{load['plans_per_s']} plans/s", ">= 500")
    )
    lines.append(
        _row("POST /v1/plans latency", f"p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms", "-")
    )
    executor = results["executor"]
    for row in executor["rows"]:
        per = row["per_step_ms"]
        lines.append(
            _row(
                f"{row['name']} {row['kind']} step",
                f"{per['median']} ms (p99 {per['p99']}), {row['commits_per_step']} commits/step",
                "-",
            )
        )
    for kind, ratios in executor["ratios"].items():
        text = ", ".join(f"{k} {v}" for k, v in ratios.items())
        lines.append(_row(f"ratios, {kind} step", text, "vs dbos <= 0.5, vs langgraph < 1"))
    return "\n".join(lines)


def main() -> int:
    """Run the benchmarks and report."""
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m": os.getloadavg()[0],
        },
    }
    results["planner_checks"] = planner_checks.measure()
    results["planner_load"] = planner_load.run(ADMIN_DSN)
    results["executor"] = executor_figures()
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    chart(results["executor"])
    print(table(results))
    print(f"\nwritten {RESULTS} and {CHART}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
