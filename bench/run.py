"""``make bench``: run every benchmark, write ``bench/results.json`` and print a table.

Figures are medians over repeated runs on this machine; they are measurements, not tests.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from . import planner_checks, planner_load

RESULTS = Path(__file__).resolve().parent / "results.json"
ADMIN_DSN = os.environ.get(
    "PLANEXEC_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _row(name: str, value: Any, unit: str, target: str) -> str:
    return f"| {name} | {value} {unit} | {target} |"


def main() -> int:
    """Run the benchmarks and report."""
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    results["planner_checks"] = planner_checks.measure()
    results["planner_load"] = planner_load.run(ADMIN_DSN)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    checks = results["planner_checks"]
    load = results["planner_load"]
    lines = ["| figure | measured | target |", "|---|---|---|"]
    for key, fig in checks.items():
        lines.append(
            _row(
                key.replace("_ms", ""),
                f"median {fig['median']} p99 {fig['p99']}",
                "ms",
                f"median < {fig['target_median']} ms",
            )
        )
    lines.append(
        _row(
            "POST /v1/plans (template, persisted)", load["plans_per_s"], "plans/s", ">= 500 plans/s"
        )
    )
    lines.append(
        _row("POST /v1/plans latency", f"p50 {load['p50_ms']} p99 {load['p99_ms']}", "ms", "-")
    )
    print("\n".join(lines))
    print(f"\nwritten {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
