"""A worker process: leases runs and drives them; pulls dispatched plans from the planner.

N workers share one Postgres: runs are leased with ``FOR UPDATE SKIP LOCKED`` and a lease
renewed by heartbeat, so each run has one driver at a time. Idle workers wait on
``LISTEN planexec_runs`` with a slow poll as a fallback.

A worker outlives its database: while Postgres restarts or is unreachable (RELIABILITY R11,
R18) claims fail and are retried with capped exponential backoff, heartbeats and commits
retry in the driver and the store, and the process never exits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from pathlib import Path

import structlog

from planexec.db.notify import Notifier
from planexec.db.pg import backoff_s, is_transient

from ..domain.admission import admit
from ..planner_client import PlannerClient, PlannerUnavailableError
from ..store.runs import ClaimedRun, NewRun, RunStore
from ..tools.registry import ToolRegistry
from .driver import DriverConfig, RunDriver
from .pinning import pinned_specs
from .replan import Replanner
from .webhook import GateWebhook

_log = structlog.get_logger("planexec.executor.worker")


def worker_id() -> str:
    """A readable, unique worker identity: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """Drives up to ``concurrency`` runs at once until ``stop()``."""

    def __init__(
        self,
        *,
        store: RunStore,
        registry: ToolRegistry,
        notifier: Notifier,
        config: DriverConfig,
        concurrency: int,
        step_concurrency: int,
        poll_s: float,
        drain_s: float,
        planner: PlannerClient | None = None,
        signing_key: bytes = b"",
        accepted_schema_ids: tuple[str, ...] = ("planexec.plan/v1",),
        dispatch_wait_s: float = 10.0,
        liveness_file: Path | None = None,
        webhook: GateWebhook | None = None,
        run_budget_usd: float | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._notifier = notifier
        self._config = config
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(step_concurrency)
        self._poll_s = poll_s
        self._drain_s = drain_s
        self._planner = planner
        self._signing_key = signing_key
        self._accepted = accepted_schema_ids
        self._dispatch_wait_s = dispatch_wait_s
        self._liveness_file = liveness_file
        self._webhook = webhook
        self._run_budget_usd = run_budget_usd
        self._replanner = (
            Replanner(
                planner,
                signing_key=signing_key,
                accepted_schema_ids=accepted_schema_ids,
                catalog_version=registry.catalog.catalog_version,
                tools=registry.get,
            )
            if planner is not None
            else None
        )
        self._drivers: dict[asyncio.Task[object], RunDriver] = {}
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()

    @property
    def id(self) -> str:
        """This worker's identity (lease owner)."""
        return self._config.worker_id

    def stop(self) -> None:
        """Stop claiming; in-flight steps get ``drain_s`` seconds to finish (SIGTERM)."""
        self._stopping.set()

    async def run(self) -> None:
        """Claim and drive runs until stopped, then drain."""
        dispatcher = asyncio.create_task(self._dispatch_loop()) if self._planner else None
        try:
            await self._claim_loop()
        finally:
            if dispatcher is not None:
                dispatcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await dispatcher
            await self._drain()

    async def _claim_loop(self) -> None:
        failures, failing_since = 0, 0.0
        while not self._stopping.is_set():
            if self._liveness_file is not None:
                self._liveness_file.touch()
            free = 0 if self._quarantined() else self._concurrency - len(self._drivers)
            claimed: list[ClaimedRun] = []
            if free > 0:
                try:
                    claimed = await self._claim(free)
                except Exception as exc:  # the worker must outlive any database trouble
                    failures += 1
                    failing_since = failing_since or time.monotonic()
                    _log.log(
                        logging.WARNING if is_transient(exc) else logging.ERROR,
                        "claim_failed",
                        failures=failures,
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    await self._pause(backoff_s(failures, cap_s=max(5.0, self._poll_s)))
                    continue
                if failures:
                    _log.info(
                        "claim_recovered",
                        failures=failures,
                        down_s=round(time.monotonic() - failing_since, 3),
                    )
                    failures, failing_since = 0, 0.0
            for run in claimed:
                if run.status == "dead_letter":
                    _log.error("run_dead_lettered", run_id=str(run.run_id))
                    continue
                driver = RunDriver(
                    run,
                    self._store,
                    self._registry.get,
                    self._config,
                    self._slots,
                    replanner=self._replanner,
                    webhook=self._webhook,
                    on_progress=self._slot_freed.set,
                )
                task: asyncio.Task[object] = asyncio.create_task(driver.drive())
                self._drivers[task] = driver
                task.add_done_callback(self._driver_done)
            if claimed and len(claimed) == free:
                continue
            await self._idle()

    async def _claim(self, free: int) -> list[ClaimedRun]:
        """Lease runs: a suspect first, alone; else up to ``free`` ordinary runs.

        A suspect (a run recovered twice in a row without progress: a poison step?) is
        leased by itself, and this worker then leases nothing new until the suspect makes
        progress or has been held for two lease TTLs without a crash. A crash it causes then
        takes down only the runs this worker already drove, which had their chance to make
        progress, and suspects are never starved by a backlog of ordinary runs.
        """
        ttl_s, max_recoveries = self._config.lease_ttl_s, self._config.max_recoveries
        suspects = await self._store.claim_runs(
            self.id, limit=1, ttl_s=ttl_s, max_recoveries=max_recoveries, suspects=True
        )
        if suspects:
            return suspects
        return await self._store.claim_runs(
            self.id, limit=free, ttl_s=ttl_s, max_recoveries=max_recoveries
        )

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the worker is stopped meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _quarantined(self) -> bool:
        """Whether this worker holds a suspect run that has not cleared itself yet."""
        cleared_after_s = 2 * self._config.lease_ttl_s
        return any(
            d.suspect and not d.progressed and d.held_for_s() < cleared_after_s
            for d in self._drivers.values()
        )

    async def _idle(self) -> None:
        """Wait for a notification, a freed slot, a stop, or the poll interval."""
        waits = [
            asyncio.ensure_future(self._notifier.wait("planexec_runs", self._poll_s)),
            asyncio.ensure_future(self._stopping.wait()),
        ]
        if len(self._drivers) >= self._concurrency or self._quarantined():
            waits.append(asyncio.ensure_future(self._slot_freed.wait()))
        await asyncio.wait(waits, timeout=self._poll_s, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waits:
            waiter.cancel()
        self._slot_freed.clear()

    def _driver_done(self, task: asyncio.Task[object]) -> None:
        driver = self._drivers.pop(task, None)
        self._slot_freed.set()
        if task.cancelled() or driver is None:
            return
        exc = task.exception()
        if exc is not None:
            _log.error("driver_crashed", run_id=str(driver.run_id), error=repr(exc), exc_info=exc)

    async def _drain(self) -> None:
        if not self._drivers:
            return
        _log.info("draining", runs=len(self._drivers), grace_s=self._drain_s)
        for driver in self._drivers.values():
            driver.drain()
        tasks = list(self._drivers)
        _, pending = await asyncio.wait(tasks, timeout=self._drain_s)
        for task in pending:
            task.cancel()  # the driver releases its lease for immediate re-claim
        if pending:
            await asyncio.wait(pending, timeout=5.0)

    async def _dispatch_loop(self) -> None:
        assert self._planner is not None
        failures = 0
        while not self._stopping.is_set():
            try:
                await self._dispatch_once()
                failures = 0
            except PlannerUnavailableError as exc:
                _log.warning("dispatch_claim_failed", error=str(exc))
                await asyncio.sleep(self._poll_s)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                # The database is away: the planner redelivers the item once its dispatch
                # lease lapses, and run creation is idempotent per plan version.
                failures += 1
                _log.warning("dispatch_store_failed", error=f"{type(exc).__name__}: {exc}")
                await self._pause(backoff_s(failures, cap_s=max(5.0, self._poll_s)))

    async def _dispatch_once(self) -> None:
        """Claim dispatched plans from the planner and create (or refuse) their runs.

        Raises:
            PlannerUnavailableError: the planner did not answer the claim.
        """
        assert self._planner is not None
        items = await self._planner.claim(
            self.id, max_items=10, lease_s=30.0, wait_s=self._dispatch_wait_s
        )
        for item in items:
            refusal = admit(
                item.plan,
                status=item.status,
                signing_key=self._signing_key,
                accepted_schema_ids=self._accepted,
                catalog_version=self._registry.catalog.catalog_version,
            )
            if refusal is not None:
                _log.warning(
                    "dispatch_refused",
                    plan_id=str(item.plan.plan_id),
                    version=item.plan.version,
                    code=refusal.code,
                    reason=refusal.message,
                )
                run_id, _ = await self._store.create_refused_run(
                    item.plan, item.policy_decisions, refusal.code, refusal.message
                )
            else:
                run_id, _ = await self._store.create_run(
                    item.plan,
                    item.policy_decisions,
                    created_by=item.plan.created_by,
                    new=NewRun(
                        tool_specs=pinned_specs(item.plan, self._registry.get),
                        budget_usd=self._run_budget_usd,
                    ),
                )
            assert item.dispatch_id is not None
            with contextlib.suppress(PlannerUnavailableError):
                await self._planner.ack(item.dispatch_id, self.id, run_id)
