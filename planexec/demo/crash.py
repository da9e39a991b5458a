"""The demo's crash recovery: SIGKILL the worker driving a run while a step is in flight.

The run's ``lease_owner`` (``GET /v1/runs/{id}``) names the worker that drives it,
``<host>:<pid>:<suffix>``; the demo kills that process, one of its stack's workers, as soon as
the run's first step has succeeded (the next step starts in the same commit, so it is in
flight). Nothing is released: the lease runs out (``stack.LEASE_TTL_S``) and the other worker
claims the run (event ``run.leased`` with ``recovered: true``), rebuilds its state from the
tables, does not run the succeeded step again, and makes the lost call again with the same
idempotency key (the demo's tools are idempotent). A replacement worker is started meanwhile.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from .stack import LEASE_TTL_S, Process

if TYPE_CHECKING:
    from .scenario import Demo


class WorkerCrash:
    """Follows one run and kills its worker once, after the first step succeeded."""

    def __init__(self, demo: Demo, plan: dict[str, Any]) -> None:
        """``plan``: the plan version as ``POST /v1/plans`` returned it."""
        self.demo = demo
        self.plan = plan
        self.killed: str | None = None
        """The lease owner that was killed."""
        self.done_before: set[str] = set()
        """Steps that had succeeded when the worker was killed."""
        self.in_flight: list[str] = []
        """Steps whose call was in flight on the killed worker."""
        self.taken_over_by: str | None = None
        """The worker of the ``run.leased`` event with ``recovered: true``."""
        self.replacement: Process | None = None
        self.error: str | None = None

    def follow(self, run_id: str) -> str:
        """Follow the run to its end, killing its worker midway; the outcome.

        ``succeeded`` only when the run succeeded after another worker recovered it and no
        step that had succeeded before the crash ran again; otherwise what went wrong.
        """
        outcome = self.demo.follow(run_id, on_event=lambda event: self._on_event(run_id, event))
        if self.replacement is not None:
            try:
                self.demo.stack.wait_ready(self.replacement)
            except RuntimeError as exc:
                self.error = f"the replacement worker did not start: {exc}"
            else:
                self.demo.say(f"     {self.replacement.name} is ready: two workers again")
        if self.error is not None:
            self.demo.say(f"   ! {self.error}")
            return "error"
        if outcome != "succeeded":
            return outcome
        return self._check(run_id)

    def _on_event(self, run_id: str, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "step.succeeded" and self.killed is None and self.error is None:
            self._kill(run_id)
        elif kind == "run.leased" and event["payload"].get("recovered"):
            self.taken_over_by = str(event["payload"].get("worker"))

    def _kill(self, run_id: str) -> None:
        say = self.demo.say
        run = self.demo.get_run(run_id)
        owner = run["lease_owner"]
        if owner is None:
            self.error = f"run {run_id} has no lease owner to kill (status {run['status']})"
            return
        self.done_before = {s["step_id"] for s in run["steps"] if s["status"] == "succeeded"}
        self.in_flight = [
            step["id"]
            for step in self.plan["steps"]
            if step["id"] not in self.done_before and set(step["depends_on"]) <= self.done_before
        ]
        try:
            worker = self.demo.stack.kill_worker(owner)
        except LookupError as exc:
            self.error = str(exc)
            return
        self.killed = owner
        say(
            f"     lease_owner {owner} is {worker.name};"
            f" {', '.join(self.in_flight) or 'no step'} in flight there"
        )
        say(f"     $ kill -9 {worker.proc.pid}   # SIGKILL: no drain, no lease release")
        say(
            f"     {worker.name} exited {worker.proc.returncode}; its lease runs out within"
            f" {LEASE_TTL_S:g} s"
        )
        self.replacement = self.demo.stack.start_worker()
        say(f"     started {self.replacement.name} (pid {self.replacement.proc.pid}) in its place")

    def _check(self, run_id: str) -> str:
        """Print the attempts and check the takeover; the outcome."""
        say = self.demo.say
        if self.killed is None:
            say("   ! the run ended before its worker could be killed")
            return "not killed"
        if self.taken_over_by in (None, self.killed):
            say("   ! no other worker recovered the run")
            return "not taken over"
        attempts = [a for a in self.demo.get_run(run_id)["attempts"] if a["kind"] == "action"]
        name = self.demo.worker_name
        say(
            "   attempts: "
            + " · ".join(
                f"{a['step_id']} #{a['attempt']} {a['status']} on {name(a['worker'] or '?')}"
                for a in attempts
            )
        )
        runs = Counter(a["step_id"] for a in attempts)
        again = sorted(s for s in self.done_before if runs[s] > 1)
        if again:
            say(f"   ! {', '.join(again)} succeeded before the crash and ran again")
            return "succeeded steps re-run"
        keys = {a["step_id"]: a["idempotency_key"] for a in attempts}
        lost = ", ".join(f"{s} (key {keys.get(s, '?')[:20]}…)" for s in self.in_flight)
        say(
            f"   {', '.join(sorted(self.done_before))} ran once, before the crash; the call lost"
            f" with {name(self.killed)} was made again by {name(self.taken_over_by or '?')}"
            f" with the same idempotency key: {lost}"
        )
        return "succeeded"
