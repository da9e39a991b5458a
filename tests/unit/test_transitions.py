"""The step transition function and the run scheduler (pure), with Hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from executor_service.domain.retry import backoff_s, retry_delay_s
from executor_service.domain.states import LEGAL_STEP_TRANSITIONS, RunStatus, StepStatus
from executor_service.domain.transitions import (
    ApprovalDecided,
    Cancel,
    Failed,
    Failure,
    Gate,
    IllegalTransitionError,
    OutcomeUnknown,
    StepState,
    Succeeded,
    schedule,
    transition,
)
from shared_schemas import RetryPolicy, Step

RETRYABLE = Failure("http_retryable", "503", retryable=True)
FINAL = Failure("http_4xx", "400", retryable=False)


def step(**kw: object) -> Step:
    return Step.model_validate({"id": "s", "tool": "noop", **kw})


def test_retryable_failure_is_retried_until_attempts_are_used_up() -> None:
    s = step(retry={"max_attempts": 3, "initial_backoff_s": 1, "jitter": "none"})
    first = transition(s, StepState(StepStatus.READY, 1), Failed(1, RETRYABLE), lambda: 0.5)
    assert (first.after, first.retry_in_s, first.fails_run) == (StepStatus.READY, 1.0, False)
    second = transition(s, StepState(StepStatus.READY, 2), Failed(2, RETRYABLE), lambda: 0.5)
    assert second.retry_in_s == 2.0
    last = transition(s, StepState(StepStatus.READY, 3), Failed(3, RETRYABLE), lambda: 0.5)
    assert (last.after, last.event, last.fails_run) == (StepStatus.FAILED, "step.failed", True)


def test_non_retryable_failure_is_final_unless_on_failure_is_retry() -> None:
    final = transition(step(), StepState(StepStatus.RUNNING, 1), Failed(1, FINAL), lambda: 0.5)
    assert final.after is StepStatus.FAILED
    retried = transition(
        step(on_failure="retry"), StepState(StepStatus.RUNNING, 1), Failed(1, FINAL), lambda: 0.5
    )
    assert retried.after is StepStatus.READY
    skipped = transition(
        step(on_failure="skip"), StepState(StepStatus.RUNNING, 1), Failed(1, FINAL), lambda: 0.5
    )
    assert (skipped.after, skipped.fails_run) == (StepStatus.SKIPPED, False)


def test_retry_after_is_a_lower_bound() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=1)
    assert retry_delay_s(policy, 1, 5.0, lambda: 0.99) == 5.0
    assert retry_delay_s(policy, 1, None, lambda: 0.5) == pytest.approx(0.05)
    assert retry_delay_s(policy, 3, None, lambda: 0.5) is None  # max_attempts 3 used up


@given(st.integers(1, 30), st.floats(0, 0.999999))
def test_full_jitter_stays_within_the_capped_exponential(attempt: int, r: float) -> None:
    policy = RetryPolicy(initial_backoff_s=0.5, max_backoff_s=30, multiplier=2)
    delay = backoff_s(policy, attempt, lambda: r)
    assert 0 <= delay <= min(30, 0.5 * 2 ** (attempt - 1))


def test_gate_approval_rejection_and_unknown_outcome() -> None:
    gated = transition(step(), StepState(StepStatus.READY), Gate(), lambda: 0)
    assert gated.after is StepStatus.AWAITING_APPROVAL
    ok = transition(
        step(), StepState(StepStatus.AWAITING_APPROVAL), ApprovalDecided(True, "boss"), lambda: 0
    )
    assert (ok.after, ok.event) == (StepStatus.READY, "approval.granted")
    no = transition(
        step(),
        StepState(StepStatus.AWAITING_APPROVAL),
        ApprovalDecided(False, "boss", "no"),
        lambda: 0,
    )
    assert (no.after, no.event, no.payload["by"]) == (
        StepStatus.FAILED,
        "approval.rejected",
        "boss",
    )
    lost = transition(step(), StepState(StepStatus.RUNNING, 1), OutcomeUnknown(1), lambda: 0)
    assert lost.after is StepStatus.NEEDS_ATTENTION


def test_illegal_transitions_are_bugs_not_data() -> None:
    with pytest.raises(IllegalTransitionError):
        transition(step(), StepState(StepStatus.SUCCEEDED, 1), Succeeded(1, {}), lambda: 0)
    with pytest.raises(IllegalTransitionError):
        transition(step(), StepState(StepStatus.FAILED, 1), Cancel(), lambda: 0)


OUTCOMES = st.one_of(
    st.builds(Succeeded, st.just(1), st.none()),
    st.builds(Failed, st.just(1), st.sampled_from([RETRYABLE, FINAL])),
    st.builds(ApprovalDecided, st.booleans(), st.just("x")),
    st.builds(OutcomeUnknown, st.just(1)),
    st.just(Gate()),
    st.just(Cancel()),
)


@given(st.sampled_from(list(StepStatus)), OUTCOMES, st.sampled_from(["fail", "retry", "skip"]))
def test_every_transition_produced_is_legal(
    status: StepStatus, outcome: object, on_failure: str
) -> None:
    try:
        change = transition(step(on_failure=on_failure), StepState(status, 1), outcome, lambda: 0.3)  # type: ignore[arg-type]
    except IllegalTransitionError:
        return
    assert (status, change.after) in LEGAL_STEP_TRANSITIONS


def _dag(n: int, edges: list[tuple[int, int]]) -> list[Step]:
    deps: dict[int, set[int]] = {i: set() for i in range(n)}
    for a, b in edges:
        lo, hi = sorted((a % n, b % n))
        if lo != hi:
            deps[hi].add(lo)
    return [
        Step(id=f"s{i}", tool="noop", depends_on=[f"s{d}" for d in sorted(deps[i])])
        for i in range(n)
    ]


@given(st.integers(1, 12), st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), max_size=30))
def test_scheduling_a_random_dag_to_the_end_respects_dependencies(
    n: int, edges: list[tuple[int, int]]
) -> None:
    steps = _dag(n, edges)
    states = {s.id: StepState(StepStatus.BLOCKED) for s in steps}
    finished: list[str] = []
    for _ in range(n + 1):
        plan = schedule(steps, states, set(), set(), set(), failed_run=False)
        if plan.run_status is not None:
            break
        for step_id in plan.start:
            deps = next(s for s in steps if s.id == step_id).depends_on
            assert all(d in finished for d in deps)
            states[step_id] = StepState(StepStatus.SUCCEEDED, 1)
            finished.append(step_id)
    assert plan.run_status is RunStatus.SUCCEEDED
    assert sorted(finished) == sorted(s.id for s in steps)


def test_a_failed_step_fails_the_run_and_a_gate_pauses_it() -> None:
    steps = [Step(id="a", tool="noop"), Step(id="b", tool="noop", depends_on=["a"])]
    failed = {"a": StepState(StepStatus.FAILED, 1), "b": StepState(StepStatus.BLOCKED)}
    assert (
        schedule(steps, failed, set(), set(), set(), failed_run=True).run_status is RunStatus.FAILED
    )
    gated_steps = [Step(id="a", tool="noop", requires_approval=True)]
    first = schedule(gated_steps, {"a": StepState(StepStatus.READY)}, set(), set(), set(), False)
    assert first.gate == ["a"] and first.start == []
    waiting = {"a": StepState(StepStatus.AWAITING_APPROVAL)}
    assert schedule(gated_steps, waiting, set(), set(), set(), False).run_status is RunStatus.PAUSED
    approved = schedule(gated_steps, {"a": StepState(StepStatus.READY)}, set(), set(), {"a"}, False)
    assert approved.start == ["a"]
