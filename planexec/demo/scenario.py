"""The demo intents, submitted through the public APIs, with their runs followed live."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx2

from .stack import DemoKeys, DemoStack


@dataclass(frozen=True)
class Intent:
    """One demo intent and the outcome it must have."""

    title: str
    intent: str
    expect: str
    """``succeeded`` (the run), or ``rejected`` (the plan, by policy)."""
    context: dict[str, Any] | None = None


def intents(stack: DemoStack) -> list[Intent]:
    """The demo intents, in order."""
    repo = str(stack.repo)
    return [
        Intent(
            "Summarise the last commits and post the summary to the team webhook",
            f"summarise the last 5 commits of {repo} and post the summary to the webhook",
            "succeeded",
        ),
        Intent(
            "Create a release branch",
            "create a release branch 1.0",
            "succeeded",
            {"repo_path": repo},
        ),
        Intent("Look up the time", "what time is it in Europe/Paris", "succeeded"),
        Intent(
            "Call a flaky upstream (503 two times in three) until it answers",
            "call the flaky upstream with codes 503,503,200",
            "succeeded",
        ),
        Intent(
            "Hard-reset the repository (policy denies it)",
            f"hard reset the repo at {repo}",
            "rejected",
        ),
    ]


class Demo:
    """Runs the intents against a started stack and checks each outcome."""

    def __init__(self, stack: DemoStack, keys: DemoKeys, out: Any) -> None:
        self.stack = stack
        self.keys = keys
        self.out = out
        self.client = httpx2.Client(timeout=30)

    def say(self, text: str = "") -> None:
        """Print one line of the demo transcript."""
        print(text, file=self.out, flush=True)

    def run_all(self) -> bool:
        """Run every intent; True when every outcome was the expected one."""
        results = []
        for n, item in enumerate(intents(self.stack), start=1):
            self.say(f"\n━━ {n}. {item.title}")
            self.say(f'   intent: "{item.intent}"')
            outcome = self.run_one(item)
            ok = outcome == item.expect
            results.append(ok)
            mark = "✔" if ok else "✘"
            self.say(f"   {mark} outcome: {outcome} (expected {item.expect})")
        passed = sum(results)
        self.say(f"\n{passed}/{len(results)} demo outcomes as expected")
        return all(results)

    def run_one(self, item: Intent) -> str:
        """Submit one intent and follow its run; the outcome (``succeeded``, ``rejected``, ...)."""
        body: dict[str, Any] = {"intent": item.intent, "options": {"execute": True}}
        if item.context:
            body["context"] = item.context
        response = self.client.post(
            f"{self.stack.planner_url}/v1/plans",
            json=body,
            headers={"X-API-Key": self.keys.submitter},
        )
        if response.status_code != 201:
            self.say(f"   planner answered {response.status_code}: {response.text[:300]}")
            return "error"
        plan = response.json()
        self.print_plan(plan)
        if plan["status"] != "ready":
            return "rejected"
        run_id = self.wait_for_run(plan["plan_id"])
        if run_id is None:
            self.say("   no run was created within 60 s")
            return "error"
        return self.follow(run_id)

    def print_plan(self, plan: dict[str, Any]) -> None:
        """Print the plan's steps, tools and policy decisions."""
        self.say(f"   plan {plan['plan_id']} v{plan['version']}: {plan['status']}")
        decisions = {d["step_id"]: d for d in plan["policy_decisions"]}
        for step in plan["steps"]:
            decision = decisions.get(step["id"], {})
            deps = f" after {','.join(step['depends_on'])}" if step["depends_on"] else ""
            rules = ",".join(decision.get("rule_ids", []))
            self.say(
                f"     - {step['id']:<10} {step['tool']:<24} {decision.get('decision', '?'):<17}"
                f" [{rules}]{deps}"
            )
        for issue in plan["validation"]["issues"]:
            self.say(f"     ! {issue['code']}: {issue['message']}")

    def wait_for_run(self, plan_id: str, timeout_s: float = 60.0) -> str | None:
        """The run id of a dispatched plan, once a worker created it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            runs = self.client.get(
                f"{self.stack.executor_url}/v1/runs",
                params={"plan_id": plan_id},
                headers={"X-API-Key": self.keys.submitter},
            ).json()["items"]
            if runs:
                run_id: str = runs[0]["run_id"]
                return run_id
            time.sleep(0.1)
        return None

    def follow(self, run_id: str) -> str:
        """Print the run's timeline from its event stream; approve a gate when one opens."""
        self.say(f"   run {run_id}")
        last = 0
        started: dict[tuple[str, int], float] = {}
        while True:
            headers = {"X-API-Key": self.keys.submitter, "Last-Event-ID": str(last)}
            url = f"{self.stack.executor_url}/v1/runs/{run_id}/events"
            with self.client.stream("GET", url, headers=headers, timeout=None) as stream:
                for line in stream.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    event = json.loads(line[5:])
                    last = event["seq"]
                    status = self.print_event(event, started)
                    if status == "paused":
                        self.approve(run_id)
                    elif status is not None:
                        return status

    def print_event(
        self, event: dict[str, Any], started: dict[tuple[str, int], float]
    ) -> str | None:
        """Print one run event; the run's status when the event ends or parks it."""
        kind = str(event["type"])
        at = event["at"][11:23]
        step = event["step_id"] or ""
        attempt = event["attempt"]
        payload = event["payload"]
        if kind == "step.started":
            self.say(f"     {at}  {step:<10} attempt {attempt}  started")
        elif kind in ("step.succeeded", "step.failed", "step.retry_scheduled", "step.skipped"):
            took = payload.get("duration_s")
            took_text = f"  {took:.3f} s" if isinstance(took, float) else ""
            status = kind.split(".", 1)[1].replace("_", " ")
            error = payload.get("error")
            why = f"  ({error['code']}: {error['message'][:60]})" if error else ""
            self.say(f"     {at}  {step:<10} attempt {attempt}  {status}{took_text}{why}")
        elif kind == "approval.requested":
            self.say(f"     {at}  {step:<10} waits for an approval")
        elif kind == "approval.granted":
            self.say(f"     {at}  {step:<10} approved by {payload.get('by')}")
        elif kind in ("run.succeeded", "run.failed", "run.cancelled"):
            self.say(f"     {at}  run {kind.split('.', 1)[1]}")
            return kind.split(".", 1)[1]
        elif kind == "run.paused":
            return "paused"
        return None

    def approve(self, run_id: str) -> None:
        """Approve every gate of the run as the demo's approver, printing the curl used."""
        run = self.client.get(
            f"{self.stack.executor_url}/v1/runs/{run_id}", headers={"X-API-Key": self.keys.approver}
        ).json()
        for step in run["steps"]:
            if step["status"] != "awaiting_approval":
                continue
            url = f"{self.stack.executor_url}/v1/runs/{run_id}/steps/{step['step_id']}/approval"
            body = {"decision": "approve", "comment": "looks right"}
            self.say(f"     resolved args: {json.dumps(step['resolved_args'])[:160]}")
            self.say(
                f"     $ curl -X POST {url} -H 'X-API-Key: $APPROVER_KEY'"
                f" -H 'Content-Type: application/json' -d '{json.dumps(body)}'"
            )
            response = self.client.post(url, json=body, headers={"X-API-Key": self.keys.approver})
            self.say(f"     → {response.status_code} {response.json().get('decision', '')}")
