"""The approval gates of one driven run (DESIGN §6, Approval gates).

A gated step waits in ``awaiting_approval`` with its arguments resolved, so the approver
sees exactly what will run; the decision is bound to the hash (RFC 8785, SHA-256) of those
arguments. A gate may have a deadline (database clock); past it the gate counts as a
rejection, recorded by ``system:deadline`` in the same table as approvers' decisions, so the
first decision on record wins. Opening a gate announces it on the approval webhook.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared_schemas.canonical import sha256_digest

from ..domain.arguments import RefResolutionError, resolve_args
from ..domain.states import StepStatus
from ..domain.transitions import ApprovalDecided, Gate
from .webhook import GateWebhook

if TYPE_CHECKING:
    from .driver import RunDriver


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


class Gates:
    """What a driver knows of its run's gates: decisions taken, hashes bound, notices due."""

    def __init__(self, driver: RunDriver, webhook: GateWebhook | None) -> None:
        self._d = driver
        self._webhook = webhook
        self.approved: set[str] = set()
        """Gated steps an approver let through."""
        self.decided: set[str] = set()
        """Gated steps with a decision applied."""
        self.hashes: dict[str, str | None] = {}
        """Step id -> the ``args_hash`` its decision is bound to."""
        self.seen = 0
        """Decisions on record when last read."""
        self._notices: list[dict[str, Any]] = []
        self._background: set[asyncio.Task[Any]] = set()

    def rule_ids(self, step_id: str) -> list[str]:
        """Ids of the policies that decided the step (those that asked for an approval)."""
        return [
            rule
            for decision in self._d.claimed.policy_decisions
            if decision.step_id == step_id
            for rule in decision.rule_ids
        ]

    def open(self, step_id: str) -> None:
        """Open a gate: resolve and hash the arguments, set the deadline, stage the event."""
        d = self._d
        step = d.steps[step_id]
        row = d.rows[step_id]
        try:
            row.resolved_args = resolve_args(step.args, d.outputs)
            row.args_hash = sha256_digest(row.resolved_args)
        except RefResolutionError:
            row.resolved_args = None  # the step will fail with the reason once approved
            row.args_hash = None
        timeout_s = step.approval_timeout_s or d.config.approval_timeout_s
        row.gate_deadline = None if timeout_s is None else d.db_now() + timedelta(seconds=timeout_s)
        d.apply(step_id, Gate())
        self._notices.append(
            {
                "type": "approval.requested",
                "tenant": d.plan.tenant,
                "run_id": str(d.run_id),
                "step_id": step_id,
                "tool": step.tool,
                "args": row.resolved_args,
                "args_hash": row.args_hash,
                "deadline": _iso(row.gate_deadline),
                "rule_ids": self.rule_ids(step_id),
                "approval_path": f"/v1/runs/{d.run_id}/steps/{step_id}/approval",
            }
        )

    def take(self, approvals: list[dict[str, Any]]) -> None:
        """Apply the decisions on record that this driver has not applied yet."""
        d = self._d
        self.seen = max(self.seen, len(approvals))
        for decision in approvals:
            step_id = decision["step_id"]
            if step_id in self.decided or step_id not in d.steps:
                continue
            self.decided.add(step_id)
            self.hashes[step_id] = decision.get("args_hash")
            row = d.rows[step_id]
            approved = decision["decision"] == "approve"
            if row.status == StepStatus.AWAITING_APPROVAL:
                d.apply(step_id, ApprovalDecided(approved, decision["by"], decision["comment"]))
            if approved:
                self.approved.add(step_id)
            elif row.status in (StepStatus.BLOCKED, StepStatus.READY):
                # Rejected before the gate opened: decided at the gate.
                d.apply(step_id, Gate())
                d.apply(step_id, ApprovalDecided(False, decision["by"], decision["comment"]))

    def next_deadline(self) -> datetime | None:
        """The earliest deadline of an open gate (database clock), or None."""
        deadlines = [
            row.gate_deadline
            for row in self._d.rows.values()
            if row.status == StepStatus.AWAITING_APPROVAL and row.gate_deadline is not None
        ]
        return min(deadlines) if deadlines else None

    async def expire(self) -> None:
        """Reject each gate past its deadline (database clock), then apply the decisions.

        An approver who decided first wins: there is one decision row per gate.
        """
        d = self._d
        due = self.next_deadline()
        if due is None or due > d.db_now():
            return
        await d.flush()
        if await d.store.expire_gates(d.run_id, d.claimed.lease_token):
            self.take(await d.store.approvals(d.run_id))

    def send_notices(self) -> None:
        """Deliver the ``approval.requested`` events of gates committed as open."""
        notices, self._notices = self._notices, []
        if self._webhook is None:
            return
        for notice in notices:
            task = asyncio.create_task(self._webhook.deliver(notice))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def keep_only(self, step_ids: set[str]) -> None:
        """Forget the decisions of steps not in ``step_ids`` (a replan made them new)."""
        self.approved &= step_ids
        self.decided &= step_ids
        self.hashes = {}
        self.seen = 0
