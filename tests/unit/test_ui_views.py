"""The run screen's model: steps with their policy decisions, actions by role and state,
the attempts timeline, trace ids; plan diffs and display filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from executor_service.ui.plans import version_diff
from executor_service.ui.templating import duration, error_text, pretty_json
from executor_service.ui.views import actions_for, run_view, trace_id_of
from shared_schemas import Principal, Role

T0 = datetime(2026, 11, 26, 9, 0, 0, tzinfo=UTC)
TRACE = "0af7651916cd43dd8448eb211c80319c"


def who(*roles: Role) -> Principal:
    return Principal(tenant="acme", subject="s", roles=frozenset(roles))


def _run(status: str = "running", **steps: str) -> dict[str, Any]:
    plan_steps = [
        {"id": "a", "tool": "noop"},
        {
            "id": "b",
            "tool": "http.request",
            "depends_on": ["a"],
            "compensation": {"tool": "http.request", "args": {}},
        },
        {"id": "c", "tool": "noop", "depends_on": ["b"], "on_failure": "compensate"},
    ]
    return {
        "status": status,
        "created_at": T0,
        "finished_at": None,
        "traceparent": f"00-{TRACE}-b7ad6b7169203331-01",
        "plan": {"steps": plan_steps},
        "policy_decisions": [
            {"step_id": "a", "decision": "allow", "rule_ids": ["r.read"], "errors": []},
            {"step_id": "b", "decision": "require_approval", "rule_ids": ["r.gate", "r.w"]},
        ],
        "steps": [
            {"step_id": sid, "status": steps.get(sid, "blocked"), "attempts": 1}
            for sid in ("c", "a", "b")
        ],
        "attempts": [
            {
                "step_id": "a",
                "attempt": 1,
                "status": "succeeded",
                "started_at": T0 + timedelta(seconds=1),
                "finished_at": T0 + timedelta(seconds=2),
                "duration_s": 1.0,
                "error": None,
                "worker": "w1",
            },
            {
                "step_id": "b",
                "kind": "compensation",
                "attempt": 1,
                "status": "started",
                "started_at": T0 + timedelta(seconds=3),
                "finished_at": None,
                "duration_s": None,
                "error": None,
                "worker": "w1",
            },
        ],
    }


def test_steps_follow_the_plan_with_their_decisions_and_rules() -> None:
    view = run_view(_run(a="succeeded"), [{"seq": 7}], who(Role.SUBMITTER), T0 + timedelta(4))
    assert [s.id for s in view.steps] == ["a", "b", "c"]  # plan order, not row order
    a, b, c = view.steps
    assert (a.status, a.decision, a.rule_ids) == ("succeeded", "allow", ["r.read"])
    assert (b.decision, b.rule_ids, b.compensation_tool) == (
        "require_approval",
        ["r.gate", "r.w"],
        "http.request",
    )
    assert (c.decision, c.rule_ids, c.on_failure) == (None, [], "compensate")
    assert view.trace_id == TRACE and view.last_seq == 7 and not view.terminal
    assert {n.id: n.status for n in view.dag.nodes} == {
        "a": "succeeded",
        "b": "blocked",
        "c": "blocked",
    }


def test_the_timeline_places_attempts_from_the_runs_creation() -> None:
    now = T0 + timedelta(seconds=5)
    view = run_view(_run(), [], who(Role.OPERATOR), now)
    first, second = view.attempts
    assert view.timeline_s == pytest.approx(5.0)
    assert (first.offset_s, first.bar_x, first.bar_w) == (1.0, 0.2, 0.2)
    assert second.kind == "compensation"
    assert second.bar_x == pytest.approx(0.6) and second.bar_w == pytest.approx(0.4)  # in flight


@pytest.mark.parametrize(
    ("roles", "status", "step_states", "expected"),
    [
        ((Role.SUBMITTER,), "running", {}, {}),
        ((Role.OPERATOR,), "running", {}, {"cancel": True}),
        ((Role.OPERATOR,), "failed", {}, {"retry": True, "fork_steps": ["a", "b", "c"]}),
        ((Role.OPERATOR,), "succeeded", {}, {"fork_steps": ["a", "b", "c"]}),
        ((Role.OPERATOR,), "dead_letter", {}, {"cancel": True, "resume": True}),
        (
            (Role.OPERATOR,),
            "needs_attention",
            {"b": "needs_attention"},
            {"cancel": True, "resolve_steps": ["b"]},
        ),
        ((Role.APPROVER,), "paused", {"b": "awaiting_approval"}, {"approve_steps": ["b"]}),
        ((Role.SUBMITTER,), "paused", {"b": "awaiting_approval"}, {}),
        (
            (Role.ADMIN,),
            "paused",
            {"b": "awaiting_approval"},
            {"cancel": True, "approve_steps": ["b"]},
        ),
    ],
)
def test_actions_are_offered_by_role_and_run_state(
    roles: tuple[Role, ...], status: str, step_states: dict[str, str], expected: dict[str, Any]
) -> None:
    view = run_view(_run(status, **step_states), [], who(*roles), T0)
    actions = actions_for(who(*roles), view.run, view.steps)
    got = {
        k: v
        for k, v in vars(actions).items()
        if v  # only what is offered
    }
    assert got == expected
    assert actions.any is bool(expected)


def test_trace_ids_come_from_a_well_formed_traceparent_only() -> None:
    assert trace_id_of(f"00-{TRACE}-b7ad6b7169203331-01") == TRACE
    assert trace_id_of(None) is None
    assert trace_id_of("garbage") is None


def _version(n: int, expression: str) -> dict[str, Any]:
    return {
        "version": n,
        "status": "ready",
        "plan": {
            "version": n,
            "content_hash": f"sha256:{n}",
            "steps": [{"id": "size", "tool": "transform", "args": {"expression": expression}}],
        },
    }


def test_a_version_diff_shows_what_changed_and_not_the_per_version_fields() -> None:
    lines = version_diff(_version(1, "length(@)"), _version(2, "sort(@)"))
    kinds = [line.kind for line in lines]
    assert kinds[:3] == ["file", "file", "hunk"]
    assert [line.text for line in lines if line.kind == "add"] == [
        '+        "expression": "sort(@)"'
    ]
    assert [line.text for line in lines if line.kind == "del"] == [
        '-        "expression": "length(@)"'
    ]
    assert not any("content_hash" in line.text for line in lines)
    assert version_diff(_version(1, "x"), _version(2, "x")) == []


def test_display_filters() -> None:
    assert pretty_json(None) == "—"
    long = pretty_json({"a": "x" * 100}, limit=20)
    assert long.startswith('{\n  "a": "xxxxxxxx') and long.endswith("more characters)")
    assert [duration(v) for v in (None, 0.0042, 2.5, 184)] == [
        "—",
        "0.004 s",
        "2.50 s",
        "3 min 4 s",
    ]
    assert error_text({"code": "http_4xx", "message": "HTTP 402"}) == "http_4xx: HTTP 402"
    assert error_text(None) == ""
