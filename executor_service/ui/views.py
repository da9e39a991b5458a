"""View models of the run screen, built from ``RunQueries.get_run`` rows (pure functions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared_schemas import Principal, Role

from ..domain.states import TERMINAL_RUN
from .dag import Dag, DagStep, layout

TERMINAL = frozenset(s.value for s in TERMINAL_RUN)
FINISHED_FOR_RETRY = frozenset({"failed", "cancelled"})
"""Run statuses the console offers a retry (from the failed steps) for."""


@dataclass(frozen=True)
class StepView:
    """One step of the run as the console shows it."""

    id: str
    tool: str
    description: str | None
    status: str
    attempts: int
    depends_on: list[str]
    resolved_args: Any
    output: Any
    error: Any
    decision: str | None
    """The policy decision: ``allow``, ``require_approval`` or ``deny``."""
    rule_ids: list[str]
    """Cedar ``@id`` of the policies that decided."""
    policy_errors: list[str]
    args_hash: str | None
    gate_deadline: datetime | None
    compensation_tool: str | None
    on_failure: str
    first_started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class AttemptView:
    """One attempt (or compensation attempt) on the timeline."""

    step_id: str
    kind: str
    attempt: int
    status: str
    started_at: datetime
    finished_at: datetime | None
    duration_s: float | None
    error: Any
    worker: str | None
    offset_s: float
    """Seconds from the run's creation to the attempt's start."""
    bar_x: float
    """Start of the attempt's bar, as a fraction (0..1) of the timeline."""
    bar_w: float
    """Width of its bar, as a fraction of the timeline (at least a sliver)."""


@dataclass(frozen=True)
class Actions:
    """What the viewer may do to the run now (role and run state both allow it)."""

    cancel: bool = False
    retry: bool = False
    resume: bool = False
    fork_steps: list[str] = field(default_factory=list)
    """Steps a fork may start from (empty: no fork)."""
    resolve_steps: list[str] = field(default_factory=list)
    """Steps in ``needs_attention`` the viewer may decide."""
    approve_steps: list[str] = field(default_factory=list)
    """Steps waiting at a gate the viewer may decide (in the approvals inbox)."""

    @property
    def any(self) -> bool:
        """True when at least one action is offered."""
        return bool(
            self.cancel
            or self.retry
            or self.resume
            or self.fork_steps
            or self.resolve_steps
            or self.approve_steps
        )


@dataclass(frozen=True)
class RunView:
    """The run screen's model."""

    run: dict[str, Any]
    steps: list[StepView]
    attempts: list[AttemptView]
    dag: Dag
    trace_id: str | None
    actions: Actions
    events: list[dict[str, Any]]
    last_seq: int
    terminal: bool
    timeline_s: float
    """Length of the timeline, in seconds."""


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id (32 hex digits) of a W3C ``traceparent``; None when absent or malformed."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    if len(parts) != 4 or len(parts[1]) != 32:
        return None
    return parts[1]


def actions_for(principal: Principal, run: dict[str, Any], steps: list[StepView]) -> Actions:
    """The actions ``principal`` is offered on ``run`` (mirrors the API's role checks)."""
    status = run["status"]
    operator = principal.has_role(Role.OPERATOR)
    approver = principal.has_role(Role.APPROVER)
    finished = status in TERMINAL
    return Actions(
        cancel=operator and not finished,
        retry=operator and status in FINISHED_FOR_RETRY,
        resume=operator and status == "dead_letter",
        fork_steps=[s.id for s in steps] if operator and finished else [],
        resolve_steps=[s.id for s in steps if s.status == "needs_attention"] if operator else [],
        approve_steps=(
            [s.id for s in steps if s.status == "awaiting_approval"] if approver else []
        ),
    )


def _steps(run: dict[str, Any]) -> list[StepView]:
    rows = {s["step_id"]: s for s in run["steps"]}
    decisions = {d["step_id"]: d for d in run.get("policy_decisions") or []}
    views = []
    for step in run["plan"]["steps"]:
        row = rows.get(step["id"], {})
        decision = decisions.get(step["id"], {})
        compensation = step.get("compensation") or {}
        views.append(
            StepView(
                id=step["id"],
                tool=step["tool"],
                description=step.get("description"),
                status=row.get("status", "blocked"),
                attempts=row.get("attempts", 0),
                depends_on=list(step.get("depends_on") or []),
                resolved_args=row.get("resolved_args"),
                output=row.get("output"),
                error=row.get("error"),
                decision=decision.get("decision"),
                rule_ids=list(decision.get("rule_ids") or []),
                policy_errors=list(decision.get("errors") or []),
                args_hash=row.get("args_hash"),
                gate_deadline=row.get("gate_deadline"),
                compensation_tool=compensation.get("tool"),
                on_failure=step.get("on_failure", "fail"),
                first_started_at=row.get("first_started_at"),
                finished_at=row.get("finished_at"),
            )
        )
    return views


def _attempts(run: dict[str, Any], now: datetime) -> tuple[list[AttemptView], float]:
    start: datetime = run["created_at"]
    rows = run["attempts"]
    ends = [run.get("finished_at") or now]
    ends += [a["finished_at"] or now for a in rows]
    span = max(*((e - start).total_seconds() for e in ends), 0.001)
    views = []
    for a in rows:
        offset = max((a["started_at"] - start).total_seconds(), 0.0)
        length = ((a["finished_at"] or now) - a["started_at"]).total_seconds()
        views.append(
            AttemptView(
                step_id=a["step_id"],
                kind=a.get("kind", "action"),
                attempt=a["attempt"],
                status=a["status"],
                started_at=a["started_at"],
                finished_at=a["finished_at"],
                duration_s=a["duration_s"],
                error=a["error"],
                worker=a["worker"],
                offset_s=offset,
                bar_x=min(offset / span, 1.0),
                bar_w=max(min(length / span, 1.0 - offset / span), 0.004),
            )
        )
    return views, span


def run_view(
    run: dict[str, Any], events: list[dict[str, Any]], principal: Principal, now: datetime
) -> RunView:
    """The run screen's model of ``run`` (a ``RunQueries.get_run`` row) for ``principal``.

    ``events`` are the run's latest events, oldest first; ``now`` (timezone-aware) ends the
    bars of attempts still in flight.
    """
    steps = _steps(run)
    attempts, span = _attempts(run, now)
    dag = layout([DagStep(s.id, s.tool, s.depends_on, s.status) for s in steps])
    return RunView(
        run=run,
        steps=steps,
        attempts=attempts,
        dag=dag,
        trace_id=trace_id_of(run.get("traceparent")),
        actions=actions_for(principal, run, steps),
        events=events,
        last_seq=events[-1]["seq"] if events else 0,
        terminal=run["status"] in TERMINAL,
        timeline_s=span,
    )
