"""Stored API keys (table ``planner.api_keys``)."""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared_schemas import Principal, Role

from .keys import IssuedKey, digest_secret, generate_key, parse_key

_ABSENT_DIGEST = digest_secret("no key has this id")
"""Compared against when no live key has the presented id (constant-time refusals)."""


@dataclass(frozen=True)
class KeyInfo:
    """A stored key, without its digest."""

    key_id: str
    tenant: str
    subject: str
    roles: list[str]
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyStore:
    """Creates, lists, revokes and verifies API keys.

    Verified keys are remembered for ``cache_ttl_s`` seconds (keyed by key id and the digest
    of the presented secret), so a revocation made by another process takes effect within
    that time; one made through this store takes effect at once.
    """

    def __init__(self, engine: AsyncEngine, *, cache_ttl_s: float = 5.0) -> None:
        self._engine = engine
        self._auto = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._cache_ttl_s = cache_ttl_s
        self._cache: dict[tuple[str, str], tuple[float, Principal]] = {}

    async def create(
        self,
        *,
        tenant: str,
        subject: str,
        roles: Iterable[Role],
        scopes: Iterable[str] = (),
        description: str | None = None,
    ) -> IssuedKey:
        """Store a new key for a principal and return it (the token is not kept).

        Raises:
            pydantic.ValidationError: when tenant, subject or roles are not valid.

        """
        principal = Principal(
            tenant=tenant, subject=subject, roles=frozenset(roles), scopes=frozenset(scopes)
        )
        issued = generate_key()
        async with self._engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO planner.api_keys"
                    " (key_id, tenant, subject, roles, scopes, digest, description)"
                    " VALUES (:key_id, :tenant, :subject, :roles, :scopes, :digest, :description)"
                ),
                {
                    "key_id": issued.key_id,
                    "tenant": principal.tenant,
                    "subject": principal.subject,
                    "roles": sorted(r.value for r in principal.roles),
                    "scopes": sorted(principal.scopes),
                    "digest": issued.digest,
                    "description": description,
                },
            )
        return issued

    async def authenticate(self, token: str) -> Principal | None:
        """The principal of a presented key; None when malformed, unknown, revoked or wrong.

        The secret's SHA-256 digest is compared with ``hmac.compare_digest``; an unknown or
        revoked id is compared against a stand-in digest, so a refusal costs the same query
        and comparison either way. A cache hit answers without the database, but only a
        presented secret whose digest was verified before can hit it.
        """
        parsed = parse_key(token)
        if parsed is None:
            return None
        presented = digest_secret(parsed.secret)
        cached = self._cache.get((parsed.key_id, presented))
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        async with self._auto.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT tenant, subject, roles, scopes, digest FROM planner.api_keys"
                        " WHERE key_id = :key_id AND revoked_at IS NULL"
                    ),
                    {"key_id": parsed.key_id},
                )
            ).first()
        # Unknown (or revoked) ids compare against a stand-in digest, so both refusals do the
        # same work: no early exit tells an unknown id from a wrong secret.
        stored = row.digest if row is not None else _ABSENT_DIGEST
        if not hmac.compare_digest(presented, stored) or row is None:
            return None
        principal = Principal(
            tenant=row.tenant,
            subject=row.subject,
            roles=frozenset(Role(r) for r in row.roles),
            scopes=frozenset(row.scopes),
        )
        if self._cache_ttl_s > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[(parsed.key_id, presented)] = (
                time.monotonic() + self._cache_ttl_s,
                principal,
            )
        return principal

    async def principal_of(self, tenant: str, subject: str) -> Principal:
        """What ``subject`` of ``tenant`` may do now: the union of its live keys' grants.

        No roles or scopes when it has no live key (policy then fails closed).

        Used when a service acts for a person, e.g. a replan on behalf of a run's creator.
        """
        async with self._auto.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT roles, scopes FROM planner.api_keys WHERE tenant = :tenant"
                        " AND subject = :subject AND revoked_at IS NULL"
                    ),
                    {"tenant": tenant, "subject": subject},
                )
            ).all()
        return Principal(
            tenant=tenant,
            subject=subject,
            roles=frozenset(Role(r) for row in rows for r in row.roles),
            scopes=frozenset(s for row in rows for s in row.scopes),
        )

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key; True when a live key was revoked."""
        for cached in [k for k in self._cache if k[0] == key_id]:
            del self._cache[cached]
        async with self._engine.begin() as conn:
            result = await conn.execute(
                text(
                    "UPDATE planner.api_keys SET revoked_at = now()"
                    " WHERE key_id = :key_id AND revoked_at IS NULL"
                ),
                {"key_id": key_id},
            )
        return bool(result.rowcount)

    async def list(self, tenant: str | None = None) -> list[KeyInfo]:
        """Stored keys, newest first, optionally of one tenant."""
        sql = (
            "SELECT key_id, tenant, subject, roles, scopes, created_at, revoked_at"
            " FROM planner.api_keys WHERE (CAST(:tenant AS text) IS NULL OR tenant = :tenant)"
            " ORDER BY created_at DESC"
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(text(sql), {"tenant": tenant})).all()
        return [KeyInfo(*row) for row in rows]
