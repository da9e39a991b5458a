"""Replanning a run after a step failed for good with ``on_failure: replan`` (DESIGN §6).

The planner makes version n+1 from the failure context; it is validated and checked against
policy there (for the plan's creator, never the executor's service key), and a revision that
adds a side-effecting call needs a fresh approval. Here it is admitted like any dispatched
plan (hash, signature, schema, catalog version, status), the carried-over steps are worked
out (``domain.replan``) and the run switches to it in one fenced statement.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from shared_schemas import Plan, PolicyDecision

from ..domain.admission import admit
from ..domain.replan import OldStep, carry_over
from ..planner_client import PlannerClient, PlannerUnavailableError
from ..store.runs import EventWrite, StepRow
from ..tools.base import ToolAdapter

if TYPE_CHECKING:
    from .driver import RunDriver

MAX_CONTEXT_OUTPUT_BYTES = 4096
"""Largest step output quoted in a failure context, in bytes of compact JSON."""


@dataclass(frozen=True)
class Revised:
    """The version a run switched to, as stored."""

    plan: Plan
    policy_decisions: list[PolicyDecision]
    rows: list[StepRow]
    tool_specs: dict[str, str]


def _quoted(output: Any) -> Any:
    text = json.dumps(output, separators=(",", ":"), default=str)
    if len(text) <= MAX_CONTEXT_OUTPUT_BYTES:
        return output
    return {"truncated_json": text[:MAX_CONTEXT_OUTPUT_BYTES]}


class Replanner:
    """Asks the planner for a revision and switches a leased run to it."""

    def __init__(
        self,
        planner: PlannerClient,
        *,
        signing_key: bytes,
        accepted_schema_ids: tuple[str, ...],
        catalog_version: str,
        tools: Callable[[str], ToolAdapter | None],
    ) -> None:
        self._planner = planner
        self._signing_key = signing_key
        self._accepted = accepted_schema_ids
        self._catalog_version = catalog_version
        self._tools = tools

    def _failed(self, driver: RunDriver, step_id: str, reason: str, **extra: Any) -> None:
        driver.batch.events.append(
            EventWrite("replan.failed", step_id, payload={"reason": reason[:2000], **extra})
        )

    async def replan(self, driver: RunDriver, step_id: str) -> Revised | None:
        """Switch ``driver``'s run to a revision of its plan.

        Returns None, with a ``replan.failed`` event staged, when the planner could not make
        an admissible revision.

        Raises:
            LeaseLostError: the run's lease was lost; nothing was written.
        """
        from .driver import LeaseLostError
        from .pinning import pinned_specs

        plan = driver.plan
        context = {
            "failed_step": step_id,
            "error": driver.rows[step_id].error,
            "completed": {
                sid: {"output": _quoted(row.output)}
                for sid, row in driver.rows.items()
                if row.status == "succeeded"
            },
        }
        try:
            found = await self._planner.replan(
                plan.tenant, plan.plan_id, plan.version, driver.run_id, context
            )
        except PlannerUnavailableError as exc:
            self._failed(driver, step_id, str(exc))
            return None
        refusal = admit(
            found.plan,
            status=found.status,
            signing_key=self._signing_key,
            accepted_schema_ids=self._accepted,
            catalog_version=self._catalog_version,
        )
        if refusal is not None:
            self._failed(driver, step_id, refusal.message, code=refusal.code)
            return None
        old = {
            sid: OldStep(driver.steps[sid].tool, row.status, row.resolved_args, row.output)
            for sid, row in driver.rows.items()
            if sid in driver.steps
        }
        split = carry_over(found.plan, old)
        rows: list[StepRow] = []
        for step in found.plan.steps:
            previous = driver.rows.get(step.id)
            if step.id in split.carried and previous is not None:
                rows.append(replace(previous))
            else:
                rows.append(
                    StepRow(
                        step.id,
                        "blocked" if step.depends_on else "ready",
                        attempts=previous.attempts if previous is not None else 0,
                    )
                )
        specs = pinned_specs(found.plan, self._tools)
        event = {
            "from_version": plan.version,
            "to_version": found.plan.version,
            "failed_step": step_id,
            "carried": sorted(split.carried),
            "fresh": split.fresh,
            "removed": split.removed,
            "approval_required": [s.id for s in found.plan.steps if s.requires_approval],
        }
        stored = await driver.store.replan(
            driver.run_id,
            driver.claimed.lease_token,
            found.plan,
            found.policy_decisions,
            rows,
            event,
            specs,
        )
        if not stored:
            raise LeaseLostError(f"run {driver.run_id}: lease lost")
        return Revised(found.plan, found.policy_decisions, rows, specs)
