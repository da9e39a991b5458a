"""Synced tool catalogs (table ``planner.catalogs``); catalogs are global, not per tenant."""

from __future__ import annotations

import json

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared_schemas import ToolCatalog, ToolSpec


class CatalogStore:
    """Keeps every catalog version the planner has planned against."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def save(self, catalog: ToolCatalog, source: str) -> None:
        """Record a catalog version (a no-op when that version is already stored)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO planner.catalogs (catalog_version, tools, source)"
                    " VALUES (:version, :tools, :source) ON CONFLICT DO NOTHING"
                ),
                {
                    "version": catalog.catalog_version,
                    "tools": json.dumps([t.model_dump(mode="json") for t in catalog.tools]),
                    "source": source,
                },
            )

    async def latest(self) -> ToolCatalog | None:
        """The most recently synced catalog, or None when none was ever synced."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT catalog_version, tools FROM planner.catalogs"
                        " ORDER BY synced_at DESC LIMIT 1"
                    )
                )
            ).first()
        if row is None:
            return None
        return ToolCatalog(
            catalog_version=row.catalog_version,
            tools=[ToolSpec.model_validate(t) for t in row.tools],
        )
