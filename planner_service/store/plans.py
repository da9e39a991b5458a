"""Plans, plan versions and their provenance (schema ``planner``).

Every query filters on ``tenant``: another tenant's plan is indistinguishable from a missing one.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared_schemas import Plan, PolicyDecision, ValidationReport


@dataclass(frozen=True)
class StoredVersion:
    """One stored plan version with its reports."""

    plan: Plan
    status: str
    validation: ValidationReport
    policy_decisions: list[PolicyDecision]
    options: dict[str, Any]
    cache_hit: bool
    cached_from: dict[str, Any] | None
    created_at: datetime


@dataclass(frozen=True)
class PlanSummary:
    """A plan in a listing: its latest version's status."""

    plan_id: UUID
    latest_version: int
    status: str
    intent: str
    created_by: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class NewAttempt:
    """Provenance of one generation attempt to persist (already redacted)."""

    backend: str
    model: str | None
    prompt_version: str | None
    messages: list[dict[str, Any]]
    parameters: dict[str, Any]
    raw_response: str | None
    input_tokens: int | None
    output_tokens: int | None
    latency_s: float
    error: str | None
    issues: list[dict[str, Any]]
    cache_hit: bool = False


@dataclass(frozen=True)
class AttemptRow(NewAttempt):
    """A stored generation attempt."""

    attempt: int = 0
    created_at: datetime | None = None


@dataclass(frozen=True)
class NewVersion:
    """A plan version to persist with everything recorded about how it was made."""

    plan: Plan
    status: str
    validation: ValidationReport
    policy_decisions: list[PolicyDecision]
    attempts: list[NewAttempt]
    options: dict[str, Any] = field(default_factory=dict)
    cache_hit: bool = False
    cached_from: dict[str, Any] | None = None
    idempotency: tuple[str, str] | None = None
    """(key, request hash) to record with the version."""
    cache_entry: tuple[str, float] | None = None
    """(cache key, TTL in seconds) to record, when the body may be reused."""
    enqueue: bool = False
    """Put the version on the dispatch queue (a ``ready`` plan asked to execute)."""


def _encode_cursor(created_at: datetime, plan_id: UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(plan_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """Decode a listing cursor.

    Raises:
        ValueError: when the cursor was not produced by this service.

    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, plan_id = json.loads(raw)
        return datetime.fromisoformat(created_at), UUID(plan_id)
    except (ValueError, TypeError) as exc:
        raise ValueError("invalid cursor") from exc


_VERSION_COLUMNS = (
    "v.body, v.status, v.validation, v.policy_decisions, v.options, v.cache_hit,"
    " v.cached_from, v.created_at"
)


def _stored(row: Any) -> StoredVersion:
    return StoredVersion(
        plan=Plan.model_validate(row.body),
        status=row.status,
        validation=ValidationReport.model_validate(row.validation),
        policy_decisions=[PolicyDecision.model_validate(d) for d in row.policy_decisions],
        options=row.options,
        cache_hit=row.cache_hit,
        cached_from=row.cached_from,
        created_at=row.created_at,
    )


_INSERT_NEW_PLAN = """
WITH plan AS (
    INSERT INTO planner.plans (tenant, plan_id, latest_version, status, intent, created_by)
    VALUES (:tenant, :plan_id, 1, :status, :intent, :created_by)
    RETURNING tenant
), version AS (
    INSERT INTO planner.plan_versions (tenant, plan_id, version, status, body, content_hash,
        signature, validation, policy_decisions, options, cache_hit, cached_from)
    SELECT plan.tenant, CAST(:plan_id AS uuid), 1, CAST(:status AS text), CAST(:body AS jsonb),
        CAST(:hash AS text), CAST(:signature AS text), CAST(:validation AS jsonb),
        CAST(:decisions AS jsonb), CAST(:options AS jsonb), CAST(:cache_hit AS boolean),
        CAST(:cached_from AS jsonb)
    FROM plan
    RETURNING created_at
), attempts AS (
    INSERT INTO planner.generation_attempts (tenant, plan_id, version, attempt, backend, model,
        prompt_version, messages, parameters, raw_response, input_tokens, output_tokens,
        latency_s, error, issues, cache_hit)
    SELECT CAST(:tenant AS text), CAST(:plan_id AS uuid), 1, a.attempt, a.backend, a.model,
        a.prompt_version, a.messages, a.parameters, a.raw_response, a.input_tokens,
        a.output_tokens, a.latency_s, a.error, a.issues, a.cache_hit
    FROM version, jsonb_to_recordset(CAST(:attempts AS jsonb)) AS a(attempt integer,
        backend text, model text, prompt_version text, messages jsonb, parameters jsonb,
        raw_response text, input_tokens integer, output_tokens integer,
        latency_s double precision, error text, issues jsonb, cache_hit boolean)
    RETURNING 1
), cache AS (
    INSERT INTO planner.plan_cache (tenant, cache_key, plan_id, version, expires_at)
    SELECT CAST(:tenant AS text), CAST(:cache_key AS text), CAST(:plan_id AS uuid), 1,
        now() + make_interval(secs => CAST(:ttl AS double precision))
    FROM version WHERE CAST(:cache_key AS text) IS NOT NULL
    ON CONFLICT (tenant, cache_key) DO UPDATE SET plan_id = EXCLUDED.plan_id,
        version = EXCLUDED.version, expires_at = EXCLUDED.expires_at
    RETURNING 1
), dispatch AS (
    INSERT INTO planner.dispatch (tenant, plan_id, version)
    SELECT CAST(:tenant AS text), CAST(:plan_id AS uuid), 1
    FROM version WHERE CAST(:enqueue AS boolean)
    RETURNING 1
), notified AS (
    SELECT pg_notify('planexec_dispatch', '') FROM dispatch
)
SELECT (SELECT created_at FROM version), (SELECT count(*) FROM notified)
"""


def _attempt_row(number: int, a: NewAttempt) -> dict[str, Any]:
    return {
        "attempt": number,
        "backend": a.backend,
        "model": a.model,
        "prompt_version": a.prompt_version,
        "messages": a.messages,
        "parameters": a.parameters,
        "raw_response": a.raw_response,
        "input_tokens": a.input_tokens,
        "output_tokens": a.output_tokens,
        "latency_s": a.latency_s,
        "error": a.error,
        "issues": a.issues,
        "cache_hit": a.cache_hit,
    }


def _new_plan_params(new: NewVersion) -> dict[str, Any]:
    plan = new.plan
    cache_key, ttl = new.cache_entry if new.cache_entry is not None else (None, 0.0)
    return {
        "tenant": plan.tenant,
        "plan_id": plan.plan_id,
        "status": new.status,
        "intent": plan.intent,
        "created_by": plan.created_by,
        "body": plan.model_dump_json(),
        "hash": plan.content_hash,
        "signature": plan.signature,
        "validation": new.validation.model_dump_json(),
        "decisions": json.dumps([d.model_dump(mode="json") for d in new.policy_decisions]),
        "options": json.dumps(new.options),
        "cache_hit": new.cache_hit,
        "cached_from": None if new.cached_from is None else json.dumps(new.cached_from),
        "attempts": json.dumps([_attempt_row(n, a) for n, a in enumerate(new.attempts, 1)]),
        "cache_key": cache_key,
        "ttl": ttl,
        "enqueue": new.enqueue,
    }


class PlanStore:
    """Repository of plans; each public method is one transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # Single-statement reads and writes need no BEGIN/COMMIT round trips.
        self._auto = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def get_version(
        self, tenant: str, plan_id: UUID, version: int | None = None
    ) -> StoredVersion | None:
        """A version of a plan of ``tenant`` (the latest when ``version`` is None)."""
        if version is None:
            sql = (
                f"SELECT {_VERSION_COLUMNS} FROM planner.plan_versions v"
                " JOIN planner.plans p USING (tenant, plan_id)"
                " WHERE v.tenant = :tenant AND v.plan_id = :plan_id"
                " AND v.version = p.latest_version"
            )
        else:
            sql = (
                f"SELECT {_VERSION_COLUMNS} FROM planner.plan_versions v"
                " WHERE tenant = :tenant AND plan_id = :plan_id AND version = :version"
            )
        async with self._auto.connect() as conn:
            row = (
                await conn.execute(
                    text(sql), {"tenant": tenant, "plan_id": plan_id, "version": version}
                )
            ).first()
        return None if row is None else _stored(row)

    async def list_plans(
        self, tenant: str, *, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[PlanSummary], str | None]:
        """Plans of ``tenant``, newest first, and the cursor of the next page (or None).

        Raises:
            ValueError: for a cursor this service did not produce.

        """
        after = decode_cursor(cursor) if cursor else None
        sql = (
            "SELECT plan_id, latest_version, status, intent, created_by, created_at, updated_at"
            " FROM planner.plans WHERE tenant = :tenant"
            " AND (CAST(:status AS text) IS NULL OR status = :status)"
        )
        params: dict[str, Any] = {"tenant": tenant, "status": status, "limit": limit + 1}
        if after is not None:
            sql += " AND (created_at, plan_id) < (:after_at, :after_id)"
            params.update(after_at=after[0], after_id=after[1])
        sql += " ORDER BY created_at DESC, plan_id DESC LIMIT :limit"
        async with self._auto.connect() as conn:
            rows = (await conn.execute(text(sql), params)).all()
        items = [PlanSummary(*row) for row in rows[:limit]]
        next_cursor = (
            _encode_cursor(items[-1].created_at, items[-1].plan_id) if len(rows) > limit else None
        )
        return items, next_cursor

    async def list_attempts(self, tenant: str, plan_id: UUID, version: int) -> list[AttemptRow]:
        """Every generation attempt of one version, in order."""
        sql = (
            "SELECT backend, model, prompt_version, messages, parameters, raw_response,"
            " input_tokens, output_tokens, latency_s, error, issues, cache_hit, attempt, created_at"
            " FROM planner.generation_attempts"
            " WHERE tenant = :tenant AND plan_id = :plan_id AND version = :version"
            " ORDER BY attempt"
        )
        async with self._auto.connect() as conn:
            rows = (
                await conn.execute(
                    text(sql), {"tenant": tenant, "plan_id": plan_id, "version": version}
                )
            ).all()
        return [AttemptRow(*row) for row in rows]

    async def find_idempotent(self, tenant: str, key: str) -> tuple[str, UUID, int] | None:
        """(request hash, plan id, version) recorded under an ``Idempotency-Key``, if any."""
        sql = (
            "SELECT request_hash, plan_id, version FROM planner.idempotency_keys"
            " WHERE tenant = :tenant AND key = :key"
        )
        async with self._auto.connect() as conn:
            row = (await conn.execute(text(sql), {"tenant": tenant, "key": key})).first()
        return None if row is None else (row.request_hash, row.plan_id, row.version)

    async def find_cached(self, tenant: str, cache_key: str) -> StoredVersion | None:
        """The unexpired cached version for ``cache_key``, if any."""
        sql = (
            f"SELECT {_VERSION_COLUMNS}"
            " FROM planner.plan_cache c JOIN planner.plan_versions v"
            " ON v.tenant = c.tenant AND v.plan_id = c.plan_id AND v.version = c.version"
            " WHERE c.tenant = :tenant AND c.cache_key = :key AND c.expires_at > now()"
        )
        async with self._auto.connect() as conn:
            row = (await conn.execute(text(sql), {"tenant": tenant, "key": cache_key})).first()
        return None if row is None else _stored(row)

    async def create_version(self, new: NewVersion) -> StoredVersion | None:
        """Persist a version, its attempts, idempotency key and cache entry atomically.

        A new plan without an idempotency key is written by one statement (data-modifying
        CTEs), the other cases by one transaction.

        Returns:
            The stored version, or None (and nothing written) when the version number or the
            idempotency key was taken by a concurrent request; the caller then reads the
            winner.
        """
        if new.idempotency is None and new.plan.version == 1:
            async with self._auto.connect() as conn:
                created_at = await conn.scalar(text(_INSERT_NEW_PLAN), _new_plan_params(new))
        else:
            async with self._engine.begin() as conn:
                created_at = await self._insert(conn, new)
        if created_at is None:
            return None
        return StoredVersion(
            plan=new.plan,
            status=new.status,
            validation=new.validation,
            policy_decisions=new.policy_decisions,
            options=new.options,
            cache_hit=new.cache_hit,
            cached_from=new.cached_from,
            created_at=created_at,
        )

    async def _insert(self, conn: AsyncConnection, new: NewVersion) -> datetime | None:
        plan = new.plan
        key = {"tenant": plan.tenant, "plan_id": plan.plan_id, "version": plan.version}
        if new.idempotency is not None:
            claimed = await conn.execute(
                text(
                    "INSERT INTO planner.idempotency_keys (tenant, key, request_hash, plan_id,"
                    " version) VALUES (:tenant, :key, :hash, :plan_id, :version)"
                    " ON CONFLICT DO NOTHING"
                ),
                {**key, "key": new.idempotency[0], "hash": new.idempotency[1]},
            )
            if not claimed.rowcount:
                await conn.rollback()
                return None
        if plan.version == 1:
            await conn.execute(
                text(
                    "INSERT INTO planner.plans (tenant, plan_id, latest_version, status, intent,"
                    " created_by) VALUES (:tenant, :plan_id, 1, :status, :intent, :created_by)"
                ),
                {**key, "status": new.status, "intent": plan.intent, "created_by": plan.created_by},
            )
        else:
            moved = await conn.execute(
                text(
                    "UPDATE planner.plans SET latest_version = :version, status = :status,"
                    " updated_at = now() WHERE tenant = :tenant AND plan_id = :plan_id"
                    " AND latest_version = :version - 1"
                ),
                {**key, "status": new.status},
            )
            if not moved.rowcount:
                await conn.rollback()
                return None
        created_at = await conn.scalar(
            text(
                "INSERT INTO planner.plan_versions (tenant, plan_id, version, status, body,"
                " content_hash, signature, validation, policy_decisions, options, cache_hit,"
                " cached_from) VALUES (:tenant, :plan_id, :version, :status, :body, :hash,"
                " :signature, :validation, :decisions, :options, :cache_hit, :cached_from)"
                " RETURNING created_at"
            ),
            {
                **key,
                "status": new.status,
                "body": json.dumps(plan.model_dump(mode="json")),
                "hash": plan.content_hash,
                "signature": plan.signature,
                "validation": new.validation.model_dump_json(),
                "decisions": json.dumps([d.model_dump(mode="json") for d in new.policy_decisions]),
                "options": json.dumps(new.options),
                "cache_hit": new.cache_hit,
                "cached_from": None if new.cached_from is None else json.dumps(new.cached_from),
            },
        )
        if new.attempts:
            await conn.execute(
                text(
                    "INSERT INTO planner.generation_attempts (tenant, plan_id, version, attempt,"
                    " backend, model, prompt_version, messages, parameters, raw_response,"
                    " input_tokens, output_tokens, latency_s, error, issues, cache_hit) VALUES"
                    " (:tenant, :plan_id, :version, :attempt, :backend, :model, :prompt_version,"
                    " :messages, :parameters, :raw_response, :input_tokens, :output_tokens,"
                    " :latency_s, :error, :issues, :cache_hit)"
                ),
                [
                    {
                        **key,
                        "attempt": n,
                        "backend": a.backend,
                        "model": a.model,
                        "prompt_version": a.prompt_version,
                        "messages": json.dumps(a.messages),
                        "parameters": json.dumps(a.parameters),
                        "raw_response": a.raw_response,
                        "input_tokens": a.input_tokens,
                        "output_tokens": a.output_tokens,
                        "latency_s": a.latency_s,
                        "error": a.error,
                        "issues": json.dumps(a.issues),
                        "cache_hit": a.cache_hit,
                    }
                    for n, a in enumerate(new.attempts, start=1)
                ],
            )
        if new.cache_entry is not None:
            await conn.execute(
                text(
                    "INSERT INTO planner.plan_cache (tenant, cache_key, plan_id, version,"
                    " expires_at) VALUES (:tenant, :cache_key, :plan_id, :version,"
                    " now() + make_interval(secs => :ttl)) ON CONFLICT (tenant, cache_key) DO"
                    " UPDATE SET plan_id = EXCLUDED.plan_id, version = EXCLUDED.version,"
                    " expires_at = EXCLUDED.expires_at"
                ),
                {**key, "cache_key": new.cache_entry[0], "ttl": new.cache_entry[1]},
            )
        if new.enqueue:
            await conn.execute(
                text(
                    "INSERT INTO planner.dispatch (tenant, plan_id, version)"
                    " VALUES (:tenant, :plan_id, :version)"
                ),
                key,
            )
            await conn.execute(text("SELECT pg_notify('planexec_dispatch', '')"))
        return created_at  # type: ignore[no-any-return]
