"""The demo's dry run: plan without executing, then preview the plan with simulated outputs.

``POST /v1/plans`` with ``options.execute: false`` stores a ready plan that nothing runs;
``POST /v1/runs {plan_id, version, mode: "dry_run"}`` runs it with every tool's output
simulated from its ``output_schema``: no tool is called and approval gates pass by
themselves. Each ``step.succeeded`` event says ``"mode": "dry_run"``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .scenario import Demo, Intent


def dry_run(demo: Demo, item: Intent) -> str:
    """Plan ``item`` without executing it, dry-run the plan and check nothing was called.

    Returns:
        ``succeeded`` when the dry run succeeded with every step simulated, no approval asked
        and no other run of the plan; else the run's status or what went wrong.
    """
    plan = demo.submit(item, execute=False)
    if plan is None:
        return "error"
    if plan["status"] != "ready":
        return "rejected"
    url = f"{demo.stack.executor_url}/v1/runs"
    body = {"plan_id": plan["plan_id"], "version": plan["version"], "mode": "dry_run"}
    demo.say(
        f"     $ curl -X POST {url} -H 'X-API-Key: $SUBMITTER_KEY'"
        f" -H 'Content-Type: application/json' -d '{json.dumps(body)}'"
    )
    response = demo.client.post(url, json=body, headers={"X-API-Key": demo.keys.submitter})
    if response.status_code != 201:
        demo.say(f"   executor answered {response.status_code}: {response.text[:300]}")
        return "error"
    run_id = response.json()["run_id"]
    events: list[dict[str, Any]] = []
    outcome = demo.follow(run_id, approve=False, on_event=events.append)
    if outcome != "succeeded":
        return outcome
    return _check(demo, plan, run_id, events)


def _check(demo: Demo, plan: dict[str, Any], run_id: str, events: list[dict[str, Any]]) -> str:
    """Check the dry run's events and the plan's runs; print what was simulated."""
    succeeded = [e for e in events if e["type"] == "step.succeeded"]
    real = [e["step_id"] for e in succeeded if e["payload"].get("mode") != "dry_run"]
    asked = [e["step_id"] for e in events if e["type"] == "approval.requested"]
    runs = demo.client.get(
        f"{demo.stack.executor_url}/v1/runs",
        params={"plan_id": plan["plan_id"]},
        headers={"X-API-Key": demo.keys.submitter},
    ).json()["items"]
    modes = sorted(str(r["mode"]) for r in runs)
    if real or asked or len(succeeded) != len(plan["steps"]) or modes != ["dry_run"]:
        demo.say(
            f"   ! not a pure dry run: steps not simulated {real}, approvals asked {asked},"
            f" runs of the plan by mode {modes}"
        )
        return "not simulated"
    first = plan["steps"][0]["id"]
    output = next(s["output"] for s in demo.get_run(run_id)["steps"] if s["step_id"] == first)
    demo.say(f"   {first}'s simulated output: {json.dumps(output)[:100]}")
    gated = ", ".join(s["id"] for s in plan["steps"] if s["requires_approval"]) or "none"
    demo.say(
        f"   nothing was called: {len(succeeded)} of {len(plan['steps'])} steps simulated from"
        f" their tools' output schemas, no approval asked (gated: {gated}), the plan's only"
        " run is this dry run"
    )
    return "succeeded"
