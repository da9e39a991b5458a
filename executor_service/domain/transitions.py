"""The one transition function of steps, and the scheduling decisions over a run.

Pure: a step's current state and an outcome go in, the change to apply (new status, the run
event to write, a retry delay, whether the run fails) comes out. The store applies changes and
writes their events in the same transaction; nothing else changes a status.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared_schemas import OnFailure, Step

from .retry import retry_delay_s
from .states import (
    DONE_FOR_DEPENDANTS,
    LEGAL_STEP_TRANSITIONS,
    TERMINAL_STEP,
    RunStatus,
    StepStatus,
)


class IllegalTransitionError(RuntimeError):
    """A transition outside ``LEGAL_STEP_TRANSITIONS`` was asked for: a bug, never data."""


@dataclass(frozen=True)
class Failure:
    """Why an attempt failed."""

    code: str
    """Stable code, e.g. ``http_4xx``, ``timeout``, ``output_invalid``, ``ref_unresolved``."""
    message: str
    """Human-readable explanation."""
    retryable: bool
    """Whether the same call may succeed later."""
    retry_after_s: float | None = None
    """A lower bound on the wait before retrying, from the tool (``Retry-After``)."""
    details: dict[str, Any] | None = None
    """More facts, e.g. ``{"heartbeat": <last heartbeat details>}`` for a heartbeat timeout."""

    def as_json(self) -> dict[str, Any]:
        """JSON form stored with the step and its events."""
        out: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
        }
        if self.retry_after_s is not None:
            out["retry_after_s"] = self.retry_after_s
        if self.details:
            out["details"] = self.details
        return out


@dataclass(frozen=True)
class StepState:
    """What the executor knows of one step."""

    status: StepStatus
    attempts: int = 0
    """Attempts started so far."""
    attempt_base: int = 0
    """Attempts made under an earlier plan version (a replan): the retry policy counts
    only the attempts after them."""


@dataclass(frozen=True)
class Succeeded:
    """An attempt returned an output that passed verification."""

    attempt: int
    output: Any


@dataclass(frozen=True)
class Failed:
    """An attempt failed."""

    attempt: int
    failure: Failure


@dataclass(frozen=True)
class ApprovalDecided:
    """An approver decided a gated step."""

    approved: bool
    by: str
    comment: str | None = None


@dataclass(frozen=True)
class OutcomeUnknown:
    """A non-idempotent attempt started but its outcome was never recorded (crash)."""

    attempt: int


@dataclass(frozen=True)
class Gate:
    """A step reached its approval gate."""


@dataclass(frozen=True)
class Cancel:
    """The run is cancelled."""


Outcome = Succeeded | Failed | ApprovalDecided | OutcomeUnknown | Gate | Cancel


@dataclass(frozen=True)
class StepChange:
    """What to apply for one outcome."""

    after: StepStatus
    event: str
    """Run event type to write, e.g. ``step.succeeded``."""
    payload: dict[str, Any] = field(default_factory=dict)
    retry_in_s: float | None = None
    """Wait before the next attempt (``after`` is ``ready``)."""
    fails_run: bool = False
    """The run cannot succeed any more."""


def _terminal_failure(step: Step, failure: dict[str, Any], event: str) -> StepChange:
    if step.on_failure is OnFailure.SKIP:
        return StepChange(StepStatus.SKIPPED, "step.skipped", {"error": failure})
    # The run fails; its driver then replans (``replan``) or runs the compensations of
    # the steps that succeeded (``fail`` and ``compensate``: a failed run is always undone).
    payload: dict[str, Any] = {"error": failure, "on_failure": step.on_failure.value}
    return StepChange(StepStatus.FAILED, event, payload, fails_run=True)


def transition(
    step: Step, state: StepState, outcome: Outcome, rand: Callable[[], float]
) -> StepChange:
    """The change ``outcome`` makes to ``step`` in ``state``.

    Raises:
        IllegalTransitionError: when the outcome does not apply to the state.
    """
    change = _decide(step, state, outcome, rand)
    if (state.status, change.after) not in LEGAL_STEP_TRANSITIONS:
        raise IllegalTransitionError(
            f"step {step.id}: {state.status} -> {change.after} on {type(outcome).__name__}"
        )
    return change


def _decide(
    step: Step, state: StepState, outcome: Outcome, rand: Callable[[], float]
) -> StepChange:
    if isinstance(outcome, Succeeded):
        return StepChange(StepStatus.SUCCEEDED, "step.succeeded", {"attempt": outcome.attempt})
    if isinstance(outcome, Failed):
        failure = outcome.failure
        may_retry = failure.retryable or step.on_failure is OnFailure.RETRY
        delay = (
            retry_delay_s(
                step.retry, outcome.attempt - state.attempt_base, failure.retry_after_s, rand
            )
            if may_retry
            else None
        )
        if delay is not None:
            payload = {"error": failure.as_json(), "attempt": outcome.attempt, "delay_s": delay}
            return StepChange(StepStatus.READY, "step.retry_scheduled", payload, retry_in_s=delay)
        return _terminal_failure(step, failure.as_json(), "step.failed")
    if isinstance(outcome, ApprovalDecided):
        decision = {"by": outcome.by, "comment": outcome.comment}
        if outcome.approved:
            return StepChange(StepStatus.READY, "approval.granted", decision)
        rejected = {"code": "approval_rejected", "message": "an approver rejected the step"}
        change = _terminal_failure(step, rejected, "approval.rejected")
        return StepChange(
            change.after, change.event, {**change.payload, **decision}, fails_run=change.fails_run
        )
    if isinstance(outcome, OutcomeUnknown):
        return StepChange(
            StepStatus.NEEDS_ATTENTION,
            "step.needs_attention",
            {"attempt": outcome.attempt, "reason": "non-idempotent call started, outcome unknown"},
        )
    if isinstance(outcome, Gate):
        return StepChange(StepStatus.AWAITING_APPROVAL, "approval.requested", {})
    return StepChange(StepStatus.CANCELLED, "step.cancelled", {})


@dataclass(frozen=True)
class Schedule:
    """What a run's driver should do next."""

    start: list[str]
    """Steps to start now (ready, dependencies done, no approval pending)."""
    gate: list[str]
    """Steps that just became ready but need an approval first."""
    run_status: RunStatus | None
    """The run's final or resting status when nothing is left to do, else None."""


def schedule(
    steps: Sequence[Step],
    states: Mapping[str, StepState],
    running: set[str],
    waiting: set[str],
    approved: set[str],
    failed_run: bool,
) -> Schedule:
    """Decide which steps start, which wait at a gate, and whether the run is done.

    Args:
        steps: The plan's steps.
        states: Current state per step id.
        running: Steps with an attempt in flight in this driver.
        waiting: Ready steps waiting out a retry delay.
        approved: Gated steps whose approval was granted.
        failed_run: A step failed for good: start nothing new.
    """
    start: list[str] = []
    gate: list[str] = []
    for step in steps:
        state = states[step.id]
        if step.id in running or step.id in waiting or failed_run:
            continue
        if state.status not in (StepStatus.BLOCKED, StepStatus.READY):
            continue
        if not all(states[d].status in DONE_FOR_DEPENDANTS for d in step.depends_on):
            continue
        if step.requires_approval and step.id not in approved:
            gate.append(step.id)
        else:
            start.append(step.id)
    if start or gate or running or waiting:
        return Schedule(start, gate, None)
    statuses = {states[s.id].status for s in steps}
    if failed_run or StepStatus.FAILED in statuses:
        return Schedule([], [], RunStatus.FAILED)
    if statuses <= TERMINAL_STEP:
        return Schedule([], [], RunStatus.SUCCEEDED)
    if StepStatus.NEEDS_ATTENTION in statuses:
        return Schedule([], [], RunStatus.NEEDS_ATTENTION)
    if StepStatus.AWAITING_APPROVAL in statuses:
        return Schedule([], [], RunStatus.PAUSED)
    # Steps blocked behind a failed or cancelled dependency cannot run: the run failed.
    return Schedule([], [], RunStatus.FAILED)
