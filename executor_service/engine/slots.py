"""Concurrency caps per tool and per tenant that hold across worker processes (R15).

A capped tool's call first takes a slot (``store.slots``): a row in Postgres that lives as
long as the run lease it names. Why rows tied to the lease, not session advisory locks:

* a slot of a worker that dies is freed when its run lease expires on the database clock,
  which is also the earliest moment another worker may reclaim the run. A reclaimed run's
  step therefore waits behind the dead worker's slot until then: in-flight calls <= cap at
  all times, recovery included (conservative, as RELIABILITY R15 asks);
* a session advisory lock would pin one pooled connection per call in flight for the whole
  call, and dies with the connection, not the lease: a partitioned worker whose lease has
  lapsed could keep it, a live worker whose pooled connection was recycled could lose it;
* the run's heartbeat already renews the lease, so a long call keeps its slot with no write.

Waiting holds no connection and no transaction: the waiter is queued with a ticket (first
come, first served, so nobody starves), then sleeps until a ``NOTIFY planexec_slots`` names
it (the grant is made by whoever releases a slot) or a slow poll, and asks again. Waiting
happens before an attempt starts, so it consumes no retry attempt and no attempt timeout.
Uncapped tools cost nothing: ``capped()`` is a dictionary lookup.

The caps come from settings (``tool_concurrency``, ``tenant_tool_concurrency``), not from the
tool spec: they are a property of the deployment, and a changed cap must not change the
catalog version or the specs runs are pinned to (R9).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog

from planexec.db.notify import asyncpg_dsn

from ..store.slots import SlotRequest, SlotStore

_log = structlog.get_logger("planexec.executor.slots")

SLOTS_CHANNEL = "planexec_slots"
"""``NOTIFY`` channel of grants; the payload is the granted holder's id."""


@dataclass(frozen=True)
class ToolCaps:
    """Caps by tool name: ``per_tool`` across all tenants, ``per_tenant`` for each tenant."""

    per_tool: Mapping[str, int] = field(default_factory=dict)
    per_tenant: Mapping[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.per_tool or self.per_tenant)

    def of(self, tool: str) -> tuple[int | None, int | None]:
        """(tool-wide cap, per-tenant cap) of ``tool``; None where there is none."""
        return self.per_tool.get(tool), self.per_tenant.get(tool)


@dataclass(frozen=True)
class Slot:
    """A granted slot; give it back with ``SlotGate.release``."""

    request: SlotRequest
    waited_s: float
    """Seconds spent waiting for it."""


class SlotGate:
    """Acquires and releases tool slots for the drivers of one worker process.

    Args:
        store: the slot statements.
        caps: which tools are capped, and how.
        url: database URL for the ``LISTEN`` connection (one per process); None polls only.
        poll_s: a waiter asks again at least this often (seconds, jittered) in case a
            notification was lost.
    """

    def __init__(
        self, store: SlotStore, caps: ToolCaps, url: str | None = None, *, poll_s: float = 2.0
    ) -> None:
        self._store = store
        self._caps = caps
        self._dsn = asyncpg_dsn(url) if url else None
        self._poll_s = poll_s
        self._waiters: dict[uuid.UUID, asyncio.Event] = {}
        self._listener: asyncio.Task[None] | None = None
        self._conn: Any = None
        self._releases: set[asyncio.Task[None]] = set()

    def capped(self, tool: str) -> bool:
        """Whether calls of ``tool`` need a slot (no database access)."""
        return tool in self._caps.per_tool or tool in self._caps.per_tenant

    async def start(self) -> None:
        """Start listening for grants (reconnects in the background)."""
        if self._dsn is not None and self._listener is None:
            self._listener = asyncio.create_task(self._listen())

    async def close(self) -> None:
        """Stop listening; wait (at most 5 s) for releases still being written."""
        if self._releases:
            await asyncio.wait(set(self._releases), timeout=5.0)
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()

    async def acquire(
        self, tool: str, *, tenant: str, run_id: uuid.UUID, step_id: str, lease_token: uuid.UUID
    ) -> Slot:
        """Wait for a slot of ``tool`` for one call of a step under the given run lease.

        Waits as long as it takes (cancel the task to stop waiting; the place in the queue is
        then given back). Database errors are logged and retried after ``poll_s``.
        """
        cap, tenant_cap = self._caps.of(tool)
        request = SlotRequest(
            tool, uuid.uuid4(), tenant, run_id, step_id, lease_token, cap, tenant_cap
        )
        woken = asyncio.Event()
        self._waiters[request.holder] = woken
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            while True:
                woken.clear()
                try:
                    state = await self._store.acquire(request)
                except (OSError, asyncpg.PostgresError) as exc:
                    _log.warning("slot_acquire_failed", tool=tool, error=str(exc))
                else:
                    if state.granted:
                        return Slot(request, loop.time() - began)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), self._poll_s * random.uniform(0.5, 1.0))
        except BaseException:
            self._release_soon(request)  # cancelled while queued (or granted just now)
            raise
        finally:
            self._waiters.pop(request.holder, None)

    async def release(self, slot: Slot) -> None:
        """Give a slot back; the next waiters are granted in the same statement.

        Survives cancellation of the caller (the statement is shielded). On a database error
        the slot stays counted until its run lease ends (conservative), and it is logged.
        """
        task = self._release_soon(slot.request)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)

    def release_soon(self, slot: Slot) -> None:
        """Give a slot back without waiting for the statement (see ``release``)."""
        self._release_soon(slot.request)

    def _release_soon(self, request: SlotRequest) -> asyncio.Task[None]:
        task = asyncio.create_task(self._release(request))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)
        return task

    async def _release(self, request: SlotRequest) -> None:
        try:
            await self._store.release(request)
        except (OSError, asyncpg.PostgresError) as exc:
            _log.warning("slot_release_failed", tool=request.tool, error=str(exc))

    async def _listen(self) -> None:
        while True:
            try:
                self._conn = await asyncpg.connect(self._dsn)
                await self._conn.add_listener(SLOTS_CHANNEL, self._on_notify)
                closed = asyncio.Event()
                self._conn.add_termination_listener(functools.partial(_set, closed))
                self._wake_all()  # grants may have been missed while not listening
                await closed.wait()
            except (OSError, asyncpg.PostgresError) as exc:
                _log.warning("slot_listener_down", error=str(exc))
            await asyncio.sleep(1.0)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        with contextlib.suppress(ValueError):
            event = self._waiters.get(uuid.UUID(payload))
            if event is not None:
                event.set()

    def _wake_all(self) -> None:
        for event in self._waiters.values():
            event.set()


def _set(event: asyncio.Event, *_: object) -> None:
    event.set()


async def slot_gate(
    per_tool: Mapping[str, int],
    per_tenant: Mapping[str, int],
    pool: asyncpg.Pool,
    url: str,
    stack: contextlib.AsyncExitStack,
) -> SlotGate | None:
    """A started gate for a worker process (closed with ``stack``), or None without caps."""
    caps = ToolCaps(dict(per_tool), dict(per_tenant))
    if not caps:
        return None
    gate = SlotGate(SlotStore(pool), caps, url)
    await gate.start()
    stack.push_async_callback(gate.close)
    return gate
