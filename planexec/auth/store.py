"""Stored API keys (table ``planner.api_keys``)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared_schemas import Principal, Role

from .keys import IssuedKey, digest_secret, generate_key, parse_key


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
    """Creates, lists, revokes and verifies API keys."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

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
        """The principal of a presented key; None when unknown, revoked or wrong."""
        parsed = parse_key(token)
        if parsed is None:
            return None
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT tenant, subject, roles, scopes, digest FROM planner.api_keys"
                        " WHERE key_id = :key_id AND revoked_at IS NULL"
                    ),
                    {"key_id": parsed.key_id},
                )
            ).first()
        if row is None or not hmac.compare_digest(digest_secret(parsed.secret), row.digest):
            return None
        return Principal(
            tenant=row.tenant,
            subject=row.subject,
            roles=frozenset(Role(r) for r in row.roles),
            scopes=frozenset(row.scopes),
        )

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key; True when a live key was revoked."""
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
