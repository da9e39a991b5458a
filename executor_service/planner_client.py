"""The executor's HTTP client of the planner: dispatch claims, acks, plan fetches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx2
from opentelemetry import trace

from planexec.telemetry import TRACER, context_from_traceparent
from shared_schemas import Plan, PolicyDecision


class PlannerUnavailableError(RuntimeError):
    """The planner did not answer or answered with a server error."""


@dataclass(frozen=True)
class DispatchedPlan:
    """A plan version handed to the executor."""

    plan: Plan
    policy_decisions: list[PolicyDecision]
    status: str
    dispatch_id: UUID | None = None


class PlannerClient:
    """Talks to the planner with the executor's service key (scope ``planexec:dispatch``)."""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 40.0) -> None:
        self._client = httpx2.AsyncClient(
            base_url=base_url, headers={"X-API-Key": api_key}, timeout=timeout_s
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def claim(
        self, worker: str, *, max_items: int, lease_s: float, wait_s: float
    ) -> list[DispatchedPlan]:
        """Claim queued plans, long-polling up to ``wait_s`` seconds (``dispatch.claim`` span).

        The span links to the trace of each claimed plan (its ``traceparent``).

        Raises:
            PlannerUnavailableError: on a connection error or a 5xx.
        """
        body = {"worker": worker, "max_items": max_items, "lease_s": lease_s, "wait_s": wait_s}
        attributes = {"planexec.worker": worker}
        with TRACER.start_as_current_span("dispatch.claim", attributes=attributes) as span:
            data = (await self._send("POST", "/v1/dispatch/claim", json=body)).json()
            claimed = self._claimed(data)
            span.set_attribute("planexec.dispatch.claimed", len(claimed))
            for item in claimed:
                parent = context_from_traceparent(item.plan.traceparent)
                if parent is not None:
                    span.add_link(trace.get_current_span(parent).get_span_context())
            return claimed

    @staticmethod
    def _claimed(data: dict[str, Any]) -> list[DispatchedPlan]:
        return [
            DispatchedPlan(
                plan=Plan.model_validate(item["plan"]),
                policy_decisions=[
                    PolicyDecision.model_validate(d) for d in item["policy_decisions"]
                ],
                status="ready",
                dispatch_id=UUID(item["dispatch_id"]),
            )
            for item in data["items"]
        ]

    async def ack(self, dispatch_id: UUID, worker: str, run_id: UUID) -> bool:
        """Acknowledge a claim; False when the lease was lost (the entry is re-dispatched)."""
        response = await self._send(
            "POST",
            f"/v1/dispatch/{dispatch_id}/ack",
            json={"worker": worker, "run_id": str(run_id)},
            ok=(204, 409),
        )
        return response.status_code == 204

    async def fetch(self, tenant: str, plan_id: UUID, version: int) -> DispatchedPlan | None:
        """A tenant's plan version, or None when the planner has no such plan."""
        response = await self._send(
            "GET",
            f"/v1/dispatch/plans/{plan_id}/versions/{version}",
            params={"tenant": tenant},
            ok=(200, 404),
        )
        if response.status_code == 404:
            return None
        data = response.json()
        return DispatchedPlan(
            plan=Plan.model_validate(data["plan"]),
            policy_decisions=[PolicyDecision.model_validate(d) for d in data["policy_decisions"]],
            status=data["status"],
        )

    async def replan(
        self,
        tenant: str,
        plan_id: UUID,
        base_version: int,
        run_id: UUID,
        failure_context: dict[str, Any],
    ) -> DispatchedPlan:
        """Ask the planner for version n+1 after a failure (``replanForExecutor``).

        Raises:
            PlannerUnavailableError: the planner is unreachable or refused (409: the plan
                moved on; 422: it cannot regenerate); the message carries its answer.
        """
        response = await self._send(
            "POST",
            f"/v1/dispatch/plans/{plan_id}/revisions",
            json={
                "tenant": tenant,
                "base_version": base_version,
                "run_id": str(run_id),
                "failure_context": failure_context,
            },
            ok=(201,),
        )
        data = response.json()
        return DispatchedPlan(
            plan=Plan.model_validate(data["plan"]),
            policy_decisions=[PolicyDecision.model_validate(d) for d in data["policy_decisions"]],
            status=data["status"],
        )

    async def _send(
        self, method: str, url: str, *, ok: tuple[int, ...] = (200,), **kwargs: object
    ) -> httpx2.Response:
        try:
            response = await self._client.request(method, url, **kwargs)  # type: ignore[arg-type]
        except httpx2.HTTPError as exc:
            raise PlannerUnavailableError(f"planner unreachable: {exc}") from exc
        if response.status_code not in ok:
            raise PlannerUnavailableError(
                f"planner answered {response.status_code} to {method} {url}: {response.text[:300]}"
            )
        return response
