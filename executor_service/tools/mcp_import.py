"""Import the tools of an MCP server (stdio or streamable HTTP) as ``ToolAdapter``s (DESIGN §3).

Each MCP tool becomes ``<server name>.<tool name>`` with the server's ``inputSchema``; its
``outputSchema`` when it declares one, else ``TEXT_OUTPUT_SCHEMA`` (the text content as
``{"text": ...}``). ``side_effect`` and ``idempotent`` come from the tool annotations with the
defaults of the MCP specification (schema ``ToolAnnotations``, 2025-06-18 and later):
``readOnlyHint`` false, ``destructiveHint`` true, ``idempotentHint`` false; the last two are
meaningful only when ``readOnlyHint`` is false. So:

* ``readOnlyHint: true`` -> ``read`` and idempotent (a call that changes nothing cannot change
  anything twice);
* otherwise ``destructiveHint`` true **or absent** -> ``destructive``, ``false`` -> ``write``;
  ``idempotent`` is ``idempotentHint is True``.

A tool without annotations is therefore ``destructive``, and needs an approval. The spec says
annotations from an untrusted server are hints only: ``McpServerConfig.overrides`` lets an
operator pin any field.

Lifetime and reconnection: ``McpConnection`` keeps one session open for the executor's lifetime,
in a task of its own (anyio cancel scopes must be left in the task that entered them). When a
call fails because the transport is gone (the server process died, the HTTP session ended), the
call raises a retryable ``ToolError`` (``connection_error``) and the session is dropped; the next
call opens a new session (a new process for stdio) before it sends anything. A call is never
re-sent inside one ``invoke``: the engine decides retries, knowing whether the tool is idempotent.
The tool list is read once at import; a server that changes its tools needs a re-import.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import httpx2
import pydantic
import structlog
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

from shared_schemas import SideEffect, ToolSpec
from shared_schemas.tool import TOOL_NAME_PATTERN

from .base import InvocationContext, ToolAdapter, ToolError, ToolResult
from .descriptions import screen_description

TEXT_OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
}
"""Output schema of a tool that declares none: its text content, joined by newlines."""
MAX_LIST_PAGES = 100
"""Most ``tools/list`` pages read from one server."""

_log = structlog.get_logger("planexec.executor.tools.mcp")


@dataclass(frozen=True)
class McpServerConfig:
    """One MCP server to import tools from."""

    name: str
    """Catalog name prefix of its tools, e.g. ``git``."""
    transport: Literal["stdio", "streamable_http"] = "stdio"
    command: Sequence[str] = ()
    """stdio: the server's argv, e.g. ``["mcp-server-git"]``."""
    env: Mapping[str, str] | None = None
    """stdio: extra environment, over the SDK's minimal default (``HOME``, ``PATH``...); the
    executor's own environment (its secrets) is not passed on."""
    cwd: str | None = None
    """stdio: working directory of the server process."""
    url: str | None = None
    """streamable_http: the MCP endpoint, e.g. ``http://127.0.0.1:8000/mcp``."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """streamable_http: headers sent with every request (e.g. ``Authorization``)."""
    call_timeout_s: float = 30.0
    """``default_timeout_s`` of the imported tools, in seconds."""
    connect_timeout_s: float = 30.0
    """Longest wait for a session to open (process start + ``initialize``), in seconds."""
    write_scopes: Sequence[str] = ()
    """``required_scopes`` of every tool that is not read-only, e.g. ``["git:write"]``."""
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """``ToolSpec`` field values by full tool name, applied last."""

    def __post_init__(self) -> None:
        """Check that the transport has what it needs.

        Raises:
            ValueError: stdio without ``command`` or streamable_http without ``url``.
        """
        if self.transport == "stdio" and not self.command:
            raise ValueError(f"MCP server {self.name}: stdio needs a command")
        if self.transport == "streamable_http" and not self.url:
            raise ValueError(f"MCP server {self.name}: streamable_http needs a url")


class McpConnection:
    """The session with one MCP server, (re)opened on demand by ``session()``."""

    def __init__(self, config: McpServerConfig) -> None:
        """Prepare the connection; nothing is opened until ``session()``."""
        self.config = config
        self.sessions_opened = 0
        """How many sessions were opened so far (1 + reconnections)."""
        self._session: ClientSession | None = None
        self._holder: asyncio.Task[None] | None = None
        self._release = asyncio.Event()
        self._lock = asyncio.Lock()

    async def session(self) -> ClientSession:
        """Return the open session, opening a new one when there is none.

        Raises:
            ToolError: ``mcp_unavailable`` (retryable) when no session could be opened in
                ``connect_timeout_s``.
        """
        async with self._lock:
            if self._session is not None:
                return self._session
            await self._stop_holder()
            self._release = asyncio.Event()
            opened: asyncio.Future[ClientSession] = asyncio.get_running_loop().create_future()
            self._holder = asyncio.create_task(self._hold(opened, self._release))
            try:
                async with asyncio.timeout(self.config.connect_timeout_s):
                    self._session = await asyncio.shield(opened)
            except Exception as exc:
                await self._stop_holder()
                raise ToolError(
                    f"MCP server {self.config.name} unavailable: {exc!r}",
                    retryable=True,
                    code="mcp_unavailable",
                ) from exc
            self.sessions_opened += 1
            return self._session

    def drop(self, session: ClientSession) -> None:
        """Forget ``session`` after a transport failure; the next ``session()`` reconnects."""
        if self._session is session:
            self._session = None
            self._release.set()

    async def aclose(self) -> None:
        """Close the session and stop the server process (stdio)."""
        async with self._lock:
            self._session = None
            await self._stop_holder()

    async def _stop_holder(self) -> None:
        holder, self._holder = self._holder, None
        if holder is None:
            return
        self._release.set()
        try:  # the SDK bounds its own shutdown (stdio: terminate, then kill)
            await asyncio.wait_for(asyncio.shield(holder), 15)
        except TimeoutError:
            holder.cancel()
        except Exception as exc:  # the session already failed; the holder logged it
            _log.debug("mcp_holder_stopped", server=self.config.name, error=repr(exc))

    async def _hold(self, opened: asyncio.Future[ClientSession], release: asyncio.Event) -> None:
        """Open transport and session, publish the session, keep both open until released."""
        try:
            async with self._transport() as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                opened.set_result(session)
                await release.wait()
        except Exception as exc:
            if not opened.done():
                opened.set_exception(exc)
            else:
                _log.warning("mcp_session_ended", server=self.config.name, error=repr(exc))
        finally:
            if not opened.done():
                opened.set_exception(ConnectionError("the MCP session was cancelled"))

    @contextlib.asynccontextmanager
    async def _transport(self) -> AsyncIterator[tuple[Any, Any]]:
        config = self.config
        if config.transport == "stdio":
            params = StdioServerParameters(
                command=config.command[0],
                args=list(config.command[1:]),
                env=dict(config.env) if config.env is not None else None,
                cwd=config.cwd,
            )
            async with stdio_client(params) as streams:
                yield streams
            return
        timeout = httpx2.Timeout(30.0, read=300.0)  # the SDK's defaults: SSE streams idle long
        async with (
            httpx2.AsyncClient(headers=dict(config.headers), timeout=timeout) as client,
            streamable_http_client(str(config.url), http_client=client) as streams,
        ):
            yield streams


class McpTool:
    """One tool of an MCP server (a ``ToolAdapter``).

    Output: ``structuredContent`` when the server sends it, else ``{"text": <text content>}``.
    Errors (``ToolError.code``): ``tool_reported_error`` (the result had ``isError``; not
    retryable), ``timeout`` (no answer in ``ctx.timeout_s``; retryable), ``connection_error``
    and ``mcp_unavailable`` (transport gone; retryable, and the next call reconnects),
    ``mcp_error`` (a JSON-RPC error such as unknown tool or invalid params, or a malformed
    result; not retryable).
    """

    def __init__(self, spec: ToolSpec, tool_name: str, connection: McpConnection) -> None:
        """Wrap MCP tool ``tool_name`` of ``connection`` under catalog entry ``spec``."""
        self._spec = spec
        self.tool_name = tool_name
        self.connection = connection

    @property
    def spec(self) -> ToolSpec:
        """The tool's catalog entry."""
        return self._spec

    async def invoke(self, args: dict[str, Any], ctx: InvocationContext) -> ToolResult:
        """Call the tool with ``tools/call``, waiting at most ``ctx.timeout_s``.

        Raises:
            ToolError: See the class docstring for the codes.
        """
        session = await self.connection.session()
        try:
            result = await session.call_tool(
                self.tool_name, args, read_timeout_seconds=ctx.timeout_s
            )
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                raise ToolError(exc.message, retryable=True, code="timeout") from exc
            if exc.code == CONNECTION_CLOSED:
                self.connection.drop(session)
                raise ToolError(exc.message, retryable=True, code="connection_error") from exc
            details = {"mcp_code": exc.code}
            raise ToolError(
                exc.message, retryable=False, code="mcp_error", details=details
            ) from exc
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as exc:
            self.connection.drop(session)
            raise ToolError(repr(exc), retryable=True, code="connection_error") from exc
        except (pydantic.ValidationError, RuntimeError) as exc:  # malformed or unexpected result
            raise ToolError(repr(exc), retryable=False, code="mcp_error") from exc
        text = "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))
        if result.is_error:
            raise ToolError(
                text or f"{self._spec.name} reported an error",
                retryable=False,
                code="tool_reported_error",
            )
        if result.structured_content is not None:
            return ToolResult(output=result.structured_content)
        return ToolResult(output={"text": text})


def tool_spec(config: McpServerConfig, tool: types.Tool) -> tuple[ToolSpec, list[str]]:
    """Map an MCP tool to its catalog entry (see the module docstring for the rules).

    Returns:
        The spec and warnings (a flagged description).

    Raises:
        ValueError: The name does not fit the catalog's pattern, or an override is invalid.
    """
    name = f"{config.name}.{tool.name}"
    if not re.fullmatch(TOOL_NAME_PATTERN, name):
        raise ValueError(f"MCP tool name {name!r} does not fit {TOOL_NAME_PATTERN}")
    hints = tool.annotations or types.ToolAnnotations()
    if hints.read_only_hint is True:
        side_effect, idempotent = SideEffect.READ, True
    else:
        destructive = hints.destructive_hint is not False
        side_effect = SideEffect.DESTRUCTIVE if destructive else SideEffect.WRITE
        idempotent = hints.idempotent_hint is True
    description, label = screen_description(tool.description or tool.title or "")
    warnings = [f"{name}: description flagged ({label}); cut to its first part"] if label else []
    fields: dict[str, Any] = {
        "name": name,
        "description": description,
        "input_schema": tool.input_schema,
        "output_schema": tool.output_schema if tool.output_schema else TEXT_OUTPUT_SCHEMA,
        "side_effect": side_effect,
        "idempotent": idempotent,
        "required_scopes": [] if side_effect is SideEffect.READ else list(config.write_scopes),
        "default_timeout_s": config.call_timeout_s,
    }
    try:
        return ToolSpec.model_validate(fields | dict(config.overrides.get(name, {}))), warnings
    except pydantic.ValidationError as exc:
        raise ValueError(f"MCP tool {name}: not a valid ToolSpec: {exc}") from exc


async def list_all_tools(session: ClientSession) -> list[types.Tool]:
    """Read every page of ``tools/list``, following ``nextCursor`` (at most ``MAX_LIST_PAGES``).

    Raises:
        ValueError: A cursor repeats or the pages never end.
    """
    tools: list[types.Tool] = []
    cursor: str | None = None
    seen: set[str] = set()
    for _ in range(MAX_LIST_PAGES):
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            return tools
        if cursor in seen:
            raise ValueError(f"tools/list repeated the cursor {cursor!r}")
        seen.add(cursor)
    raise ValueError(f"tools/list has more than {MAX_LIST_PAGES} pages")


async def connect_mcp(
    config: McpServerConfig, stack: contextlib.AsyncExitStack
) -> list[ToolAdapter]:
    """Connect to an MCP server, list its tools and return one adapter per tool.

    The session stays open until ``stack`` closes (register the executor's lifetime there).
    A tool whose name does not fit the catalog is skipped with a logged warning; flagged
    descriptions are logged too (``mcp_import_warning``).

    Raises:
        ConnectionError: The server could not be started or connected to.
        ValueError: Its tool list is malformed, or an override is invalid.
    """
    connection = McpConnection(config)
    stack.push_async_callback(connection.aclose)
    try:
        session = await connection.session()
    except ToolError as exc:
        raise ConnectionError(exc.message) from exc
    adapters: list[ToolAdapter] = []
    for tool in await list_all_tools(session):
        if not re.fullmatch(TOOL_NAME_PATTERN, f"{config.name}.{tool.name}"):
            _log.warning("mcp_import_warning", server=config.name, tool=tool.name, skipped=True)
            continue
        spec, warnings = tool_spec(config, tool)
        for warning in warnings:
            _log.warning("mcp_import_warning", server=config.name, warning=warning)
        adapters.append(McpTool(spec, tool.name, connection))
    return adapters
