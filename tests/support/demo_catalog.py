"""The demo tool catalog: the tools ``make run`` serves, in the catalog contract (DESIGN §3, §9).

Four sources, named by prefix:

* ``git.<tool>`` — the MCP server ``mcp-server-git`` (PyPI). Input schemas are what the MCP
  Python SDK derives from the tool functions' signatures; ``side_effect`` comes from the MCP
  tool annotations (``readOnlyHint`` -> ``read``, ``destructiveHint`` -> ``destructive``, any
  other writer -> ``write``) and ``idempotent`` from ``idempotentHint``. These tools return
  text only (``structured_output=False``), which the MCP adapter presents as ``{"text": ...}``.
* ``time.<tool>`` — the MCP server ``mcp-server-time`` (PyPI); read-only, structured output
  (``TimeResult`` / ``TimeConversionResult``).
* ``httpbin.<operation>`` — routes of ``httpbin`` imported from its OpenAPI document. An
  imported operation takes its path and query parameters as top-level args by name, and its
  JSON request body under ``body``. Parameter names are httpbin's own (``/status/{codes}``,
  ``/delay/{delay}``). GET is ``read``, POST is ``write``.
* built-ins — ``transform`` (JMESPath), ``llm.complete``, ``wait``, ``http.request``.
"""

from __future__ import annotations

from typing import Any

from shared_schemas import SideEffect, ToolCatalog, ToolSpec, catalog_version

_TEXT_OUTPUT: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
}
_NULLABLE_STR: dict[str, Any] = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
_REPO_PATH: dict[str, Any] = {"type": "string", "description": "The path to the Git repository."}
_CONTEXT_LINES: dict[str, Any] = {"type": "integer", "default": 3}
_TIME_RESULT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "timezone": {"type": "string"},
        "datetime": {"type": "string"},
        "day_of_week": {"type": "string"},
        "is_dst": {"type": "boolean"},
    },
    "required": ["timezone", "datetime", "day_of_week", "is_dst"],
}
_HTTPBIN_ECHO: dict[str, Any] = {
    "type": "object",
    "properties": {
        "url": {"type": "string"},
        "args": {"type": "object"},
        "headers": {"type": "object"},
        "origin": {"type": "string"},
        "json": {},
        "data": {"type": "string"},
    },
}


def _args(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


def _git(
    tool: str,
    description: str,
    effect: SideEffect,
    idempotent: bool,
    schema: dict[str, Any],
) -> ToolSpec:
    scopes = [] if effect is SideEffect.READ else ["git:write"]
    return ToolSpec(
        name=f"git.{tool}",
        description=description,
        input_schema=schema,
        output_schema=_TEXT_OUTPUT,
        side_effect=effect,
        idempotent=idempotent,
        required_scopes=scopes,
        default_timeout_s=30.0,
    )


def _git_tools() -> list[ToolSpec]:
    read, write, destructive = SideEffect.READ, SideEffect.WRITE, SideEffect.DESTRUCTIVE
    repo = _args(["repo_path"], repo_path=_REPO_PATH)
    diff_local = _args(["repo_path"], repo_path=_REPO_PATH, context_lines=_CONTEXT_LINES)
    return [
        _git("git_status", "Shows the working tree status", read, True, repo),
        _git(
            "git_diff_unstaged",
            "Shows changes in the working directory that are not yet staged",
            read,
            True,
            diff_local,
        ),
        _git("git_diff_staged", "Shows changes that are staged for commit", read, True, diff_local),
        _git(
            "git_diff",
            "Shows differences between branches or commits",
            read,
            True,
            _args(
                ["repo_path", "target"],
                repo_path=_REPO_PATH,
                target={"type": "string"},
                context_lines=_CONTEXT_LINES,
            ),
        ),
        _git(
            "git_commit",
            "Records changes to the repository",
            write,
            False,
            _args(["repo_path", "message"], repo_path=_REPO_PATH, message={"type": "string"}),
        ),
        _git(
            "git_add",
            "Adds file contents to the staging area",
            write,
            True,
            _args(
                ["repo_path", "files"],
                repo_path=_REPO_PATH,
                files={"type": "array", "items": {"type": "string"}, "minItems": 1},
            ),
        ),
        _git("git_reset", "Unstages all staged changes", destructive, True, repo),
        _git(
            "git_log",
            "Shows the commit logs",
            read,
            True,
            _args(
                ["repo_path"],
                repo_path=_REPO_PATH,
                max_count={"type": "integer", "default": 10},
                start_timestamp=_NULLABLE_STR,
                end_timestamp=_NULLABLE_STR,
            ),
        ),
        _git(
            "git_create_branch",
            "Creates a new branch from an optional base branch",
            write,
            False,
            _args(
                ["repo_path", "branch_name"],
                repo_path=_REPO_PATH,
                branch_name={"type": "string"},
                base_branch=_NULLABLE_STR,
            ),
        ),
        _git(
            "git_checkout",
            "Switches branches",
            write,
            False,
            _args(
                ["repo_path", "branch_name"], repo_path=_REPO_PATH, branch_name={"type": "string"}
            ),
        ),
        _git(
            "git_show",
            "Shows the contents of a commit, or of a file or directory given as <revision>:<path>",
            read,
            True,
            _args(["repo_path", "revision"], repo_path=_REPO_PATH, revision={"type": "string"}),
        ),
        _git(
            "git_branch",
            "List Git branches",
            read,
            True,
            _args(
                ["repo_path", "branch_type"],
                repo_path=_REPO_PATH,
                branch_type={"type": "string"},
                contains=_NULLABLE_STR,
                not_contains=_NULLABLE_STR,
            ),
        ),
    ]


def _time_tools() -> list[ToolSpec]:
    tz = {"type": "string", "description": "IANA timezone name (e.g., 'America/New_York')."}
    return [
        ToolSpec(
            name="time.get_current_time",
            description="Get current time in a specific timezone",
            input_schema=_args(["timezone"], timezone=tz),
            output_schema=_TIME_RESULT,
            idempotent=True,
            default_timeout_s=10.0,
        ),
        ToolSpec(
            name="time.convert_time",
            description="Convert time between timezones",
            input_schema=_args(
                ["source_timezone", "time", "target_timezone"],
                source_timezone=tz,
                time={"type": "string", "description": "Time to convert in 24-hour format (HH:MM)"},
                target_timezone=tz,
            ),
            output_schema={
                "type": "object",
                "properties": {
                    "source": _TIME_RESULT,
                    "target": _TIME_RESULT,
                    "time_difference": {"type": "string"},
                },
                "required": ["source", "target", "time_difference"],
            },
            idempotent=True,
            default_timeout_s=10.0,
        ),
    ]


def _httpbin_tools() -> list[ToolSpec]:
    return [
        ToolSpec(
            name="httpbin.post",
            description="POST /post: the request's POST parameters, echoed back.",
            input_schema={"type": "object", "properties": {"body": {}}, "required": ["body"]},
            output_schema=_HTTPBIN_ECHO,
            side_effect=SideEffect.WRITE,
            required_scopes=["webhook:post"],
            default_timeout_s=10.0,
        ),
        ToolSpec(
            name="httpbin.status",
            description=(
                "GET /status/{codes}: returns the status code, or a random one of several "
                "comma-separated codes."
            ),
            input_schema=_args(
                ["codes"], codes={"type": "string", "pattern": r"^[0-9]{3}(,[0-9]{3})*$"}
            ),
            idempotent=True,
            default_timeout_s=10.0,
        ),
        ToolSpec(
            name="httpbin.delay",
            description="GET /delay/{delay}: returns a delayed response (max of 10 seconds).",
            input_schema=_args(["delay"], delay={"type": "number", "minimum": 0, "maximum": 10}),
            output_schema=_HTTPBIN_ECHO,
            idempotent=True,
            default_timeout_s=15.0,
        ),
    ]


def _builtin_tools() -> list[ToolSpec]:
    return [
        ToolSpec(
            name="transform",
            description="Evaluates a JMESPath expression against data and returns the result.",
            input_schema=_args(
                ["data", "expression"], data={}, expression={"type": "string", "minLength": 1}
            ),
            idempotent=True,
            default_timeout_s=5.0,
        ),
        ToolSpec(
            name="llm.complete",
            description="Completes a prompt with the configured language model.",
            input_schema=_args(
                ["prompt"],
                prompt={"type": "string", "minLength": 1},
                system={"type": "string"},
                max_tokens={"type": "integer", "minimum": 1, "maximum": 8192},
            ),
            output_schema=_args(["text"], text={"type": "string"}),
            idempotent=False,
            default_timeout_s=60.0,
            cost_usd=0.01,
        ),
        ToolSpec(
            name="wait",
            description="Waits for the given number of seconds.",
            input_schema=_args(
                ["seconds"], seconds={"type": "number", "minimum": 0, "maximum": 3600}
            ),
            idempotent=True,
            default_timeout_s=3600.0,
        ),
        ToolSpec(
            name="http.request",
            description="Sends an HTTP request to an allowlisted host and returns the response.",
            input_schema={
                "type": "object",
                "properties": {
                    "method": {"enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]},
                    "url": {"type": "string", "format": "uri"},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "query": {"type": "object", "additionalProperties": {"type": "string"}},
                    "json": {},
                },
                "required": ["method", "url"],
                "additionalProperties": False,
            },
            output_schema=_args(
                ["status", "headers", "body"],
                status={"type": "integer"},
                headers={"type": "object"},
                body={},
            ),
            side_effect=SideEffect.WRITE,
            required_scopes=["http:request"],
            default_timeout_s=30.0,
        ),
    ]


def demo_tools() -> list[ToolSpec]:
    """Return the demo tools, sorted by name."""
    tools = _git_tools() + _time_tools() + _httpbin_tools() + _builtin_tools()
    return sorted(tools, key=lambda t: t.name)


def demo_catalog() -> ToolCatalog:
    """Return the demo catalog; ``catalog_version`` is ``shared_schemas.catalog_version``."""
    tools = demo_tools()
    return ToolCatalog(catalog_version=catalog_version(tools), tools=tools)
