"""Tool concurrency slots (R15) on a real Postgres: grants, FIFO order, tenant caps, expiry
with the run lease, wake-up by NOTIFY, and the engine keeping a cap across workers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from executor_service.engine.slots import SlotGate, ToolCaps
from executor_service.store.runs import ClaimedRun, RunStore
from executor_service.store.slots import SlotRequest, SlotStore
from executor_service.tools.base import InvocationContext, ToolResult
from executor_service.tools.noop import NoopTool
from executor_service.tools.wait import WaitTool
from planexec.db.notify import asyncpg_dsn
from planexec.db.pg import create_pool

from ..chaos.conftest import create_runs, make_plan
from .engine_env import engine_env

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    connections = await create_pool(db_url, max_size=6)
    try:
        yield connections
    finally:
        await connections.close()


async def leased(
    pool: asyncpg.Pool, n: int, tenant: str = "acme", ttl_s: float = 30.0
) -> list[ClaimedRun]:
    """``n`` runs of ``tenant`` created and leased (a run lease is what a slot lives on)."""
    plans = [make_plan([{"id": "s", "tool": "noop", "args": {}}], tenant) for _ in range(n)]
    run_ids = await create_runs(pool, plans)
    claimed = await RunStore(pool).claim_runs("w1", limit=n, ttl_s=ttl_s)
    assert {c.run_id for c in claimed} == set(run_ids)
    return sorted(claimed, key=lambda c: run_ids.index(c.run_id))


def request(
    run: ClaimedRun, cap: int | None = 2, tenant_cap: int | None = None, tool: str = "t"
) -> SlotRequest:
    return SlotRequest(
        tool, uuid.uuid4(), run.tenant, run.run_id, "s", run.lease_token, cap, tenant_cap
    )


async def test_cap_grants_in_ticket_order_and_hands_over_on_release(pool: asyncpg.Pool) -> None:
    store = SlotStore(pool)
    runs = await leased(pool, 4)
    asks = [request(r) for r in runs]
    states = [await store.acquire(a) for a in asks]
    assert [s.granted for s in states] == [True, True, False, False]
    assert (states[3].held, states[3].queued) == (2, 2)
    # Asking again keeps the ticket: the fourth does not overtake the third.
    assert not (await store.acquire(asks[3])).granted
    assert await store.release(asks[0])
    assert (await store.acquire(asks[2])).granted
    assert not (await store.acquire(asks[3])).granted
    assert await store.live("t") == (2, 1)
    assert not await store.release(asks[0])  # already given back


async def test_release_grants_the_next_waiter_and_notifies_it(
    pool: asyncpg.Pool, db_url: str
) -> None:
    store = SlotStore(pool)
    runs = await leased(pool, 2)
    first, second = request(runs[0], cap=1), request(runs[1], cap=1)
    assert (await store.acquire(first)).granted
    assert not (await store.acquire(second)).granted
    heard: list[str] = []
    conn = await asyncpg.connect(asyncpg_dsn(db_url))
    try:
        await conn.add_listener("planexec_slots", lambda *args: heard.append(args[3]))
        await store.release(first)
        for _ in range(100):
            if heard:
                break
            await asyncio.sleep(0.01)
    finally:
        await conn.close()
    assert heard == [str(second.holder)]
    assert await store.live("t") == (1, 0)  # granted by the release, before it asked again


async def test_tenant_cap_skips_a_capped_tenant_without_blocking_others(
    pool: asyncpg.Pool,
) -> None:
    store = SlotStore(pool)
    acme = await leased(pool, 2, "acme")
    globex = await leased(pool, 1, "globex")
    a1, a2 = request(acme[0], cap=3, tenant_cap=1), request(acme[1], cap=3, tenant_cap=1)
    g1 = request(globex[0], cap=3, tenant_cap=1)
    assert (await store.acquire(a1)).granted
    assert not (await store.acquire(a2)).granted  # acme at its cap, the tool is not
    assert (await store.acquire(g1)).granted  # queued after a2, granted before it
    await store.release(a1)
    assert (await store.acquire(a2)).granted


async def test_a_dead_workers_slot_counts_until_its_lease_expires(pool: asyncpg.Pool) -> None:
    """A worker dies holding a slot: its run is not reclaimable and its slot not free until
    the lease expires (database clock); then both happen together, never the slot first."""
    store = SlotStore(pool)
    dead = (await leased(pool, 1, ttl_s=1.5))[0]
    other = (await leased(pool, 1))[0]
    assert (await store.acquire(request(dead, cap=1))).granted
    waiter = request(other, cap=1)
    assert not (await store.acquire(waiter)).granted
    # No heartbeat: the holder is dead. Until the lease expires nobody may reclaim the run
    # and the slot stays taken.
    assert await RunStore(pool).claim_runs("w2", limit=5, ttl_s=30) == []
    assert not (await store.acquire(waiter)).granted
    await asyncio.sleep(1.6)
    reclaimed = await RunStore(pool).claim_runs("w2", limit=5, ttl_s=30)
    assert [r.run_id for r in reclaimed] == [dead.run_id]
    assert (await store.acquire(waiter)).granted  # the dead slot is swept
    # The reclaimed run's step queues behind it (new token, new ticket).
    assert not (await store.acquire(request(reclaimed[0], cap=1))).granted


async def test_a_holder_without_a_live_lease_is_not_queued(pool: asyncpg.Pool) -> None:
    store = SlotStore(pool)
    run = (await leased(pool, 1))[0]
    stale = SlotRequest("t", uuid.uuid4(), run.tenant, run.run_id, "s", uuid.uuid4(), 1, None)
    state = await store.acquire(stale)
    assert (state.granted, state.held, state.queued) == (False, 0, 0)


async def test_gate_wakes_a_waiter_by_notify_and_gives_its_place_back_when_cancelled(
    pool: asyncpg.Pool, db_url: str
) -> None:
    gate = SlotGate(SlotStore(pool), ToolCaps({"t": 1}), db_url, poll_s=30.0)
    await gate.start()
    try:
        runs = await leased(pool, 3)

        async def take(run: ClaimedRun) -> Any:
            return await gate.acquire(
                "t", tenant=run.tenant, run_id=run.run_id, step_id="s", lease_token=run.lease_token
            )

        first = await take(runs[0])
        second = asyncio.create_task(take(runs[1]))
        third = asyncio.create_task(take(runs[2]))
        await asyncio.sleep(0.3)
        assert not second.done() and not third.done()
        second.cancel()  # gives its place back: the third is next
        await asyncio.sleep(0.2)
        assert await SlotStore(pool).live("t") == (1, 1)
        began = time.monotonic()
        await gate.release(first)
        slot = await asyncio.wait_for(third, 5.0)
        assert time.monotonic() - began < 1.0  # woken by NOTIFY, not by the 30 s poll
        assert slot.waited_s > 0.4
        await gate.release(slot)
        assert await SlotStore(pool).live("t") == (0, 0)
    finally:
        await gate.close()


class CountingWait(WaitTool):
    """The built-in ``wait`` tool, counting its calls in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls = 0

    async def invoke(self, args: dict[str, Any], ctx: InvocationContext) -> ToolResult:
        self.in_flight += 1
        self.calls += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await super().invoke(args, ctx)
        finally:
            self.in_flight -= 1


class CountingStore(SlotStore):
    """The slot statements, counted (to show an uncapped tool makes none)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.statements = 0

    async def acquire(self, request: SlotRequest) -> Any:
        self.statements += 1
        return await super().acquire(request)

    async def release(self, request: SlotRequest) -> bool:
        self.statements += 1
        return await super().release(request)


async def test_engine_keeps_the_cap_across_workers_and_leaves_uncapped_tools_alone(
    db_url: str, pool: asyncpg.Pool
) -> None:
    waits = CountingWait()
    store = CountingStore(pool)
    gate = SlotGate(store, ToolCaps({"wait": 2}, {"wait": 2}), db_url)
    await gate.start()
    try:
        async with engine_env(db_url, [waits, NoopTool()], workers=3, slots=gate) as env:
            steps = [
                {"id": f"w{i}", "tool": "wait", "args": {"seconds": 0.1}} for i in range(4)
            ] + [{"id": "n", "tool": "noop", "args": {"value": 1}}]
            run_ids = [await env.start(steps) for _ in range(5)]
            for run_id in run_ids:
                run = await env.wait_status(run_id, {"succeeded", "failed"}, timeout_s=30)
                assert run["status"] == "succeeded"
            capped_statements = store.statements
            noops = [{"id": f"n{i}", "tool": "noop", "args": {"value": i}} for i in range(5)]
            run = await env.wait_status(await env.start(noops), {"succeeded", "failed"})
            assert run["status"] == "succeeded"
            assert store.statements == capped_statements  # uncapped: no slot statement
        assert waits.calls == 20
        assert waits.max_in_flight == 2
        # Each capped call: one acquire that may wait, maybe a few more, one release; the
        # noop steps made no slot statement at all.
        assert 40 <= store.statements < 40 + 20 * 3
    finally:
        await gate.close()
