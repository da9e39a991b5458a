"""The R16 history checker (RELIABILITY §2): Jepsen-style invariants over recorded run events.

Instead of asserting a few end states, a fault test records everything (every run event in
``executor.run_events``, every request the recording sink saw) and checks the whole history:

* per run, ``seq`` is ``1..n`` with no gap and no duplicate, ``run.created`` (or
  ``run.refused``) comes first, and nothing follows a terminal run event;
* step events only move a step along ``LEGAL_STEP_TRANSITIONS`` (so no ``succeeded ->
  running``: a checkpointed step is never run again), a step's starts carry increasing
  attempt numbers, and step events are written only while a worker holds the run's lease
  (``step.resolved``, an operator's decision, excepted);
* no step starts (or leaves ``blocked``) before each of its dependencies is succeeded or
  skipped; ``run.succeeded`` only when every step is;
* at the receiving end, every effect (an ``Idempotency-Key`` the sink acted on) belongs to
  a step that has a ``step.started`` event with that key and a ``step.succeeded`` event, and
  no (run, step) nor key made two effects ("no event lost", "effect count = 1").

A ``run.replanned`` event switches the run to another plan version: removed steps are
forgotten, fresh ones start over, carried ones keep their state, and dependencies are read
from that version's graph (when it is known: ``RunHistory.earlier``).

The checker is pure: ``check_history`` / ``check_effects`` take plain values and return the
``Violation`` list (empty when the history is legal); ``load_histories`` reads them from the
executor (and planner) tables; ``assert_legal`` fails a test with every violation listed.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from executor_service.domain.states import (
    DONE_FOR_DEPENDANTS,
    LEGAL_STEP_TRANSITIONS,
    TERMINAL_RUN,
    StepStatus,
)

S = StepStatus
Graph = Mapping[str, Sequence[str]]
"""Step id -> ids of the steps it depends on (every step of the plan version is a key)."""

STEP_EVENT_TARGETS: dict[str, StepStatus] = {
    "step.started": S.RUNNING,
    "step.succeeded": S.SUCCEEDED,
    "step.failed": S.FAILED,
    "step.retry_scheduled": S.READY,
    "step.skipped": S.SKIPPED,
    "step.cancelled": S.CANCELLED,
    "step.needs_attention": S.NEEDS_ATTENTION,
    "approval.requested": S.AWAITING_APPROVAL,
    "approval.granted": S.READY,
    "approval.rejected": S.FAILED,
    "compensation.started": S.COMPENSATING,
    "compensation.retry_scheduled": S.COMPENSATING,
    "compensation.recovered": S.COMPENSATING,
    "compensation.succeeded": S.COMPENSATED,
    "compensation.failed": S.SUCCEEDED,  # given up: the effect stands
    "compensation.needs_attention": S.NEEDS_ATTENTION,
}
"""The status each step event moves its step to (the engine's ``StepChange.event`` and
``RunDriver.move``). ``step.resolved`` (an operator) names its target in ``payload.status``.

A step event (``step.*``, ``approval.*``, ``compensation.*``) of another type is reported
(``unknown_event``): extend this map when the engine gains one, so no transition goes
unchecked."""

STEP_EVENT_PREFIXES = ("step.", "approval.", "compensation.")
OPERATOR_STEP_EVENTS = frozenset({"step.resolved"})
"""Step events an operator writes through the API, without holding the run's lease."""
LEASE_ENDING_EVENTS = frozenset(
    {"run.released", "run.paused", "run.needs_attention", "run.dead_lettered"}
    | {f"run.{status.value}" for status in TERMINAL_RUN}
)
"""Run events after which the run has no lease holder until the next ``run.leased``."""
FIRST_EVENTS = frozenset({"run.created", "run.refused"})
ENDING_EVENTS = frozenset({f"run.{status.value}" for status in TERMINAL_RUN} | {"run.refused"})


@dataclass(frozen=True)
class Violation:
    """One broken invariant."""

    kind: str
    """Stable name: ``seq_gap``, ``bad_first_event``, ``event_after_end``, ``unknown_step``,
    ``unknown_event``, ``outside_lease``, ``illegal_transition``, ``succeeded_rerun``,
    ``started_before_deps``, ``attempt_not_increasing``, ``run_succeeded_unfinished``,
    ``effect_unknown_key``, ``effect_without_success``, ``duplicate_effect``."""
    run_id: str
    message: str
    step_id: str | None = None
    seq: int | None = None

    def __str__(self) -> str:
        where = f"run {self.run_id}"
        if self.step_id is not None:
            where += f" step {self.step_id}"
        if self.seq is not None:
            where += f" seq {self.seq}"
        return f"[{self.kind}] {where}: {self.message}"


@dataclass(frozen=True)
class RunHistory:
    """A run's recorded events and the dependency graph of its plan."""

    run_id: str
    events: Sequence[Mapping[str, Any]]
    """Rows of ``executor.run_events``: ``seq``, ``type``, ``step_id``, ``attempt``,
    ``payload`` (a dict); any order (the checker sorts by ``seq``)."""
    depends_on: Graph
    """The graph of the run's current plan version."""
    plan_version: int | None = None
    """The current plan version (None: the run was never replanned, or it is not known)."""
    earlier: Mapping[int, Graph] = field(default_factory=dict)
    """Graphs of earlier plan versions the run was on before a ``run.replanned``."""

    def graph(self, version: Any) -> Graph | None:
        """The graph of plan ``version``; None when it is not known.

        Without ``plan_version``, the current version is the one the last ``run.replanned``
        event moved to (or the first one, when there is no replan).
        """
        current = self.plan_version
        if current is None:
            replans = [e for e in self.events if e["type"] == "run.replanned"]
            if replans:
                last = max(replans, key=lambda e: int(e["seq"]))
                current = (last.get("payload") or {}).get("to_version")
        if current is None or version is None or int(version) == int(current):
            return self.depends_on
        return self.earlier.get(int(version))


@dataclass
class _Run:
    """The state a replay of one run's events keeps."""

    history: RunHistory
    graph: Graph | None
    """Graph of the plan version the run is on; None when not known (checks relaxed)."""
    out: list[Violation] = field(default_factory=list)
    status: dict[str, StepStatus] = field(default_factory=dict)
    last_attempt: dict[str, int] = field(default_factory=dict)
    leased: bool = False

    def flag(self, kind: str, message: str, event: Mapping[str, Any] | None = None) -> None:
        step_id = None if event is None else event.get("step_id")
        seq = None if event is None else event.get("seq")
        self.out.append(Violation(kind, self.history.run_id, message, step_id, seq))

    def initial(self, step_id: str) -> StepStatus:
        deps = self.graph.get(step_id, ()) if self.graph is not None else ("?",)
        return S.BLOCKED if deps else S.READY

    def pending_deps(self, step_id: str) -> list[str]:
        """The dependencies of ``step_id`` that are not succeeded or skipped."""
        if self.graph is None:
            return []
        return [
            dep
            for dep in self.graph.get(step_id, ())
            if self.status.get(dep) not in DONE_FOR_DEPENDANTS
        ]


def check_history(history: RunHistory) -> list[Violation]:
    """Check one run's events; returns the violations, empty when the history is legal."""
    events = sorted(history.events, key=lambda e: int(e["seq"]))
    created = next((e for e in events if e["type"] == "run.created"), None)
    version = (created.get("payload") or {}).get("version") if created is not None else None
    run = _Run(history, history.graph(version))
    if run.graph is not None:
        run.status = {sid: run.initial(sid) for sid in run.graph}
    seqs = [int(e["seq"]) for e in events]
    if seqs != list(range(1, len(seqs) + 1)):
        duplicates = sorted(s for s, n in Counter(seqs).items() if n > 1)
        missing = sorted(set(range(1, max(seqs, default=0) + 1)) - set(seqs))
        run.flag("seq_gap", f"seq is not 1..n: missing {missing}, duplicated {duplicates}")
    if events and events[0]["type"] not in FIRST_EVENTS:
        run.flag("bad_first_event", f"first event is {events[0]['type']}", events[0])
    ended: Mapping[str, Any] | None = None
    for event in events:
        if ended is not None:
            run.flag("event_after_end", f"{event['type']} after {ended['type']}", event)
        kind = str(event["type"])
        if kind in ENDING_EVENTS:
            ended = event
        if kind.startswith(STEP_EVENT_PREFIXES):
            _step_event(run, event)
        elif kind.startswith("run."):
            _run_event(run, event)
    return run.out


def _run_event(run: _Run, event: Mapping[str, Any]) -> None:
    kind = str(event["type"])
    if kind == "run.leased":
        run.leased = True
    elif kind in LEASE_ENDING_EVENTS:
        run.leased = False
    if kind == "run.replanned":
        _replanned(run, event.get("payload") or {})
    if kind == "run.succeeded":
        unfinished = sorted(
            sid for sid, status in run.status.items() if status not in DONE_FOR_DEPENDANTS
        )
        if unfinished:
            states = {sid: run.status[sid].value for sid in unfinished}
            run.flag("run_succeeded_unfinished", f"steps not done: {states}", event)


def _replanned(run: _Run, payload: Mapping[str, Any]) -> None:
    """Switch to the new version: removed steps go, fresh ones start over, carried ones stay."""
    run.graph = run.history.graph(payload.get("to_version"))
    for step_id in payload.get("removed") or ():
        run.status.pop(str(step_id), None)
    for step_id in payload.get("fresh") or ():
        run.status[str(step_id)] = run.initial(str(step_id))
    if run.graph is not None:
        for step_id in run.graph:
            run.status.setdefault(step_id, run.initial(step_id))


def _target(event: Mapping[str, Any]) -> StepStatus | None:
    """Where a step event moves its step; None for an unknown event."""
    kind = str(event["type"])
    if kind in OPERATOR_STEP_EVENTS:
        raw = (event.get("payload") or {}).get("status")
        return StepStatus(raw) if raw in {s.value for s in StepStatus} else None
    return STEP_EVENT_TARGETS.get(kind)


def _step_event(run: _Run, event: Mapping[str, Any]) -> None:
    step_id = str(event["step_id"])
    kind = str(event["type"])
    target = _target(event)
    if target is None:
        run.flag("unknown_event", f"unknown step event {kind}", event)
        return
    if step_id not in run.status:
        if run.graph is not None:
            run.flag("unknown_step", f"{kind} for a step the plan does not have", event)
            return
        run.status[step_id] = S.BLOCKED  # a plan version whose graph is not known
    if not run.leased and kind not in OPERATOR_STEP_EVENTS:
        run.flag("outside_lease", f"{kind} written while no worker held the lease", event)
    before = run.status[step_id]
    promoted = before is S.BLOCKED and (S.BLOCKED, target) not in LEGAL_STEP_TRANSITIONS
    if promoted or kind == "step.started":
        # The driver promotes blocked -> ready in memory (no event) once the deps are done.
        before = S.READY if promoted else before
        waiting = run.pending_deps(step_id)
        if waiting:
            run.flag("started_before_deps", f"{kind} while {waiting} not done", event)
    if (before, target) not in LEGAL_STEP_TRANSITIONS:
        rerun = before is S.SUCCEEDED and target is S.RUNNING
        name = "succeeded_rerun" if rerun else "illegal_transition"
        run.flag(name, f"{before.value} -> {target.value} on {kind}", event)
    if kind == "step.started" and event.get("attempt") is not None:
        attempt = int(event["attempt"])
        previous = run.last_attempt.get(step_id, 0)
        if attempt <= previous:
            run.flag("attempt_not_increasing", f"attempt {attempt} after {previous}", event)
        run.last_attempt[step_id] = attempt
    run.status[step_id] = target


def check_effects(histories: Iterable[RunHistory], effect_keys: Iterable[str]) -> list[Violation]:
    """Match the effects the sink made (one ``Idempotency-Key`` per effect) to run events.

    Only step actions are matched (their ``step.started`` events carry the key); leave the
    effects of compensation calls out of ``effect_keys``.

    Args:
        histories: The runs that may have made the effects.
        effect_keys: The key of every effect the sink made, one entry per effect (a key
            listed twice is two effects).

    Returns:
        ``effect_unknown_key`` for a key no ``step.started`` event carried (an event lost),
        ``effect_without_success`` for a step with an effect but no ``step.succeeded``, and
        ``duplicate_effect`` for a key, or a (run, step), with more than one effect.
    """
    owners: dict[str, set[tuple[str, str]]] = defaultdict(set)
    succeeded: set[tuple[str, str]] = set()
    for history in histories:
        for event in history.events:
            step_id = event.get("step_id")
            if step_id is None:
                continue
            payload = event.get("payload") or {}
            if event["type"] == "step.started" and payload.get("idempotency_key"):
                owners[str(payload["idempotency_key"])].add((history.run_id, str(step_id)))
            elif event["type"] == "step.succeeded":
                succeeded.add((history.run_id, str(step_id)))
    out: list[Violation] = []
    keys_of_step: dict[tuple[str, str], list[str]] = defaultdict(list)
    for key, count in sorted(Counter(effect_keys).items()):
        steps = owners.get(key)
        if not steps:
            out.append(Violation("effect_unknown_key", "?", f"no step.started carried {key}"))
            continue
        for run_id, step_id in sorted(steps):
            keys_of_step[(run_id, step_id)].append(key)
            if (run_id, step_id) not in succeeded:
                message = f"an effect for key {key} but no step.succeeded"
                out.append(Violation("effect_without_success", run_id, message, step_id))
        if count > 1:
            run_id, step_id = min(steps)
            message = f"{count} effects for key {key}"
            out.append(Violation("duplicate_effect", run_id, message, step_id))
    for (run_id, step_id), keys in sorted(keys_of_step.items()):
        if len(keys) > 1:
            message = f"effects under {len(keys)} different keys: {keys}"
            out.append(Violation("duplicate_effect", run_id, message, step_id))
    return out


def check_histories(
    histories: Iterable[RunHistory], effect_keys: Iterable[str] = ()
) -> list[Violation]:
    """``check_history`` of every run, then ``check_effects`` over all of them."""
    runs = list(histories)
    out = [v for history in runs for v in check_history(history)]
    return out + check_effects(runs, effect_keys)


def assert_legal(histories: Iterable[RunHistory], effect_keys: Iterable[str] = ()) -> None:
    """Fail with every violation listed (at most 50 shown) when the histories are not legal.

    Raises:
        AssertionError: when ``check_histories`` finds a violation.
    """
    violations = check_histories(histories, effect_keys)
    if violations:
        shown = "\n".join(str(v) for v in violations[:50])
        raise AssertionError(f"{len(violations)} history violations:\n{shown}")


def _graph(plan: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    return {s["id"]: tuple(s.get("depends_on") or ()) for s in plan["steps"]}


async def load_histories(
    conn: asyncpg.Pool | asyncpg.Connection, run_ids: Iterable[uuid.UUID] | None = None
) -> list[RunHistory]:
    """Read runs' events and plan graphs from the executor tables.

    Graphs of plan versions a run left through a replan are read from
    ``planner.plan_versions`` (same database) when there. ``conn`` must decode ``jsonb``
    (``planexec.db.pg.create_pool`` does); ``run_ids`` None means every run.
    """
    ids = None if run_ids is None else [str(r) for r in run_ids]
    runs = await conn.fetch(
        "SELECT r.run_id, r.plan, r.plan_version,"
        " (SELECT coalesce(jsonb_object_agg(v.version::text, v.body), '{}')"
        "  FROM planner.plan_versions v WHERE v.tenant = r.tenant AND v.plan_id = r.plan_id"
        "  AND v.version <> r.plan_version) AS earlier"
        " FROM executor.runs r WHERE $1::uuid[] IS NULL OR r.run_id = ANY($1::uuid[])",
        ids,
    )
    events = await conn.fetch(
        "SELECT run_id, seq, type, step_id, attempt, payload, at FROM executor.run_events"
        " WHERE $1::uuid[] IS NULL OR run_id = ANY($1::uuid[]) ORDER BY run_id, seq",
        ids,
    )
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in events:
        by_run[str(row["run_id"])].append(dict(row))
    return [
        RunHistory(
            run_id=str(row["run_id"]),
            events=by_run.get(str(row["run_id"]), []),
            depends_on=_graph(row["plan"]),
            plan_version=int(row["plan_version"]),
            earlier={int(v): _graph(body) for v, body in row["earlier"].items()},
        )
        for row in runs
    ]
