"""Run and step states (DESIGN §6) and which transitions between them are legal."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """Where a run is."""

    PENDING = "pending"
    """Waiting for a worker to lease it."""
    RUNNING = "running"
    """Leased by a worker that drives its steps."""
    PAUSED = "paused"
    """Waiting for an approval; holds no lease."""
    NEEDS_ATTENTION = "needs_attention"
    """An operator must decide (e.g. a non-idempotent call may or may not have happened)."""
    DEAD_LETTER = "dead_letter"
    """Recovered too many times without progress (a poison step); an operator resumes it."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    """Where a step is."""

    BLOCKED = "blocked"
    """A dependency has not succeeded yet."""
    READY = "ready"
    """May start (or start again after a retryable failure)."""
    RUNNING = "running"
    """An attempt is in flight."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    AWAITING_APPROVAL = "awaiting_approval"
    """Waits for an approver's decision."""
    NEEDS_ATTENTION = "needs_attention"
    """The outcome of a non-idempotent attempt (or compensation) is unknown."""
    COMPENSATING = "compensating"
    """The run failed and this succeeded step's compensation is being run."""
    COMPENSATED = "compensated"
    CANCELLED = "cancelled"


TERMINAL_RUN = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
TERMINAL_STEP = frozenset(
    {
        StepStatus.SUCCEEDED,
        StepStatus.FAILED,
        StepStatus.SKIPPED,
        StepStatus.COMPENSATED,
        StepStatus.CANCELLED,
    }
)
DONE_FOR_DEPENDANTS = frozenset({StepStatus.SUCCEEDED, StepStatus.SKIPPED})
"""A dependant may start once each of its dependencies is in one of these."""

S = StepStatus
LEGAL_STEP_TRANSITIONS: frozenset[tuple[StepStatus, StepStatus]] = frozenset(
    {
        (S.BLOCKED, S.READY),
        (S.BLOCKED, S.CANCELLED),
        (S.BLOCKED, S.SKIPPED),
        (S.READY, S.RUNNING),
        (S.READY, S.SUCCEEDED),  # idempotent tools: started and finished in one commit
        (S.READY, S.FAILED),
        (S.READY, S.SKIPPED),
        (S.READY, S.READY),  # a retryable failure before the retry
        (S.READY, S.AWAITING_APPROVAL),
        (S.READY, S.CANCELLED),
        (S.RUNNING, S.SUCCEEDED),
        (S.RUNNING, S.FAILED),
        (S.RUNNING, S.SKIPPED),
        (S.RUNNING, S.READY),
        (S.RUNNING, S.NEEDS_ATTENTION),
        (S.RUNNING, S.CANCELLED),
        (S.AWAITING_APPROVAL, S.READY),
        (S.AWAITING_APPROVAL, S.FAILED),
        (S.AWAITING_APPROVAL, S.SKIPPED),
        (S.AWAITING_APPROVAL, S.CANCELLED),
        (S.NEEDS_ATTENTION, S.READY),
        (S.NEEDS_ATTENTION, S.SUCCEEDED),
        (S.NEEDS_ATTENTION, S.FAILED),
        (S.NEEDS_ATTENTION, S.CANCELLED),
        (S.NEEDS_ATTENTION, S.COMPENSATING),  # an operator retries a compensation
        (S.NEEDS_ATTENTION, S.COMPENSATED),  # an operator says the compensation happened
        (S.SUCCEEDED, S.COMPENSATING),
        (S.COMPENSATING, S.COMPENSATED),
        (S.COMPENSATING, S.COMPENSATING),  # a retryable compensation failure
        (S.COMPENSATING, S.SUCCEEDED),  # the compensation failed for good: the effect stands
        (S.COMPENSATING, S.NEEDS_ATTENTION),  # non-idempotent compensation, outcome unknown
    }
)
"""Every (from, to) pair the transition function may produce; a history checker uses it."""
