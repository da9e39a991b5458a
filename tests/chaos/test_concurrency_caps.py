"""R15 (RELIABILITY §2): a tool capped at 2 calls in flight keeps the cap through a recovery.

Three worker processes share 20 runs of 5 parallel keyed POSTs to the recording sink
(``sink.effect``, capped with ``PLANEXEC_TOOL_CONCURRENCY={"sink.effect": 2}``): 100 steps
ready at once. The sink holds every request 0.1 s and counts the requests it handles at
once, from arrival to response (a request of a killed client still counts until its handler
ends). Once a worker holds a slot of the tool it is SIGKILLed; the others reclaim its runs
when its leases expire (TTL 2 s), and its slots expire with them, not earlier. The database's
granted slots are sampled too. Every run must succeed with one effect per step.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import asyncpg
import pytest

from ..e2e.processes import until
from ..support.history import assert_legal, load_histories
from ..support.recording_server import RecordingServer
from .conftest import SCALE, Spawn, all_finished, create_runs, events_of, make_plan

CAP = 2
RUNS = 20 * SCALE
PARALLEL = 5
"""Sink steps per run, all ready at once: RUNS x PARALLEL = 100 ready steps (CI variant)."""
DELAY_S = 0.1
TTL_S = 2.0
FINISHED = frozenset({"succeeded", "failed", "cancelled", "needs_attention", "dead_letter"})

pytestmark = pytest.mark.timeout(120 * SCALE)


def steps(tag: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"p{i}",
            "tool": "sink.effect",
            "args": {"name": f"{tag}.p{i}", "body": {"tag": tag, "i": i}},
            "retry": {"max_attempts": 5, "initial_backoff_s": 0.1, "max_backoff_s": 0.5},
        }
        for i in range(PARALLEL)
    ]


async def _sample_slots(pool: asyncpg.Pool, samples: list[int], stop: asyncio.Event) -> None:
    """Granted slots of the tool under live leases, every 20 ms."""
    while not stop.is_set():
        samples.append(
            await pool.fetchval(
                "SELECT count(*) FROM executor.tool_slots s JOIN executor.runs r"
                " ON r.run_id = s.run_id AND r.lease_token = s.lease_token"
                " AND r.lease_expires_at > now()"
                " WHERE s.tool = 'sink.effect' AND s.granted_at IS NOT NULL"
            )
        )
        await asyncio.sleep(0.02)


async def _slot_holder(
    pool: asyncpg.Pool, ids: list[str], sink: RecordingServer
) -> tuple[int, int]:
    """(index in ``ids``, slots held) of a worker holding a slot, once a third of the effects
    are made. Which worker holds one then is the scheduler's doing, so any of them will do."""
    made = (await asyncio.to_thread(sink.stats))["effects"]
    assert made >= RUNS * PARALLEL // 3, f"{made} effects so far"
    rows = await pool.fetch(
        "SELECT r.lease_owner, count(*) AS held FROM executor.tool_slots s JOIN executor.runs r"
        " ON r.run_id = s.run_id AND r.lease_token = s.lease_token"
        " WHERE s.granted_at IS NOT NULL AND r.lease_owner = ANY($1::text[])"
        " GROUP BY r.lease_owner ORDER BY held DESC",
        ids,
    )
    assert rows, "no worker holds a slot yet"
    return ids.index(rows[0]["lease_owner"]), int(rows[0]["held"])


async def test_cap_of_two_holds_through_a_sigkill_and_recovery(
    pool: asyncpg.Pool, sink: RecordingServer, spawn: Spawn
) -> None:
    caps = json.dumps({"sink.effect": CAP})
    workers = [
        spawn(f"w{i}", concurrency=8, lease_ttl_s=TTL_S, tool_concurrency=caps) for i in range(3)
    ]
    ids = [await w.ready() for w in workers]
    await asyncio.to_thread(sink.slow, "*", DELAY_S)

    tags = [f"c{i:04d}" for i in range(RUNS)]
    samples: list[int] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_slots(pool, samples, stop))
    started = time.monotonic()
    run_ids = await create_runs(pool, [make_plan(steps(tag)) for tag in tags])

    # Mid-way: kill a worker while it holds a slot of the tool.
    victim, dead_slots = await until(
        lambda: _slot_holder(pool, ids, sink), timeout_s=30, interval_s=0.01
    )
    effects_before_kill = (await asyncio.to_thread(sink.stats))["effects"]
    assert workers[victim].kill() == -9
    killed = time.monotonic()

    final = await until(lambda: all_finished(pool, run_ids, FINISHED), timeout_s=90 * SCALE)
    elapsed_s = time.monotonic() - started
    stop.set()
    await sampler

    stats = await asyncio.to_thread(sink.stats)
    log = await asyncio.to_thread(sink.log)
    effects = Counter(e["name"] for e in log if e["outcome"] == "effect")
    expected = {f"{tag}.p{i}" for tag in tags for i in range(PARALLEL)}
    events = await events_of(pool, run_ids)
    recovered = {
        e["run_id"] for e in events if e["type"] == "run.leased" and e["payload"].get("recovered")
    }
    survivors = [w for i, w in enumerate(workers) if i != victim]
    waited = [line for w in survivors for line in w.lines() if line["event"] == "slot_waited"]
    print(
        f"\nR15 caps: cap={CAP} ready_steps={RUNS * PARALLEL} workers=3 sink_delay_s={DELAY_S}"
        f" killed_after_effects={effects_before_kill} dead_worker_slots={dead_slots}"
        f" runs_recovered={len(recovered)}"
        f" sink_max_in_flight={stats['max_in_flight'].get('/effects')}"
        f" db_slot_samples={len(samples)} db_max_granted={max(samples)}"
        f" sink_requests={stats['requests']} effects={sum(effects.values())}"
        f" (expected {len(expected)}) replayed={stats['replayed']}"
        f" slot_waits_over_0.5s_logged={len(waited)} total_s={elapsed_s:.1f}"
        f" after_kill_s={time.monotonic() - killed:.1f}"
        f" ideal_serial_s={RUNS * PARALLEL * DELAY_S / CAP:.1f}"
    )

    assert Counter(final.values()) == {"succeeded": RUNS}, Counter(final.values())
    assert set(effects) == expected, sorted(set(effects) ^ expected)[:10]
    assert max(effects.values()) == 1, [n for n, c in effects.items() if c > 1][:10]
    # The cap, at the receiving end (every change of the count, not only samples), and in
    # the database's sampled slots; it was reached (the tool ran at its cap).
    assert stats["max_in_flight"]["/effects"] == CAP
    assert max(samples) <= CAP
    assert samples.count(CAP) > 0
    assert recovered, "no run was recovered from the killed worker"
    histories = await load_histories(pool, run_ids)
    assert_legal(histories, [e["key"] for e in log if e["outcome"] == "effect"])
