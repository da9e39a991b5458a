"""The planner syncs its catalog from the executor's ``GET /v1/tools`` over real HTTP.

Until the executor exists, a loopback server serves a catalog in the same shape.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from planexec.db import create_engine
from planner_service.catalog import CatalogService, CatalogUnavailableError
from planner_service.store.catalogs import CatalogStore

from ..support.demo_catalog import demo_catalog


class _Tools(BaseHTTPRequestHandler):
    seen_keys: list[str | None] = []

    def do_GET(self) -> None:
        _Tools.seen_keys.append(self.headers.get("X-API-Key"))
        body = demo_catalog().model_dump_json().encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tools_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Tools)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


async def test_sync_stores_the_catalog_and_survives_the_executor_going_down(
    db_url: str, tools_server: ThreadingHTTPServer
) -> None:
    engine = create_engine(db_url, pool_size=1, max_overflow=0)
    store = CatalogStore(engine)
    url = f"http://127.0.0.1:{tools_server.server_address[1]}/v1/tools"
    try:
        service = CatalogService(store, url=url, file=None, api_key="service-key")
        catalog = await service.refresh()
        assert catalog == demo_catalog()
        assert _Tools.seen_keys[-1] == "service-key"
        assert await store.latest() == catalog

        tools_server.shutdown()
        tools_server.server_close()
        # a fresh planner process with the executor down plans against the last synced one
        restarted = CatalogService(store, url=url, file=None)
        assert (await restarted.refresh()).catalog_version == catalog.catalog_version
        assert restarted.current.catalog_version == catalog.catalog_version
    finally:
        await engine.dispose()


async def test_no_catalog_at_all_is_reported(db_url: str) -> None:
    engine = create_engine(db_url, pool_size=1, max_overflow=0)
    try:
        service = CatalogService(
            CatalogStore(engine), url="http://127.0.0.1:9/v1/tools", file=None, timeout_s=1
        )
        with pytest.raises(CatalogUnavailableError):
            await service.refresh()
        with pytest.raises(CatalogUnavailableError):
            _ = service.current
    finally:
        await engine.dispose()


async def test_a_catalog_file_with_a_bad_tool_is_refused(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"tools": [{"name": "x", "side_effect": "explode"}]}))
    engine = create_engine(db_url, pool_size=1, max_overflow=0)
    try:
        service = CatalogService(CatalogStore(engine), url=None, file=path)
        with pytest.raises(CatalogUnavailableError, match="invalid tool spec"):
            await service.refresh()
    finally:
        await engine.dispose()
