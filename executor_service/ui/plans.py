"""The plan screen's data: read from the planner with the user's own key, and version diffs.

The console never reads plans with the executor's service key: the planner sees the
logged-in user's ``X-API-Key`` and enforces tenancy itself.
"""

from __future__ import annotations

import asyncio
import difflib
import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx2

from planexec.errors import NotFoundError, ServiceUnavailableError

from .session import LoginRequiredError

MAX_VERSIONS_LISTED = 20
"""The plan screen lists (and fetches) at most this many latest versions."""

DIFF_EXCLUDED = frozenset({"content_hash", "signature", "traceparent", "version"})
"""Plan fields left out of a diff: they differ between any two versions."""


class PlannerReader:
    """GETs of the planner's plan routes, as the user whose key it holds.

    Args:
        base_url: the planner's URL (``PLANEXEC_PLANNER_URL``).
        api_key: the logged-in user's key.
        timeout_s: per request, in seconds.
    """

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 10.0) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = {"X-API-Key": api_key}
        self._timeout_s = timeout_s

    async def _get(self, client: httpx2.AsyncClient, path: str, **params: Any) -> Any:
        try:
            response = await client.get(
                self._base_url + path,
                params={k: v for k, v in params.items() if v is not None},
                headers=self._headers,
            )
        except httpx2.HTTPError as exc:
            raise ServiceUnavailableError(f"the planner cannot be reached: {exc}") from exc
        if response.status_code == 401:
            raise LoginRequiredError
        if response.status_code == 404:
            raise NotFoundError(f"{path} not found")
        if response.status_code != 200:
            raise ServiceUnavailableError(f"the planner answered HTTP {response.status_code}")
        return response.json()

    def _client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(timeout=self._timeout_s)

    async def list_plans(self, *, status: str | None, cursor: str | None) -> dict[str, Any]:
        """``GET /v1/plans``: ``{items, next_cursor}``.

        Raises:
            NotFoundError, ServiceUnavailableError, LoginRequiredError: as the planner says.
        """
        async with self._client() as client:
            page: dict[str, Any] = await self._get(
                client, "/v1/plans", status=status, cursor=cursor, limit=50
            )
            return page

    async def plan(
        self, plan_id: UUID, version: int | None, also: tuple[int, ...] = ()
    ) -> PlanPageData:
        """Versions, the chosen one (default: the latest) and its provenance.

        The newest ``MAX_VERSIONS_LISTED`` versions are fetched, plus ``version`` and the
        versions in ``also`` (e.g. the two sides of a diff).

        Raises:
            NotFoundError: no such plan or version for this user's tenant.
            ServiceUnavailableError: the planner cannot be reached or failed.
            LoginRequiredError: the planner no longer accepts the user's key.
        """
        async with self._client() as client:
            latest: dict[str, Any] = await self._get(client, f"/v1/plans/{plan_id}")
            newest = int(latest["version"])
            numbers = list(range(newest, max(newest - MAX_VERSIONS_LISTED, 0), -1))
            for extra in (version, *also):
                if extra is not None and 1 <= extra <= newest and extra not in numbers:
                    numbers.append(extra)
            if version is not None and not 1 <= version <= newest:
                raise NotFoundError(f"plan {plan_id} has no version {version}")

            async def fetch(n: int) -> dict[str, Any]:
                if n == newest:
                    return latest
                found: dict[str, Any] = await self._get(client, f"/v1/plans/{plan_id}/versions/{n}")
                return found

            versions = await asyncio.gather(*(fetch(n) for n in numbers))
            chosen = version if version is not None else newest
            provenance = await self._get(
                client, f"/v1/plans/{plan_id}/versions/{chosen}/provenance"
            )
        by_number = {v["version"]: v for v in versions}
        return PlanPageData(
            versions=[by_number[n] for n in sorted(by_number, reverse=True)],
            current=by_number[chosen],
            provenance=provenance,
        )


@dataclass(frozen=True)
class PlanPageData:
    """What the plan screen shows, as the planner returned it."""

    versions: list[dict[str, Any]]
    """The listed versions, newest first."""
    current: dict[str, Any]
    """The version shown (``PlanVersionPublic``)."""
    provenance: dict[str, Any]
    """Its generation attempts (``Provenance``)."""


@dataclass(frozen=True)
class DiffLine:
    """One line of a unified diff."""

    kind: str
    """``add``, ``del``, ``hunk``, ``file`` or ``same``."""
    text: str


def plan_text(version: dict[str, Any]) -> list[str]:
    """A version's plan as pretty JSON lines (sorted keys), without per-version fields."""
    body = {k: v for k, v in version["plan"].items() if k not in DIFF_EXCLUDED}
    body["status"] = version.get("status")
    return json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def version_diff(old: dict[str, Any], new: dict[str, Any]) -> list[DiffLine]:
    """The unified diff (3 lines of context) from plan version ``old`` to ``new``."""
    lines = difflib.unified_diff(
        plan_text(old),
        plan_text(new),
        fromfile=f"version {old['version']}",
        tofile=f"version {new['version']}",
        lineterm="",
    )
    out = []
    for line in lines:
        if line.startswith(("+++", "---")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "same"
        out.append(DiffLine(kind, line))
    return out
