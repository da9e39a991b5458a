"""Process-level fault tests R2, R5, R6, R12 and R13 of RELIABILITY §2.

Workers are real ``planexec worker`` processes; a test-only fault point
(``PLANEXEC_FAULT=<point>[:<step_id>]``) ends one with ``os._exit(137)`` at an exact place of
the engine: before or after a tool call, before or after a compensation call. Effects are
counted at the receiving end, the recording sink, which makes one effect per
``Idempotency-Key`` (``sink.effect``) or one per request (``sink.effect_unsafe``). Every
run's events go through the R16 history checker (``tests/support/history.py``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx2
import pytest

from planexec.db.pg import create_pool

from ..support.history import assert_legal, load_histories
from ..support.recording_server import RecordingServer
from .faults_support import (
    FAULT_EXIT,
    FaultLab,
    effect,
    effect_names,
    sink_requests,
    until,
    write_catalog,
)

TTL_S = 1.5
"""Lease TTL of the workers that must be taken over (seconds); heartbeats every third."""


@pytest.fixture
def sink() -> Iterator[RecordingServer]:
    """The recording sink, in a thread of the test process."""
    with RecordingServer() as server:
        yield server


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool on the test database that decodes jsonb."""
    connections = await create_pool(db_url, max_size=4)
    try:
        yield connections
    finally:
        await connections.close()


@pytest.fixture
def lab(
    db_url: str, sink: RecordingServer, pool: asyncpg.Pool, tmp_path: Path
) -> Iterator[FaultLab]:
    """Worker and executor processes of one test; whatever still runs is killed after it."""
    faults = FaultLab(db_url, write_catalog(tmp_path, sink), tmp_path, pool)
    try:
        yield faults
    finally:
        faults.cleanup()


@pytest.fixture
async def api(lab: FaultLab) -> AsyncIterator[httpx2.AsyncClient]:
    """A client of the executor API, running as a process."""
    url, service = lab.executor()
    async with httpx2.AsyncClient(base_url=url, timeout=10) as client:

        async def healthy() -> None:
            assert service.proc.poll() is None, service.log()
            (await client.get("/v1/healthz")).raise_for_status()

        await until(healthy, timeout_s=60, interval_s=0.1)
        yield client


async def assert_history(
    lab: FaultLab, run_ids: list[uuid.UUID], sink: RecordingServer, prefix: str
) -> None:
    """R16 over the runs' events, and over the sink's effects of names starting ``prefix``.

    Effects of compensation calls are left out of the effect check (their keys are on
    compensation attempts, not on ``step.started`` events); the tests check them directly.
    """
    undo_keys = {
        row["idempotency_key"]
        for row in await lab.pool.fetch(
            "SELECT idempotency_key FROM executor.attempts"
            " WHERE run_id = ANY($1::uuid[]) AND kind = 'compensation'",
            run_ids,
        )
    }
    keys = [
        e["key"]
        for e in sink.log()
        if e["outcome"] == "effect" and e["name"].startswith(prefix) and e["key"] not in undo_keys
    ]
    assert_legal(await load_histories(lab.pool, run_ids), keys)


def _of_type(events: list[asyncpg.Record], kind: str, step_id: str | None = None) -> list[Any]:
    return [e for e in events if e["type"] == kind and (step_id is None or e["step_id"] == step_id)]


# -- R2 ---------------------------------------------------------------------------------------


async def test_r2_crash_after_the_call_before_its_checkpoint(
    lab: FaultLab, sink: RecordingServer
) -> None:
    """The tool answered, the worker died before committing: the call is made again with the
    same idempotency key, and the sink makes no second effect."""
    a = lab.worker("a", fault="after_call:post", lease_ttl_s=TTL_S)
    await a.ready()
    run_id = await lab.create_run(
        [
            effect("post", "r2.post"),
            {
                "id": "confirm",
                "tool": "sink.effect",
                "depends_on": ["post"],
                "args": {"name": "r2.confirm", "body": {"effect": {"$ref": "post.output/effect"}}},
            },
        ]
    )
    assert await a.exited() == FAULT_EXIT
    # A's call made its effect; nothing of the attempt was committed.
    assert [r["outcome"] for r in sink_requests(sink, "r2.post")] == ["effect"]
    assert (await lab.steps(run_id))["post"]["status"] == "ready"
    assert await lab.attempts(run_id) == []

    b = lab.worker("b", lease_ttl_s=TTL_S)
    b_id = await b.ready()
    await lab.status_in(run_id, "succeeded")

    requests = sink_requests(sink, "r2.post")
    assert [r["outcome"] for r in requests] == ["effect", "replayed"]
    key = requests[0]["key"]
    assert key and requests[1]["key"] == key
    assert sink.stats()["effects_by_name"] == {"r2.post": 1, "r2.confirm": 1}
    steps = await lab.steps(run_id)
    # The replayed answer is the stored one: the dependant saw the first effect's number.
    assert steps["post"]["output"]["effect"] == requests[0]["seq"]
    assert steps["confirm"]["output"]["body"] == {"effect": steps["post"]["output"]["effect"]}
    events = await lab.events(run_id)
    started = _of_type(events, "step.started", "post")
    # An idempotent tool gets no ``started`` row before its call (one commit per step), so
    # the lost attempt left no trace and the re-run is recorded as attempt 1, by B.
    assert [e["payload"]["idempotency_key"] for e in started] == [key]
    leases = _of_type(events, "run.leased")
    assert [e["payload"]["recovered"] for e in leases] == [False, True]
    assert leases[1]["payload"]["worker"] == b_id
    attempts = [a for a in await lab.attempts(run_id) if a["step_id"] == "post"]
    assert [(x["idempotency_key"], x["status"], x["worker"]) for x in attempts] == [
        (key, "succeeded", b_id)
    ]
    await assert_history(lab, [run_id], sink, "r2.")
    assert b.stop() == 0


# -- R13 --------------------------------------------------------------------------------------


def undoable(step_id: str, name: str, undo: str, depends_on: list[str]) -> dict[str, Any]:
    """A keyed effect ``name`` whose compensation is a keyed effect ``undo`` that carries
    the number of the effect it undoes (read from the step's recorded output)."""
    return {
        **effect(step_id, name, depends_on=depends_on),
        "compensation": {
            "tool": "sink.effect",
            "args": {"name": undo, "body": {"undo": {"$ref": f"{step_id}.output/effect"}}},
        },
    }


def saga_step(n: int, depends_on: list[str]) -> dict[str, Any]:
    """Step ``s<n>`` of the R13 saga: effect ``r13.s<n>``, undone by ``r13.undo<n>``."""
    return undoable(f"s{n}", f"r13.s{n}", f"r13.undo{n}", depends_on)


async def test_r13_crash_during_compensation(lab: FaultLab, sink: RecordingServer) -> None:
    """Step 4 of 5 fails for good; the worker dies right after compensating step 3; the next
    worker finishes the saga: each compensation happened once, in reverse order."""
    sink.fail("r13.s4", times=1, status=400)
    a = lab.worker("a", fault="after_compensation:s3", lease_ttl_s=TTL_S)
    await a.ready()
    run_id = await lab.create_run(
        [
            saga_step(1, []),
            saga_step(2, ["s1"]),
            saga_step(3, ["s2"]),
            effect("s4", "r13.s4", depends_on=["s3"]),
            effect("s5", "r13.s5", depends_on=["s4"]),
        ]
    )
    assert await a.exited() == FAULT_EXIT
    assert effect_names(sink, "r13.") == ["r13.s1", "r13.s2", "r13.s3", "r13.undo3"]
    steps = await lab.steps(run_id)
    assert steps["s3"]["status"] == "compensating"
    assert steps["s4"]["status"] == "failed"

    b = lab.worker("b", lease_ttl_s=TTL_S)
    await b.ready()
    await lab.status_in(run_id, "failed")

    # At the receiving end: each compensation made one effect, newest step first.
    assert effect_names(sink, "r13.") == [
        "r13.s1",
        "r13.s2",
        "r13.s3",
        "r13.undo3",
        "r13.undo2",
        "r13.undo1",
    ]
    undo3 = sink_requests(sink, "r13.undo3")
    assert [r["outcome"] for r in undo3] == ["effect", "replayed"]
    assert undo3[0]["key"] == undo3[1]["key"]
    assert [r["outcome"] for r in sink_requests(sink, "r13.s4")] == ["failed"]
    assert sink_requests(sink, "r13.s5") == []
    steps = await lab.steps(run_id)
    assert {sid: row["status"] for sid, row in steps.items()} == {
        "s1": "compensated",
        "s2": "compensated",
        "s3": "compensated",
        "s4": "failed",
        "s5": "cancelled",
    }
    comp = [a for a in await lab.attempts(run_id) if a["kind"] == "compensation"]
    by_step = {sid: [a for a in comp if a["step_id"] == sid] for sid in ("s1", "s2", "s3")}
    assert [(a["attempt"], a["status"]) for a in by_step["s3"]] == [(1, "failed"), (2, "succeeded")]
    assert by_step["s3"][0]["error"]["code"] == "worker_lost"
    assert {a["idempotency_key"] for a in by_step["s3"]} == {undo3[0]["key"]}
    for sid, name in (("s2", "r13.undo2"), ("s1", "r13.undo1")):
        [request] = sink_requests(sink, name)
        assert [(a["status"], a["idempotency_key"]) for a in by_step[sid]] == [
            ("succeeded", request["key"])
        ]
    events = await lab.events(run_id)
    assert len(_of_type(events, "compensation.recovered", "s3")) == 1
    assert [e["step_id"] for e in _of_type(events, "compensation.succeeded")] == [
        "s3",
        "s2",
        "s1",
    ]
    [failed] = _of_type(events, "run.failed")
    assert sorted(failed["payload"]["compensated_steps"]) == ["s1", "s2", "s3"]
    assert failed["payload"]["failed_steps"] == ["s4"]
    await assert_history(lab, [run_id], sink, "r13.")
    assert b.stop() == 0


async def test_r13_unknown_compensation_outcome_halts_the_saga(
    lab: FaultLab, sink: RecordingServer, api: httpx2.AsyncClient, keys_for: dict[str, str]
) -> None:
    """Step 3's compensation is not idempotent and its worker dies once the compensation
    attempt is recorded: nothing may be undone before an operator decides about step 3,
    so that the undos still happen in reverse order (3, 2, 1)."""
    sink.fail("r13.s4", times=1, status=400)
    steps = [saga_step(1, []), saga_step(2, ["s1"]), saga_step(3, ["s2"])]
    steps[2]["compensation"]["tool"] = "sink.effect_unsafe"
    steps.append(effect("s4", "r13.s4", depends_on=["s3"]))
    a = lab.worker("a", fault="before_compensation:s3", lease_ttl_s=TTL_S)
    await a.ready()
    run_id = await lab.create_run(steps)
    assert await a.exited() == FAULT_EXIT
    b = lab.worker("b", lease_ttl_s=TTL_S)
    await b.ready()
    await lab.status_in(run_id, "needs_attention")
    statuses = {sid: row["status"] for sid, row in (await lab.steps(run_id)).items()}
    assert statuses == {
        "s1": "succeeded",
        "s2": "succeeded",
        "s3": "needs_attention",
        "s4": "failed",
    }
    assert effect_names(sink, "r13.undo") == []
    response = await api.post(
        f"/v1/runs/{run_id}/steps/s3/resolve",
        json={"action": "retry", "comment": "the undo never reached the sink"},
        headers={"X-API-Key": keys_for["operator"]},
    )
    assert response.status_code == 200, response.text
    await lab.status_in(run_id, "failed")
    assert effect_names(sink, "r13.undo") == ["r13.undo3", "r13.undo2", "r13.undo1"]
    await assert_history(lab, [run_id], sink, "r13.")
    assert b.stop() == 0


# -- R12 --------------------------------------------------------------------------------------


def gated_run(tag: str, preps: int) -> list[dict[str, Any]]:
    """``preps`` chained undoable effects, then a gated keyed effect ``<tag>.gated``."""
    steps = [
        undoable(f"prep{n}", f"{tag}.prep{n}", f"{tag}.undo{n}", [f"prep{n - 1}"] if n > 1 else [])
        for n in range(1, preps + 1)
    ]
    steps.append(
        effect("gated", f"{tag}.gated", depends_on=[f"prep{preps}"], requires_approval=True)
    )
    return steps


async def decide(
    api: httpx2.AsyncClient, key: str, run_id: uuid.UUID, decision: str, copies: int = 1
) -> list[dict[str, Any]]:
    """Send ``copies`` identical decisions on the gate of step ``gated`` at once."""
    path = f"/v1/runs/{run_id}/steps/gated/approval"
    body = {"decision": decision, "comment": f"{decision} from the fault test"}
    responses = await asyncio.gather(
        *(api.post(path, json=body, headers={"X-API-Key": key}) for _ in range(copies))
    )
    assert [r.status_code for r in responses] == [200] * copies, [r.text for r in responses]
    return [r.json() for r in responses]


async def test_r12_approval_gate_under_crash(
    lab: FaultLab, sink: RecordingServer, api: httpx2.AsyncClient, keys_for: dict[str, str]
) -> None:
    """Runs wait at a gate; the worker is killed; decisions arrive while no worker runs,
    ten at a time: each gate records one decision, an approved step makes one effect, a
    rejected gate compensates the steps before it."""
    a = lab.worker("a", lease_ttl_s=TTL_S)
    await a.ready()
    approved = await lab.create_run(gated_run("r12a", 1))
    rejected = await lab.create_run(gated_run("r12b", 2))
    for run_id in (approved, rejected):
        await lab.status_in(run_id, "paused")
        assert (await lab.steps(run_id))["gated"]["status"] == "awaiting_approval"
    assert a.kill() == -9

    # No worker runs: the first approval is recorded and hands the run back to the workers.
    [first] = await decide(api, keys_for["approver"], approved, "approve")
    assert first["recorded"] is True
    assert (await lab.run(approved))["status"] == "pending"
    # Ten rejections race for the other gate: one is recorded, the others see it.
    answers = await decide(api, keys_for["approver"], rejected, "reject", copies=10)
    assert sorted(r["recorded"] for r in answers) == [False] * 9 + [True]
    assert {r["decision"] for r in answers} == {"reject"}
    assert sink_requests(sink, "r12a.gated") == []

    b = lab.worker("b", lease_ttl_s=TTL_S)
    await b.ready()
    # Ten duplicate approvals race the worker that now drives the approved run.
    duplicates = await decide(api, keys_for["approver"], approved, "approve", copies=10)
    assert [r["recorded"] for r in duplicates] == [False] * 10
    assert {r["decision"] for r in duplicates} == {"approve"}
    # A contrary decision after the fact changes nothing either.
    [late] = await decide(api, keys_for["approver"], approved, "reject")
    assert (late["recorded"], late["decision"]) == (False, "approve")
    await lab.status_in(approved, "succeeded")
    await lab.status_in(rejected, "failed")

    # The approved run: the gated call made one request and one effect, nothing undone.
    assert [r["outcome"] for r in sink_requests(sink, "r12a.gated")] == ["effect"]
    assert effect_names(sink, "r12a.") == ["r12a.prep1", "r12a.gated"]
    # The rejected run: the gated call never happened; prep2 then prep1 were undone once.
    assert sink_requests(sink, "r12b.gated") == []
    assert effect_names(sink, "r12b.") == ["r12b.prep1", "r12b.prep2", "r12b.undo2", "r12b.undo1"]
    assert sink.stats()["replayed"] == 0
    rows = await lab.pool.fetch(
        "SELECT run_id, step_id, decision, decided_by FROM executor.approvals"
        " WHERE run_id = ANY($1::uuid[])",
        [approved, rejected],
    )
    assert sorted((r["run_id"] == approved, r["step_id"], r["decision"]) for r in rows) == [
        (False, "gated", "reject"),
        (True, "gated", "approve"),
    ]
    detail = (
        await api.get(f"/v1/runs/{approved}", headers={"X-API-Key": keys_for["approver"]})
    ).json()
    assert [(x["step_id"], x["decision"]) for x in detail["approvals"]] == [("gated", "approve")]
    events = await lab.events(approved)
    assert len(_of_type(events, "approval.granted", "gated")) == 1
    assert len(_of_type(events, "step.started", "gated")) == 1
    events = await lab.events(rejected)
    assert len(_of_type(events, "approval.rejected", "gated")) == 1
    assert _of_type(events, "step.started", "gated") == []
    assert [e["step_id"] for e in _of_type(events, "compensation.succeeded")] == ["prep2", "prep1"]
    [failed] = _of_type(events, "run.failed")
    assert sorted(failed["payload"]["compensated_steps"]) == ["prep1", "prep2"]
    steps = await lab.steps(rejected)
    assert {sid: row["status"] for sid, row in steps.items()} == {
        "prep1": "compensated",
        "prep2": "compensated",
        "gated": "failed",
    }
    await assert_history(lab, [approved, rejected], sink, "r12")
    assert b.stop() == 0


# -- R5 ---------------------------------------------------------------------------------------

LONG_TTL_S = 60.0
"""Lease TTL of the R5 workers: leases end only when the test expires them in SQL."""
HOLD_S = 4.0


def held_run(tag: str) -> list[dict[str, Any]]:
    """A timer that keeps the run leased for ``HOLD_S`` seconds, then a keyed effect."""
    return [
        {"id": "hold", "tool": "wait", "args": {"seconds": HOLD_S}},
        effect("after", f"{tag}.after", depends_on=["hold"]),
    ]


async def _untouched(lab: FaultLab, run_id: uuid.UUID) -> tuple[Any, ...]:
    """What must not change in a run nobody may take: its lease, status and event count."""
    run = await lab.run(run_id)
    return (
        run["status"],
        run["lease_owner"],
        run["lease_token"],
        run["finished_at"],
        run["next_seq"],
        len(await lab.events(run_id)),
    )


async def _strand_runs(
    lab: FaultLab, sink: RecordingServer
) -> tuple[str, list[uuid.UUID], uuid.UUID, uuid.UUID, uuid.UUID]:
    """Worker A finishes two runs, leases two held runs, then dies right after recording
    that a non-idempotent call started (``before_call:charge``).

    Returns:
        A's worker id, the finished runs (one succeeded, one failed), the held runs
        (``cancel``, ``valid``) and the run whose charge started (``stuck``).
    """
    a = lab.worker("a", fault="before_call:charge", lease_ttl_s=LONG_TTL_S)
    a_id = await a.ready()
    sink.fail("r5c.bad", times=1, status=400)
    finished = [
        await lab.create_run([effect("only", "r5c.ok")]),
        await lab.create_run([effect("bad", "r5c.bad")]),
    ]
    await lab.status_in(finished[0], "succeeded")
    await lab.status_in(finished[1], "failed")
    cancel, valid = await lab.create_run(held_run("r5b")), await lab.create_run(held_run("r5d"))

    async def leased() -> None:
        for run_id in (cancel, valid):
            assert (await lab.run(run_id))["lease_owner"] == a_id

    await until(leased)
    stuck = await lab.create_run(
        [
            {
                "id": "charge",
                "tool": "sink.effect_unsafe",
                "args": {"name": "r5a.charge", "body": {}},
            },
            effect("receipt", "r5a.receipt", depends_on=["charge"]),
        ]
    )
    assert await a.exited() == FAULT_EXIT
    # A died holding three runs, after recording that the non-idempotent call started.
    [open_attempt] = await lab.attempts(stuck)
    assert (open_attempt["step_id"], open_attempt["status"]) == ("charge", "started")
    assert sink_requests(sink, "r5a.charge") == []
    for run_id in (stuck, cancel, valid):
        assert (await lab.run(run_id))["lease_owner"] == a_id
    return a_id, finished, cancel, valid, stuck


async def test_r5_expired_leases_are_rescued_by_state(
    lab: FaultLab, sink: RecordingServer, api: httpx2.AsyncClient, keys_for: dict[str, str]
) -> None:
    """Leases expired in SQL (River's stuck-job rescue, for run leases): a started
    non-idempotent call goes to needs_attention and, retried by an operator, makes one
    effect; a cancel-requested run is cancelled; finished runs and a run whose lease is
    still valid are left alone."""
    operator = {"X-API-Key": keys_for["operator"]}
    a_id, finished, cancel, valid, stuck = await _strand_runs(lab, sink)
    response = await api.post(f"/v1/runs/{cancel}/cancel", headers=operator)
    assert response.status_code == 202, response.text
    assert (await lab.run(cancel))["cancel_requested"] is True
    before = {run_id: await _untouched(lab, run_id) for run_id in [*finished, valid]}
    sink_before = sink.stats()["requests"]
    await lab.expire_lease(stuck, cancel, *finished)

    b = lab.worker("b", lease_ttl_s=LONG_TTL_S)
    b_id = await b.ready()
    await lab.status_in(stuck, "needs_attention")
    await lab.status_in(cancel, "cancelled")
    assert (await lab.steps(stuck))["charge"]["status"] == "needs_attention"
    assert {sid: r["status"] for sid, r in (await lab.steps(cancel)).items()} == {
        "hold": "cancelled",
        "after": "cancelled",
    }
    # Unknown outcome: B called nothing; the operator decides.
    assert sink_requests(sink, "r5a.charge") == []
    response = await api.post(
        f"/v1/runs/{stuck}/steps/charge/resolve",
        json={"action": "retry", "comment": "the charge never reached the sink"},
        headers=operator,
    )
    assert response.status_code == 200, response.text
    await lab.status_in(stuck, "succeeded")
    [charge] = sink_requests(sink, "r5a.charge")
    assert charge["outcome"] == "effect"
    attempts = [x for x in await lab.attempts(stuck) if x["step_id"] == "charge"]
    assert [(x["attempt"], x["status"]) for x in attempts] == [(1, "failed"), (2, "succeeded")]
    assert {x["idempotency_key"] for x in attempts} == {charge["key"]}
    assert attempts[1]["worker"] == b_id
    events = await lab.events(stuck)
    assert [e["type"] for e in events if e["step_id"] == "charge"] == [
        "step.started",
        "step.needs_attention",
        "step.resolved",
        "step.started",
        "step.succeeded",
    ]

    # Finished runs and the run whose lease is valid were not taken, seconds later still.
    assert {run_id: await _untouched(lab, run_id) for run_id in [*finished, valid]} == before
    assert sink_requests(sink, "r5d.after") == []
    assert sink_requests(sink, "r5b.after") == []
    assert sink.stats()["requests"] == sink_before + 2  # the charge and the receipt
    # Once its lease is expired too, that run is taken over and finishes (one effect).
    await lab.expire_lease(valid)
    await lab.status_in(valid, "succeeded", timeout_s=HOLD_S + 20)
    assert [r["outcome"] for r in sink_requests(sink, "r5d.after")] == ["effect"]
    leases = _of_type(await lab.events(valid), "run.leased")
    assert [(e["payload"]["worker"], e["payload"]["recovered"]) for e in leases] == [
        (a_id, False),
        (b_id, True),
    ]
    await assert_history(lab, [stuck, cancel, valid, *finished], sink, "r5")
    assert b.stop() == 0


# -- R6 ---------------------------------------------------------------------------------------

MAX_RECOVERIES = 3


class Supervisor:
    """Keeps ``size`` faulted workers running, restarting each one that exits (systemd-like).

    ``async with`` watches them; leaving the block stops the restarts (also when a test
    fails), the workers still running are left to the caller.
    """

    def __init__(self, lab: FaultLab, size: int, **settings: Any) -> None:
        self.lab = lab
        self.settings = settings
        self.workers = [lab.worker(f"poisoned{i}", **settings) for i in range(size)]
        self.exits: list[int] = []
        """Exit status of every start that ended, in order."""
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        while not self._stop.is_set():
            for i, worker in enumerate(self.workers):
                code = worker.exit_code()
                if code is not None:
                    self.exits.append(code)
                    worker.stop()  # closes its log
                    self.workers[i] = self.lab.worker(f"poisoned{i}", **self.settings)
            await asyncio.sleep(0.05)

    async def __aenter__(self) -> Supervisor:
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


async def test_r6_poison_step_is_dead_lettered_then_resumed(
    lab: FaultLab, sink: RecordingServer, api: httpx2.AsyncClient, keys_for: dict[str, str]
) -> None:
    """A step that kills every worker that runs it: after K recoveries without progress the
    run is dead-lettered and no worker dies any more; the same workers run other runs;
    resumed on a worker without the fault, the run succeeds."""
    supervisor = Supervisor(
        lab, 2, fault="before_call:poison", lease_ttl_s=TTL_S, max_recoveries=MAX_RECOVERIES
    )
    for worker in supervisor.workers:
        await worker.ready()
    async with supervisor:
        poisoned = await lab.create_run([effect("poison", "r6.poison")])
        await lab.status_in(poisoned, "dead_letter", timeout_s=60)
        for worker in supervisor.workers:
            await worker.ready()
        crashes = list(supervisor.exits)
        # K recoveries, then the next claim dead-letters the run: K + 1 workers died on it.
        assert crashes == [FAULT_EXIT] * (MAX_RECOVERIES + 1), crashes
        # The same (still faulted) workers run another run; none of them dies any more.
        other = await lab.create_run([effect("other", "r6.other")])
        await lab.status_in(other, "succeeded")
    assert supervisor.exits == crashes, "a worker died after the run was dead-lettered"
    assert [r["outcome"] for r in sink_requests(sink, "r6.other")] == ["effect"]
    assert sink_requests(sink, "r6.poison") == []
    assert (await lab.run(poisoned))["status"] == "dead_letter"
    events = await lab.events(poisoned)
    leases = _of_type(events, "run.leased")
    assert [e["payload"]["recovered"] for e in leases] == [False] + [True] * MAX_RECOVERIES
    [dead] = _of_type(events, "run.dead_lettered")
    # The claim that dead-letters the run counts as its (K + 1)th recovery, refused.
    assert dead["payload"]["recovery_attempts"] == MAX_RECOVERIES + 1

    clean = lab.worker("clean", lease_ttl_s=TTL_S, max_recoveries=MAX_RECOVERIES)
    clean_id = await clean.ready()
    for worker in supervisor.workers:
        assert worker.stop() == 0
    response = await api.post(
        f"/v1/runs/{poisoned}/resume", headers={"X-API-Key": keys_for["operator"]}
    )
    assert response.status_code == 200, response.text
    await lab.status_in(poisoned, "succeeded")
    assert [r["outcome"] for r in sink_requests(sink, "r6.poison")] == ["effect"]
    events = await lab.events(poisoned)
    resumed = next(e["seq"] for e in events if e["type"] == "run.resumed")
    after = [e["payload"] for e in events if e["seq"] > resumed and e["type"] == "run.leased"]
    assert after == [{"worker": clean_id, "recovered": False}]
    await assert_history(lab, [poisoned, other], sink, "r6.")
    assert clean.stop() == 0


async def test_r6_runs_claimed_with_a_poison_run_are_not_dead_lettered(
    lab: FaultLab, sink: RecordingServer
) -> None:
    """A backlog: the poison run and three innocent runs wait before any worker starts, so
    a worker leases them together and dies with all four in hand, again and again."""
    poisoned = await lab.create_run([effect("poison", "r6.poison")])
    innocent = [await lab.create_run([effect("ok", f"r6.innocent{i}")]) for i in range(3)]
    async with Supervisor(lab, 1, fault="before_call:poison", lease_ttl_s=TTL_S, max_recoveries=3):
        await lab.status_in(poisoned, "dead_letter", timeout_s=60)
        finished = [
            await lab.status_in(run_id, "succeeded", "dead_letter", timeout_s=30)
            for run_id in innocent
        ]
    assert finished == ["succeeded"] * 3
    for i in range(3):
        assert [r["outcome"] for r in sink_requests(sink, f"r6.innocent{i}")] == ["effect"]
