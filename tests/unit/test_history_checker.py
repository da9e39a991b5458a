"""The R16 history checker catches each kind of bad history, and passes a legal one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.history import (
    RunHistory,
    Violation,
    assert_legal,
    check_histories,
    check_history,
)

Event = dict[str, Any]
DEPENDS_ON = {"a": (), "b": ("a",), "c": ("a", "b")}


def ev(
    kind: str, step: str | None = None, attempt: int | None = None, key: str | None = None
) -> Event:
    """A run event; a ``step.started`` with ``key`` carries it as its idempotency key."""
    payload = {} if key is None else {"idempotency_key": key}
    return {"type": kind, "step_id": step, "attempt": attempt, "payload": payload}


def numbered(events: list[Event]) -> list[Event]:
    return [{**e, "seq": i} for i, e in enumerate(events, start=1)]


def legal_events() -> list[Event]:
    """a, then b (one retryable failure), a worker change, then c: every rule kept."""
    return numbered(
        [
            ev("run.created"),
            ev("run.leased"),
            ev("step.started", "a", 1, key="ka"),
            ev("step.succeeded", "a", 1),
            ev("step.started", "b", 1, key="kb"),
            ev("step.retry_scheduled", "b", 1),
            ev("step.started", "b", 2, key="kb"),
            ev("step.succeeded", "b", 2),
            ev("run.released"),
            ev("run.leased"),
            ev("step.started", "c", 1, key="kc"),
            ev("step.succeeded", "c", 1),
            ev("run.succeeded"),
        ]
    )


def history(events: list[Event], run_id: str = "r1") -> RunHistory:
    return RunHistory(run_id, events, DEPENDS_ON)


def kinds(violations: list[Violation]) -> set[str]:
    return {v.kind for v in violations}


def test_a_legal_history_with_its_effects_passes() -> None:
    assert check_histories([history(legal_events())], ["ka", "kb", "kc"]) == []
    assert_legal([history(legal_events())], ["ka", "kb", "kc"])


def test_order_of_the_rows_does_not_matter() -> None:
    assert check_history(history(list(reversed(legal_events())))) == []


def test_needs_attention_recovery_and_approval_paths_are_legal() -> None:
    events = numbered(
        [
            ev("run.created"),
            ev("run.leased"),
            ev("step.started", "a", 1, key="ka"),
            ev("run.leased"),  # the first worker died holding the lease
            ev("step.needs_attention", "a", 1),
            ev("run.needs_attention"),
        ]
    )
    assert check_history(history(events)) == []
    gated = numbered(
        [
            ev("run.created"),
            ev("run.leased"),
            ev("step.started", "a", 1),
            ev("step.succeeded", "a", 1),
            ev("approval.requested", "b"),
            ev("run.paused"),
            ev("run.leased"),
            ev("approval.granted", "b"),
            ev("step.started", "b", 1),
            ev("run.leased"),  # a worker died in b's call: a retry with the same key
            ev("step.retry_scheduled", "b", 1),
            ev("step.started", "b", 2),
            ev("step.succeeded", "b", 2),
            ev("step.started", "c", 1),
            ev("step.failed", "c", 1),
            ev("run.failed"),
        ]
    )
    assert check_history(history(gated)) == []


def test_compensation_operator_and_budget_events_are_legal() -> None:
    events = numbered(
        [
            ev("run.created"),
            ev("run.leased"),
            ev("step.started", "a", 1),
            ev("step.succeeded", "a", 1),
            ev("step.started", "b", 1),
            ev("step.succeeded", "b", 1),
            ev("run.budget_exceeded", "c"),  # a run event that names a step
            ev("compensation.started", "b"),
            ev("compensation.retry_scheduled", "b", 1),
            ev("compensation.succeeded", "b", 2),
            ev("compensation.started", "a"),
            ev("compensation.needs_attention", "a", 1),
            ev("run.needs_attention"),
            {**ev("step.resolved", "a"), "payload": {"status": "compensated"}},  # an operator
            ev("run.leased"),
            ev("run.failed"),
        ]
    )
    assert check_history(history(events)) == []
    resolved_badly = [
        {**e, "payload": {"status": "running"}} if e["type"] == "step.resolved" else e
        for e in events
    ]
    assert kinds(check_history(history(resolved_badly))) == {"illegal_transition"}


def test_a_replan_switches_the_graph() -> None:
    """v1 a -> b fails at b; v2 keeps a, drops b, adds x after a; x may start at once."""
    v1 = {"a": (), "b": ("a",)}
    v2 = {"a": (), "x": ("a",)}
    events = numbered(
        [
            {**ev("run.created"), "payload": {"version": 1}},
            ev("run.leased"),
            ev("step.started", "a", 1),
            ev("step.succeeded", "a", 1),
            ev("step.started", "b", 1),
            ev("step.failed", "b", 1),
            {
                **ev("run.replanned"),
                "payload": {"to_version": 2, "carried": ["a"], "fresh": ["x"], "removed": ["b"]},
            },
            ev("step.started", "x", 1),
            ev("step.succeeded", "x", 1),
            ev("run.succeeded"),
        ]
    )
    known = RunHistory("r1", events, v2, plan_version=2, earlier={1: v1})
    assert check_history(known) == []
    # Without the v1 graph the v1 part is checked more loosely, and still passes.
    assert check_history(RunHistory("r1", events, v2, plan_version=2)) == []
    assert check_history(RunHistory("r1", events, v2)) == []
    # Had the replan not happened, x would be a step the plan does not have.
    no_replan = [e for e in events if e["type"] != "run.replanned"]
    violations = check_history(RunHistory("r1", no_replan, v1, plan_version=1))
    assert "unknown_step" in kinds(violations)


def _drop(seq: int) -> Callable[[list[Event]], list[Event]]:
    return lambda events: [e for e in events if e["seq"] != seq]


def _insert(after: int, *new: Event) -> Callable[[list[Event]], list[Event]]:
    def mutate(events: list[Event]) -> list[Event]:
        plain = [{k: v for k, v in e.items() if k != "seq"} for e in events]
        return numbered(plain[:after] + list(new) + plain[after:])

    return mutate


def _swap(first: int, second: int) -> Callable[[list[Event]], list[Event]]:
    def mutate(events: list[Event]) -> list[Event]:
        plain = [{k: v for k, v in e.items() if k != "seq"} for e in events]
        plain[first - 1], plain[second - 1] = plain[second - 1], plain[first - 1]
        return numbered(plain)

    return mutate


def _c_runs_during_b(events: list[Event]) -> list[Event]:
    """c starts and succeeds while b is between attempts, under the first lease."""
    plain = [{k: v for k, v in e.items() if k != "seq"} for e in events]
    c_events = [e for e in plain if e["step_id"] == "c"]
    rest = [e for e in plain if e["step_id"] != "c"]
    return numbered(rest[:5] + c_events + rest[5:])


BAD_HISTORIES: dict[str, tuple[Callable[[list[Event]], list[Event]], set[str]]] = {
    "gap in seq": (_drop(9), {"seq_gap"}),
    "duplicate seq": (
        lambda events: [*events, {**events[-1], "type": "run.failed"}],
        {"seq_gap", "event_after_end"},
    ),
    "does not start with run.created": (_drop(1), {"seq_gap", "bad_first_event"}),
    "illegal transition running -> awaiting_approval": (
        _insert(3, ev("approval.requested", "a")),
        {"illegal_transition"},
    ),
    "illegal transition ready -> needs_attention": (
        _insert(4, ev("step.needs_attention", "b", 1)),
        {"illegal_transition"},
    ),
    "a succeeded step runs again": (
        _insert(8, ev("step.started", "a", 2, key="ka"), ev("step.succeeded", "a", 2)),
        {"succeeded_rerun"},
    ),
    "step started before its deps succeeded": (_c_runs_during_b, {"started_before_deps"}),
    "dependant leaves blocked early": (
        _insert(2, ev("approval.requested", "b"), ev("approval.granted", "b")),
        {"started_before_deps"},
    ),
    "step event with no lease held": (_swap(9, 8), {"outside_lease"}),
    "step event after the run ended": (
        _insert(13, ev("step.started", "c", 2)),
        {"event_after_end", "succeeded_rerun", "outside_lease"},
    ),
    "same attempt number started twice": (
        lambda events: [
            {**e, "attempt": 1} if e["type"] == "step.started" and e["step_id"] == "b" else e
            for e in events
        ],
        {"attempt_not_increasing"},
    ),
    "run succeeded with a step not done": (
        _swap(12, 13),
        {"run_succeeded_unfinished", "event_after_end", "outside_lease"},
    ),
    "event for a step the plan lacks": (_insert(4, ev("step.started", "zz", 1)), {"unknown_step"}),
    "unknown step event type": (_insert(4, ev("step.teleported", "a")), {"unknown_event"}),
}


@pytest.mark.parametrize("name", sorted(BAD_HISTORIES))
def test_each_bad_history_is_caught(name: str) -> None:
    mutate, expected = BAD_HISTORIES[name]
    violations = check_history(history(mutate(legal_events())))
    assert kinds(violations) == expected, [str(v) for v in violations]
    with pytest.raises(AssertionError, match=r"history violations"):
        assert_legal([history(mutate(legal_events()))])


def test_sink_effect_without_a_succeeded_event_is_caught() -> None:
    # c's call reached the sink, but its success was never recorded
    events = [e for e in legal_events() if e["seq"] < 12]
    violations = check_histories([history(events)], ["ka", "kb", "kc"])
    assert kinds(violations) == {"effect_without_success"}
    assert violations[0].step_id == "c"


def test_sink_effect_no_step_claims_is_caught() -> None:
    violations = check_histories([history(legal_events())], ["ka", "kb", "kc", "k-lost"])
    assert kinds(violations) == {"effect_unknown_key"}


def test_duplicate_effect_under_one_key_is_caught() -> None:
    violations = check_histories([history(legal_events())], ["ka", "kb", "kb", "kc"])
    assert kinds(violations) == {"duplicate_effect"}
    assert (violations[0].run_id, violations[0].step_id) == ("r1", "b")


def test_duplicate_effect_under_two_keys_of_one_step_is_caught() -> None:
    # b's retry went out with another key (its arguments changed): two effects for one step
    events = [
        {**e, "payload": {"idempotency_key": "kb2"}}
        if e["type"] == "step.started" and e["attempt"] == 2
        else e
        for e in legal_events()
    ]
    violations = check_histories([history(events)], ["ka", "kb", "kb2", "kc"])
    assert kinds(violations) == {"duplicate_effect"}
    assert violations[0].step_id == "b"


def test_effects_are_matched_across_runs() -> None:
    second = [
        {**e, "payload": {**e["payload"], "idempotency_key": e["payload"]["idempotency_key"] + "2"}}
        if e["type"] == "step.started"
        else e
        for e in legal_events()
    ]
    runs = [history(legal_events(), "r1"), history(second, "r2")]
    assert check_histories(runs, ["ka", "kb", "kc", "ka2", "kb2", "kc2"]) == []
    violations = check_histories(runs, ["ka", "kb", "kc", "ka2", "kb2", "kc2", "kc2"])
    assert [(v.kind, v.run_id, v.step_id) for v in violations] == [("duplicate_effect", "r2", "c")]
