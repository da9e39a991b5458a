"""The tool registry built from one catalog config file, against real tool servers."""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from executor_service.tools.registry import CatalogConfigError, build_registry
from planexec.demo.httpbin_server import HttpbinServer

from ..support.demo_catalog import demo_catalog

ROOT = Path(__file__).resolve().parents[2]


async def test_builtins_openapi_and_mcp_sources_make_one_catalog(tmp_path: Path) -> None:
    with HttpbinServer() as httpbin:
        port = int(httpbin.base_url.rsplit(":", 1)[1])
        document = ROOT / "planexec" / "demo" / "assets" / "openapi" / "httpbin.yaml"
        shutil.copy(document, tmp_path / "httpbin.yaml")
        config = {
            "builtins": ["transform", "wait", "noop"],
            "http": {"allow_networks": ["127.0.0.1/32"], "allow_ports": [port]},
            "openapi": [
                {"prefix": "httpbin", "document": "httpbin.yaml", "base_url": httpbin.base_url}
            ],
            "mcp": [
                {
                    "name": "time",
                    "transport": "stdio",
                    "command": [str(Path(sys.executable).parent / "mcp-server-time")],
                }
            ],
        }
        path = tmp_path / "catalog.yaml"
        path.write_text(yaml.safe_dump(config))
        async with contextlib.AsyncExitStack() as stack:
            registry = await build_registry(path, stack)
            names = {t.name for t in registry.catalog.tools}
            assert {
                "transform",
                "wait",
                "noop",
                "httpbin.post",
                "httpbin.status",
                "time.get_current_time",
            } <= names
            assert "http.request" not in names  # only the listed built-ins
            demo = {t.name: t for t in demo_catalog().tools}
            served = {t.name: t for t in registry.catalog.tools}
            for name in ("transform", "wait", "httpbin.post", "time.get_current_time"):
                got, want = served[name], demo[name]
                assert (got.side_effect, got.idempotent, got.required_scopes) == (
                    want.side_effect,
                    want.idempotent,
                    want.required_scopes,
                ), name
                assert got.input_schema.get("required") == want.input_schema.get("required")
            again = await build_registry(path, stack)
            assert again.catalog.catalog_version == registry.catalog.catalog_version


async def test_a_tool_provided_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"builtins": ["noop", "noop"]}))
    async with contextlib.AsyncExitStack() as stack:
        with pytest.raises(CatalogConfigError, match="twice"):
            await build_registry(path, stack)
        path.write_text(yaml.safe_dump({"builtins": ["shell"]}))
        with pytest.raises(CatalogConfigError, match="unknown built-in"):
            await build_registry(path, stack)
