"""Validation + policy cost of one plan (issue 4: 100 steps < 5 ms, 1,000 steps < 50 ms median).

Plans are built from the demo catalog: a mix of read and write tools, chains and fan-outs,
and a ``$ref`` in every dependent step, so the validator does its full work.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from planner_service.catalog import parse_catalog
from planner_service.domain.policy import PolicyEngine
from planner_service.domain.validation import ValidationLimits, validate_plan
from shared_schemas import PlanDraft, Principal, Role

CATALOG_PATH = "planner_service/catalogs/demo.json"


def _plan(n: int) -> PlanDraft:
    steps: list[dict[str, Any]] = []
    for i in range(n):
        kind = i % 4
        deps = [f"s{i - 1}"] if i and kind != 0 else ([f"s{i - 4}"] if i >= 4 else [])
        if kind == 0:
            steps.append(
                {
                    "id": f"s{i}",
                    "tool": "time.get_current_time",
                    "args": {"timezone": "UTC"},
                    "depends_on": deps,
                }
            )
        elif kind == 1:
            steps.append(
                {
                    "id": f"s{i}",
                    "tool": "transform",
                    "args": {"data": {"$ref": f"{deps[0]}.output"}, "expression": "@"},
                    "depends_on": deps,
                }
            )
        elif kind == 2:
            steps.append(
                {
                    "id": f"s{i}",
                    "tool": "httpbin.post",
                    "args": {"body": {"$ref": f"{deps[0]}.output"}},
                    "depends_on": deps,
                }
            )
        else:
            steps.append(
                {
                    "id": f"s{i}",
                    "tool": "git.git_log",
                    "args": {"repo_path": "/srv/repo", "max_count": 5},
                    "depends_on": deps,
                }
            )
    return PlanDraft.model_validate({"steps": steps})


def measure(runs: int = 200) -> dict[str, Any]:
    """Median and p99 wall time (ms) of validate + policy for 100- and 1,000-step plans."""
    import json
    from pathlib import Path

    catalog = parse_catalog(json.loads(Path(CATALOG_PATH).read_text(encoding="utf-8")))
    tools = {t.name: t for t in catalog.tools}
    engine = PolicyEngine()
    principal = Principal(
        tenant="acme",
        subject="bench",
        roles=frozenset({Role.SUBMITTER}),
        scopes=frozenset({"webhook:post"}),
    )
    limits = ValidationLimits(max_steps=2000, max_depth=2000)
    out: dict[str, Any] = {}
    for n, count in ((100, runs), (1000, max(20, runs // 5))):
        draft = _plan(n)
        report = validate_plan(draft, tools, limits)
        assert report.valid, report.issues[:3]
        for memo in ("cold", "warm"):
            samples = []
            for _ in range(count):
                if memo == "cold":
                    engine.clear_memo()
                t0 = time.perf_counter()
                validate_plan(draft, tools, limits)
                engine.evaluate(draft.steps, tools, principal, safe_mode=False)
                samples.append((time.perf_counter() - t0) * 1000)
            samples.sort()
            out[f"validate_policy_{n}_steps_{memo}_ms"] = {
                "median": round(statistics.median(samples), 3),
                "p99": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 3),
                "runs": count,
                "target_median": 5.0 if n == 100 else 50.0,
            }
    return out


if __name__ == "__main__":
    print(measure())
