"""A run's progress rebuilt from its events: pure state, no I/O, no rendering.

The event types are those the executor writes (DESIGN §6): ``run.created``, ``run.leased``,
``run.released``, ``run.paused``, ``run.needs_attention``, ``run.succeeded``, ``run.failed``,
``run.cancelled``, ``run.refused``; ``step.started``, ``step.succeeded``, ``step.failed``,
``step.retry_scheduled``, ``step.skipped``, ``step.cancelled``, ``step.needs_attention``,
``step.recovered``; ``approval.requested``, ``approval.granted``, ``approval.rejected``.
Unknown types are kept out of the state (a newer executor may add some) but still reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .models import RunDetail, RunEvent

TERMINAL_STEP_STATUSES = frozenset({"succeeded", "failed", "skipped", "cancelled", "compensated"})
"""Step statuses after which the step does nothing more."""
FINAL_RUN_EVENTS = {
    "run.succeeded": "succeeded",
    "run.failed": "failed",
    "run.cancelled": "cancelled",
    "run.refused": "failed",
}
"""Events that end a run, and the run status each leaves."""
RESTING_RUN_EVENTS = {"run.paused": "paused", "run.needs_attention": "needs_attention"}
"""Events after which a run waits for a person (an approver or an operator)."""
_RUN_EVENTS = {"run.created": "pending", "run.leased": "running", "run.released": "pending"}
_STEP_EVENTS = {
    "step.started": "running",
    "step.succeeded": "succeeded",
    "step.failed": "failed",
    "step.retry_scheduled": "retrying",
    "step.skipped": "skipped",
    "step.cancelled": "cancelled",
    "step.needs_attention": "needs_attention",
    "step.recovered": "ready",
    "approval.requested": "awaiting_approval",
    "approval.granted": "ready",
    # a rejection that skips the step (on_failure: skip) arrives as step.skipped instead
    "approval.rejected": "failed",
}


@dataclass
class StepProgress:
    """What is known of one step from the events seen so far."""

    step_id: str
    tool: str
    status: str = "blocked"
    attempt: int = 0
    """The latest attempt started (0 = not started)."""
    note: str = ""
    """The latest error, retry delay or approval, in words."""


def _error_text(error: Any) -> str:
    if not isinstance(error, dict):
        return ""
    code, message = error.get("code"), error.get("message")
    return ": ".join(str(p) for p in (code, message) if p)


@dataclass
class RunProgress:
    """A run's status and its steps, in plan order, folded from its events."""

    run_id: str
    steps: dict[str, StepProgress]
    status: str = "pending"
    last_seq: int = 0

    @classmethod
    def start(cls, run: RunDetail) -> RunProgress:
        """The state before the first event: every step of the pinned plan, not started."""
        steps = {s.id: StepProgress(s.id, s.tool) for s in run.plan.steps}
        return cls(run_id=str(run.run_id), steps=steps)

    @property
    def total(self) -> int:
        """Steps in the plan."""
        return len(self.steps)

    @property
    def finished(self) -> int:
        """Steps in a terminal status."""
        return sum(1 for s in self.steps.values() if s.status in TERMINAL_STEP_STATUSES)

    def apply(self, event: RunEvent) -> None:
        """Fold one event into the state; events at or below ``last_seq`` are ignored."""
        if event.seq <= self.last_seq:
            return
        self.last_seq = event.seq
        kind = event.type
        if kind in _RUN_EVENTS:
            self.status = _RUN_EVENTS[kind]
        elif kind in RESTING_RUN_EVENTS:
            self.status = RESTING_RUN_EVENTS[kind]
        elif kind in FINAL_RUN_EVENTS:
            self.status = FINAL_RUN_EVENTS[kind]
        step = self.steps.get(event.step_id) if event.step_id else None
        if step is None:
            return
        payload = event.payload
        if kind in _STEP_EVENTS:
            step.status = _STEP_EVENTS[kind]
        if kind == "step.started":
            step.attempt = event.attempt or step.attempt + 1
            step.note = ""
        step.note = _note(kind, payload) or step.note


def _note(kind: str, payload: dict[str, Any]) -> str:
    if kind == "step.retry_scheduled":
        delay = float(payload.get("delay_s", 0))
        return f"retry in {delay:.1f} s after {_error_text(payload.get('error'))}"
    if kind in ("step.failed", "step.skipped"):
        return _error_text(payload.get("error"))
    if kind == "step.needs_attention":
        return str(payload.get("reason", "outcome unknown"))
    if kind == "approval.requested":
        return "waiting for an approver"
    if kind in ("approval.granted", "approval.rejected"):
        verb = "approved" if kind == "approval.granted" else "rejected"
        comment = payload.get("comment")
        return f"{verb} by {payload.get('by', '?')}" + (f": {comment}" if comment else "")
    return ""


def event_line(event: RunEvent) -> str:
    """One plain line for an event, for logs and pipes.

    Shape: ``<seq> <type> <step or -> [attempt N] [note]``, e.g.
    ``   7  step.retry_scheduled    fetch             attempt 1  retry in 0.4 s after ...``.
    Durations are not derived from events: an idempotent step's ``started`` and outcome
    events are committed together (DESIGN §6 group commit), so their times coincide.
    """
    parts = [f"{event.seq:>4}", f"{event.type:<22}", f"{event.step_id or '-':<16}"]
    if event.attempt:
        parts.append(f"attempt {event.attempt}")
    note = _note(event.type, event.payload)
    if event.type in FINAL_RUN_EVENTS and event.payload.get("failed_steps"):
        note = "failed steps: " + ", ".join(str(s) for s in event.payload["failed_steps"])
    if note:
        parts.append(note)
    return "  ".join(parts).rstrip()
