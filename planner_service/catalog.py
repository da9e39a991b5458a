"""Where the planner's tool catalog comes from (DESIGN §3, issue 4 step 7).

The executor owns the adapters and so the catalog: the planner syncs ``GET /v1/tools`` with
its service key, stores each catalog version it sees, and plans against the last synced one
when the executor is down. Without an executor URL, a JSON catalog file is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import httpx2
import structlog
from pydantic import ValidationError

from shared_schemas import ToolCatalog, ToolSpec, catalog_version

from .store.catalogs import CatalogStore

_log = structlog.get_logger("planexec.planner.catalog")


class CatalogUnavailableError(RuntimeError):
    """No catalog could be loaded: the executor is down and none was ever synced."""


def build_catalog(tools: list[ToolSpec]) -> ToolCatalog:
    """A ``ToolCatalog`` of ``tools`` sorted by name, with its derived version."""
    ordered = sorted(tools, key=lambda t: (t.name, t.version))
    return ToolCatalog(catalog_version=catalog_version(ordered), tools=ordered)


def parse_catalog(document: Any) -> ToolCatalog:
    """Parse ``{"tools": [...]}`` (or a bare list) into a catalog; the version is recomputed.

    Raises:
        ValueError: when the document is not a list of valid ``ToolSpec`` objects.
    """
    tools = document.get("tools") if isinstance(document, dict) else document
    if not isinstance(tools, list):
        raise ValueError("a catalog is a JSON object with a 'tools' list")
    try:
        return build_catalog([ToolSpec.model_validate(t) for t in tools])
    except ValidationError as exc:
        raise ValueError(f"invalid tool spec: {exc}") from exc


class CatalogService:
    """Holds the current catalog and refreshes it from its source."""

    def __init__(
        self,
        store: CatalogStore,
        *,
        url: str | None,
        file: Path | None,
        api_key: str | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self._store = store
        self._url = url
        self._file = file
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._current: ToolCatalog | None = None

    @property
    def current(self) -> ToolCatalog:
        """The catalog plans are made against now.

        Raises:
            CatalogUnavailableError: before the first successful load.
        """
        if self._current is None:
            raise CatalogUnavailableError("no tool catalog is loaded")
        return self._current

    async def refresh(self) -> ToolCatalog:
        """Load the catalog from its source, store it, and make it current.

        Falls back to the last stored catalog when the executor cannot be reached.

        Raises:
            CatalogUnavailableError: when nothing can be loaded at all.
        """
        try:
            catalog, source = await self._fetch()
        except (httpx2.HTTPError, ValueError, OSError) as exc:
            _log.warning("catalog_sync_failed", error=str(exc), source=self._url or self._file)
            stored = await self._store.latest()
            if stored is None:
                if self._current is not None:
                    return self._current
                raise CatalogUnavailableError(f"no catalog: {exc}") from exc
            catalog = stored
        else:
            await self._store.save(catalog, source)
        if self._current is None or self._current.catalog_version != catalog.catalog_version:
            _log.info(
                "catalog_loaded", catalog_version=catalog.catalog_version, tools=len(catalog.tools)
            )
        self._current = catalog
        return catalog

    async def _fetch(self) -> tuple[ToolCatalog, str]:
        if self._url:
            headers = {"X-API-Key": self._api_key} if self._api_key else {}
            async with httpx2.AsyncClient(timeout=self._timeout_s) as client:
                response = await client.get(self._url, headers=headers)
                response.raise_for_status()
                return parse_catalog(response.json()), self._url
        if self._file:
            text = await asyncio.to_thread(self._file.read_text, encoding="utf-8")
            return parse_catalog(json.loads(text)), str(self._file)
        return build_catalog([]), "empty"

    async def run_refresh_loop(self, interval_s: float) -> None:
        """Re-sync every ``interval_s`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            with contextlib.suppress(CatalogUnavailableError):
                await self.refresh()
