"""The tool registry: every adapter the executor can call, and the catalog it serves.

Sources are listed in one YAML file (``PLANEXEC_CATALOG_CONFIG``)::

    builtins: [transform, wait, http.request, llm.complete, noop]
    http:                       # where http.request and OpenAPI tools may connect
      allow_networks: [127.0.0.1/32]
      allow_ports: [80, 443, 8081]
      allow_hosts: []
    openapi:
      - prefix: httpbin
        document: openapi/httpbin.yaml      # relative to this file; never fetched remotely
        base_url: http://127.0.0.1:8081
    mcp:
      - name: time
        transport: stdio
        command: [mcp-server-time]
      - name: git
        transport: streamable_http
        url: http://127.0.0.1:8765/mcp
    entry_points: true          # Python entry points in the group ``planexec.tools``

Without a file, the built-ins are served with the ``PLANEXEC_HTTP_*`` settings.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shared_schemas import ToolCatalog, catalog_version

from .base import ToolAdapter


class CatalogConfigError(ValueError):
    """The catalog configuration is malformed or names a tool twice."""


@dataclass(frozen=True)
class HttpConfig:
    """Network policy shared by ``http.request`` and OpenAPI tools."""

    allow_networks: list[str] = field(default_factory=list)
    allow_ports: list[int] = field(default_factory=lambda: [80, 443])
    allow_hosts: list[str] = field(default_factory=list)
    max_response_bytes: int = 1_048_576


@dataclass(frozen=True)
class LlmConfig:
    """Model server of the ``llm.complete`` tool."""

    base_url: str
    api_key: str
    model: str


class ToolRegistry:
    """Adapters by tool name, with the derived catalog version."""

    def __init__(self, adapters: Iterable[ToolAdapter]) -> None:
        self._adapters: dict[str, ToolAdapter] = {}
        for adapter in adapters:
            name = adapter.spec.name
            if name in self._adapters:
                raise CatalogConfigError(f"tool {name!r} is provided twice")
            self._adapters[name] = adapter
        specs = sorted((a.spec for a in self._adapters.values()), key=lambda s: (s.name, s.version))
        self.catalog = ToolCatalog(catalog_version=catalog_version(specs), tools=specs)
        """The catalog served at ``GET /v1/tools``."""

    def get(self, name: str) -> ToolAdapter | None:
        """The adapter of tool ``name``, or None."""
        return self._adapters.get(name)

    def __len__(self) -> int:
        return len(self._adapters)


BUILTIN_NAMES = ("transform", "wait", "noop", "http.request", "llm.complete")


def _builtins(names: Iterable[str], http: HttpConfig, llm: LlmConfig | None) -> list[ToolAdapter]:
    from .http_request import HttpRequestTool
    from .netguard import NetPolicy
    from .noop import NoopTool
    from .transform import TransformTool
    from .wait import WaitTool

    out: list[ToolAdapter] = []
    for name in names:
        if name == "transform":
            out.append(TransformTool())
        elif name == "wait":
            out.append(WaitTool())
        elif name == "noop":
            out.append(NoopTool())
        elif name == "http.request":
            policy = NetPolicy(
                allowed_ports=frozenset(http.allow_ports),
                allowed_hosts=frozenset(http.allow_hosts),
                allowed_networks=frozenset(http.allow_networks),
            )
            out.append(HttpRequestTool(policy, max_response_bytes=http.max_response_bytes))
        elif name == "llm.complete":
            if llm is None:
                continue  # no model server configured: the tool is not offered
            from .llm_complete import LlmCompleteTool

            out.append(LlmCompleteTool(base_url=llm.base_url, api_key=llm.api_key, model=llm.model))
        else:
            raise CatalogConfigError(f"unknown built-in tool {name!r}; known: {BUILTIN_NAMES}")
    return out


def _http_config(raw: Any) -> HttpConfig:
    if raw is None:
        return HttpConfig()
    if not isinstance(raw, dict):
        raise CatalogConfigError("'http' must be a mapping")
    return HttpConfig(
        allow_networks=list(raw.get("allow_networks", [])),
        allow_ports=[int(p) for p in raw.get("allow_ports", [80, 443])],
        allow_hosts=list(raw.get("allow_hosts", [])),
        max_response_bytes=int(raw.get("max_response_bytes", 1_048_576)),
    )


async def build_registry(
    config_path: Path | None,
    stack: contextlib.AsyncExitStack,
    *,
    http: HttpConfig | None = None,
    llm: LlmConfig | None = None,
) -> ToolRegistry:
    """Load every configured tool source; long-lived sessions (MCP) join ``stack``.

    Raises:
        CatalogConfigError: for a malformed file or a tool provided twice.
        OSError: when a referenced document cannot be read.
    """
    if config_path is None:
        return ToolRegistry(_builtins(BUILTIN_NAMES, http or HttpConfig(), llm))
    raw = yaml.safe_load(await asyncio.to_thread(config_path.read_text, encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise CatalogConfigError(f"{config_path}: the catalog config must be a mapping")
    base = config_path.parent
    http_config = _http_config(raw.get("http")) if "http" in raw else (http or HttpConfig())
    adapters = _builtins(raw.get("builtins", BUILTIN_NAMES), http_config, llm)
    for source in raw.get("openapi", []) or []:
        adapters.extend(await _openapi_tools(source, base, http_config, stack))
    for source in raw.get("mcp", []) or []:
        adapters.extend(await _mcp_tools(source, base, stack))
    if raw.get("entry_points"):
        from .entry_points import load_entry_point_tools

        adapters.extend(load_entry_point_tools())
    return ToolRegistry(adapters)


async def _openapi_tools(
    source: Any, base: Path, http: HttpConfig, stack: contextlib.AsyncExitStack
) -> list[ToolAdapter]:
    from .netguard import NetPolicy, make_guarded_client
    from .openapi_import import import_openapi, load_openapi_file

    try:
        prefix, document, base_url = source["prefix"], source["document"], source["base_url"]
    except (KeyError, TypeError) as exc:
        raise CatalogConfigError(f"openapi source needs prefix, document, base_url: {exc}") from exc
    policy = NetPolicy(
        allowed_ports=frozenset(http.allow_ports),
        allowed_hosts=frozenset(http.allow_hosts),
        allowed_networks=frozenset(http.allow_networks),
    )
    client = make_guarded_client(policy, timeout_s=float(source.get("timeout_s", 30.0)))
    stack.push_async_callback(client.aclose)
    result = import_openapi(
        load_openapi_file((base / document).resolve()),
        prefix=prefix,
        base_url=base_url,
        client=client,
        max_response_bytes=http.max_response_bytes,
        overrides=source.get("overrides"),
    )
    return list(result.tools)


async def _mcp_tools(
    source: Any, base: Path, stack: contextlib.AsyncExitStack
) -> list[ToolAdapter]:
    from .mcp_import import McpServerConfig, connect_mcp

    if not isinstance(source, dict) or "name" not in source:
        raise CatalogConfigError("an mcp source needs at least a name")
    config = McpServerConfig(
        name=source["name"],
        transport=source.get("transport", "stdio"),
        command=list(source.get("command", [])),
        env=dict(source.get("env", {})) or None,
        cwd=str((base / source["cwd"]).resolve()) if source.get("cwd") else None,
        url=source.get("url"),
        headers=dict(source.get("headers", {})),
        call_timeout_s=float(source.get("call_timeout_s", 30.0)),
        write_scopes=list(source.get("write_scopes", [])),
        overrides=dict(source.get("overrides", {})),
    )
    tools: list[ToolAdapter] = await connect_mcp(config, stack)
    return tools
