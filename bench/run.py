"""``make bench``: run every benchmark, write ``bench/results.json`` and print a table.

Figures are medians over repeated runs on this machine; they are measurements, not tests.
``python -m bench.run --only load`` runs the load tests L1 and L2 alone (bench/executor_load.py)
and merges their figures into an existing ``results.json``.

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

from . import executor_bench, executor_load, planner_checks, planner_load
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
    if "load" in results:
        lines += load_table(results["load"])
    return "\n".join(lines)


def load_table(load: dict[str, Any]) -> list[str]:
    """Rows of the load tests L1 and L2 (RELIABILITY §2)."""
    lines: list[str] = []
    l1 = load["l1"]
    for phase in l1["phases"] + l1["ladder"]:
        conns = phase["connections"]
        lines.append(
            _row(
                f"L1 {phase['offered_runs_per_s']:g} runs/s x {phase['duration_s']:g} s,"
                f" {phase['workers']} worker(s)",
                f"{phase['steps_per_s']} steps/s, claim-to-start p50"
                f" {phase['claim_to_start_ms']['p50']} / p99 {phase['claim_to_start_ms']['p99']}"
                f" ms, lost {phase['lost']}, conns/worker max {conns['max_per_worker_process']}"
                f" (bound {conns['bound_per_worker_process']}), held {phase['held']}",
                "0 lost, p99 < 250 ms",
            )
        )
    capacity = ", ".join(
        f"{p['workers']} -> {p['steps_per_s']} (offered {p['achieved_offer_runs_per_s']} runs/s)"
        for p in l1["capacity"]
    )
    lines.append(_row("L1 capacity, steps/s by workers (50 ms tools)", capacity, "-"))
    lines.append(
        _row(
            "L1 highest rate held / first not held",
            f"{l1['highest_rate_held_runs_per_s']} / {l1['first_rate_not_held_runs_per_s']} runs/s",
            "200 runs/s (nightly)",
        )
    )
    l2 = load["l2"]
    for drain in l2["drains"]:
        runs = drain["tables"]
        lines.append(
            _row(
                f"L2 drain {drain['steps']} steps, {drain['workers']} worker(s)",
                f"{drain['drain_s']} s ({drain['steps_per_s']} steps/s), speed-up"
                f" {l2['speedup'][str(drain['workers'])]}, lost {drain['lost']}, longest lock"
                f" wait {drain['longest_lock_wait_s']} s, runs table"
                f" {runs['backlog']['runs']['bytes'] // 1024} -> "
                f"{runs['after_vacuum']['runs']['bytes'] // 1024} KiB after VACUUM",
                ">= 6x at 8; no lock wait > 1 s",
            )
        )
    return lines


def main() -> int:
    """Run the benchmarks and report (``--only load``: the load tests, merged in)."""
    if sys.argv[1:] == ["--only", "load"]:
        results = json.loads(RESULTS.read_text(encoding="utf-8"))
        started = time.monotonic()
        results["load"] = executor_load.measure(ADMIN_DSN)
        results["load"]["seconds"] = round(time.monotonic() - started, 1)
        results["load"]["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
        print("\n".join(load_table(results["load"])))
        print(f"\nmerged the load figures into {RESULTS}")
        return 0
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
    started = time.monotonic()
    results["load"] = executor_load.measure(ADMIN_DSN)
    results["load"]["seconds"] = round(time.monotonic() - started, 1)
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    chart(results["executor"])
    print(table(results))
    print(f"\nwritten {RESULTS} and {CHART}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
