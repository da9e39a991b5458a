"""The demo intents, submitted through the public APIs, with their runs followed live."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx2

from .crash import WorkerCrash
from .preview import dry_run
from .stack import DemoKeys, DemoStack

EventHook = Callable[[dict[str, Any]], None]
"""Called with each run event (the SSE ``data`` object) after it is printed."""


@dataclass(frozen=True)
class Intent:
    """One demo intent and the outcome it must have."""

    title: str
    intent: str
    expect: str
    """``succeeded`` (the run), ``rejected`` (the plan, by policy) or ``compensated`` (the run
    failed and every completed step with a compensation was undone)."""
    context: dict[str, Any] | None = None
    kind: Literal["execute", "worker_crash", "dry_run"] = "execute"
    """``execute``: plan with ``options.execute`` and follow the run the dispatch creates;
    ``worker_crash``: the same, killing the worker that drives the run midway (``crash.py``);
    ``dry_run``: plan without executing, then start a dry run of the plan version."""
    backend: str | None = None
    """The planner backend to ask for (``template`` where the scenario needs an exact plan
    shape); None: the planner's default."""


def intents(stack: DemoStack) -> list[Intent]:
    """The demo intents, in order."""
    repo = str(stack.repo)
    summary = f"summarise the last 5 commits of {repo} and post the summary to the webhook"
    return [
        Intent(
            "Summarise the last commits and post the summary to the team webhook",
            summary,
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
        Intent(
            "Kill the worker driving a run (SIGKILL); the other worker takes the run over",
            "process the nightly batch 2026-11-05 (the job takes 3 s)",
            "succeeded",
            kind="worker_crash",
            backend="template",
        ),
        Intent(
            "Book the team offsite; the deposit payment fails, so the reservations are undone",
            "book the team offsite on 2026-12-04 (the payment answers 402)",
            "compensated",
            backend="template",
        ),
        Intent(
            "Dry run of intent 1: outputs simulated, nothing called, no approval asked",
            summary,
            "succeeded",
            kind="dry_run",
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
        """Run every intent; True when every outcome was the expected one.

        The worker crash needs a stack that runs its own workers: against another one
        (``--external``) it is skipped and not counted.
        """
        results = []
        for n, item in enumerate(intents(self.stack), start=1):
            self.say(f"\n━━ {n}. {item.title}")
            if item.kind == "worker_crash" and not self.stack.runs_workers:
                self.say("   skipped: the workers run elsewhere; `make demo` kills one of its own")
                continue
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
        if item.kind == "dry_run":
            return dry_run(self, item)
        plan = self.submit(item, execute=True)
        if plan is None:
            return "error"
        if plan["status"] != "ready":
            return "rejected"
        run_id = self.wait_for_run(plan["plan_id"])
        if run_id is None:
            self.say("   no run was created within 60 s")
            return "error"
        if item.kind == "worker_crash":
            return WorkerCrash(self, plan).follow(run_id)
        outcome = self.follow(run_id)
        if outcome in ("failed", "compensated"):
            self.print_steps(run_id)
        return outcome

    def submit(self, item: Intent, *, execute: bool) -> dict[str, Any] | None:
        """Plan ``item`` (queued for execution when ``execute``) and print the plan."""
        body: dict[str, Any] = {"intent": item.intent, "options": {"execute": execute}}
        if item.context:
            body["context"] = item.context
        if item.backend:
            body["backend"] = item.backend
        response = self.client.post(
            f"{self.stack.planner_url}/v1/plans",
            json=body,
            headers={"X-API-Key": self.keys.submitter},
        )
        if response.status_code != 201:
            self.say(f"   planner answered {response.status_code}: {response.text[:300]}")
            return None
        plan: dict[str, Any] = response.json()
        self.print_plan(plan)
        return plan

    def print_plan(self, plan: dict[str, Any]) -> None:
        """Print the plan's steps, tools, policy decisions and compensations."""
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
            undo = step.get("compensation")
            if undo:
                self.say(f"       undone by {undo['tool']} {json.dumps(undo['args'])}")
        for issue in plan["validation"]["issues"]:
            self.say(f"     ! {issue['code']}: {issue['message']}")

    def get_run(self, run_id: str) -> dict[str, Any]:
        """``GET /v1/runs/{id}``: the run with its steps, attempts and lease owner."""
        response = self.client.get(
            f"{self.stack.executor_url}/v1/runs/{run_id}",
            headers={"X-API-Key": self.keys.submitter},
        )
        response.raise_for_status()
        run: dict[str, Any] = response.json()
        return run

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

    def follow(
        self, run_id: str, *, approve: bool = True, on_event: EventHook | None = None
    ) -> str:
        """Print the run's timeline from its event stream; approve a gate when one opens.

        Returns the outcome: the run's final status, ``compensated`` for a failed run whose
        completed steps were all undone, or ``paused`` when a gate opens and ``approve`` is
        false.
        """
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
                    if on_event is not None:
                        on_event(event)
                    if status == "paused" and approve:
                        self.approve(run_id)
                    elif status is not None:
                        return status

    def worker_name(self, worker_id: str) -> str:
        """``worker-2`` for a worker of this stack, else the id (``<host>:<pid>:<suffix>``)."""
        process = self.stack.worker_of(worker_id)
        return process.name if process is not None else worker_id

    def print_event(
        self, event: dict[str, Any], started: dict[tuple[str, int], float]
    ) -> str | None:
        """Print one run event; the run's status when the event ends or parks it."""
        kind = str(event["type"])
        at = event["at"][11:23]
        step = event["step_id"] or ""
        attempt = event["attempt"]
        payload = event["payload"]
        error = payload.get("error")
        why = f"  ({error['code']}: {error['message'][:60]})" if error else ""
        took = payload.get("duration_s")
        took_text = f"  {took:.3f} s" if isinstance(took, float) else ""
        if kind == "step.started":
            self.say(f"     {at}  {step:<10} attempt {attempt}  started")
        elif kind in ("step.succeeded", "step.failed", "step.retry_scheduled", "step.skipped"):
            status = kind.split(".", 1)[1].replace("_", " ")
            mode = f"  simulated ({payload['mode']})" if payload.get("mode") else ""
            self.say(f"     {at}  {step:<10} attempt {attempt}  {status}{took_text}{mode}{why}")
        elif kind == "approval.requested":
            self.say(f"     {at}  {step:<10} waits for an approval")
        elif kind == "approval.granted":
            self.say(f"     {at}  {step:<10} approved by {payload.get('by')}")
        elif kind == "run.leased" and payload.get("recovered"):
            worker = str(payload.get("worker"))
            name = self.worker_name(worker)
            label = worker if name == worker else f"{name} ({worker})"
            self.say(f"     {at}  run leased by {label}, recovered: true")
        elif kind == "compensation.started":
            self.say(f"     {at}  {step:<10} compensation started ({payload.get('tool')})")
        elif kind.startswith("compensation."):
            status = kind.split(".", 1)[1].replace("_", " ")
            self.say(f"     {at}  {step:<10} compensation {status}{took_text}{why}")
        elif kind in ("run.succeeded", "run.failed", "run.cancelled"):
            status = kind.split(".", 1)[1]
            failed = ", ".join(payload.get("failed_steps", []))
            undone = ", ".join(payload.get("compensated_steps", []))
            detail = f"  (failed: {failed}; compensated: {undone or 'none'})" if failed else ""
            self.say(f"     {at}  run {status}{detail}")
            if status == "failed" and undone and not payload.get("compensation_failed"):
                return "compensated"
            return status
        elif kind == "run.paused":
            return "paused"
        return None

    def print_steps(self, run_id: str) -> None:
        """Print where each step of a finished run ended (``compensated``, ``failed``, ...)."""
        run = self.get_run(run_id)
        status = {s["step_id"]: s["status"] for s in run["steps"]}
        order = [s["id"] for s in run["plan"]["steps"]]
        self.say("   steps: " + " · ".join(f"{sid} {status.get(sid, '?')}" for sid in order))

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
