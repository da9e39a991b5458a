"""planexec's metric instruments (DESIGN §7) and the approval-wait clock."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from opentelemetry import metrics
from opentelemetry.metrics import Counter, Histogram

SCOPE = "planexec"
"""Instrumentation scope of planexec's own spans and instruments."""

_SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_WAIT_SECONDS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)


@dataclass(frozen=True)
class Instruments:
    """planexec's metric instruments (DESIGN §7); units follow OTel (UCUM, ``s`` for time)."""

    plans: Counter
    """``planexec.plans``: plan versions stored, by ``planexec.plan.status`` (ready/rejected)."""
    plan_steps: Histogram
    """``planexec.plan.steps``: steps per stored plan version."""
    repairs: Counter
    """``planexec.plan.repairs``: generation rounds that repaired a failed attempt."""
    policy_denials: Counter
    """``planexec.policy.denials``: steps a policy decision denied, by ``gen_ai.tool.name``."""
    step_duration: Histogram
    """``planexec.step.duration``: wall time of one step attempt, seconds, by tool."""
    step_failures: Counter
    """``planexec.step.failures``: failed attempts, by tool and ``error.type``."""
    retries: Counter
    """``planexec.step.retries``: retries scheduled, by tool."""
    time_to_first_execution: Histogram
    """``planexec.run.time_to_first_execution``: run creation to the start of its first step,
    seconds (database clock at creation, worker clock at the start)."""
    approval_wait: Histogram
    """``planexec.approval.wait``: approval gate opened to decision applied, seconds."""


def _instruments() -> Instruments:
    meter = metrics.get_meter(SCOPE)
    return Instruments(
        plans=meter.create_counter("planexec.plans", "{plan}", "Plan versions stored"),
        plan_steps=meter.create_histogram(
            "planexec.plan.steps",
            "{step}",
            "Steps per stored plan version",
            explicit_bucket_boundaries_advisory=(0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 100),
        ),
        repairs=meter.create_counter(
            "planexec.plan.repairs", "{repair}", "Generation rounds that repaired an attempt"
        ),
        policy_denials=meter.create_counter(
            "planexec.policy.denials", "{step}", "Steps denied by a policy decision"
        ),
        step_duration=meter.create_histogram(
            "planexec.step.duration",
            "s",
            "Wall time of one step attempt",
            explicit_bucket_boundaries_advisory=_SECONDS,
        ),
        step_failures=meter.create_counter(
            "planexec.step.failures", "{attempt}", "Failed step attempts"
        ),
        retries=meter.create_counter("planexec.step.retries", "{retry}", "Retries scheduled"),
        time_to_first_execution=meter.create_histogram(
            "planexec.run.time_to_first_execution",
            "s",
            "Run creation to the start of its first step",
            explicit_bucket_boundaries_advisory=_SECONDS,
        ),
        approval_wait=meter.create_histogram(
            "planexec.approval.wait",
            "s",
            "Approval gate opened to decision",
            explicit_bucket_boundaries_advisory=_WAIT_SECONDS,
        ),
    )


METRICS = _instruments()
"""The instruments; they record into the Prometheus reader once ``setup_telemetry`` ran."""


class ApprovalClock:
    """Remembers when approval gates opened, to observe ``planexec.approval.wait``.

    Process-local and bounded (oldest entries dropped past ``capacity``): a decision applied
    by another process than the one that opened the gate is not measured.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self._opened: OrderedDict[tuple[object, str], float] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def opened(self, run_id: object, step_id: str) -> None:
        """Note that the gate of ``step_id`` in run ``run_id`` opened now."""
        with self._lock:
            self._opened[(run_id, step_id)] = time.monotonic()
            while len(self._opened) > self._capacity:
                self._opened.popitem(last=False)

    def decided(self, run_id: object, step_id: str) -> float | None:
        """Record the wait of a decided gate; the wait in seconds, None when not seen open."""
        with self._lock:
            started = self._opened.pop((run_id, step_id), None)
        if started is None:
            return None
        wait = time.monotonic() - started
        METRICS.approval_wait.record(wait)
        return wait


APPROVALS = ApprovalClock()
"""The process's approval clock."""


def metrics_text() -> tuple[bytes, str]:
    """(body, content type) of the process's metrics in the Prometheus text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
