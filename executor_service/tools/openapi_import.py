"""Import an OpenAPI 3.0 / 3.1 document as tools: one ``ToolAdapter`` per operation (DESIGN §3).

The document is untrusted input (RELIABILITY S10, P4):

* Only local ``$ref``s (``#/...``, RFC 6901 JSON Pointers) are resolved, by inlining. A ``$ref``
  to anything else (``http:``, ``file:``, a relative file) is never fetched: the operation that
  needs it is skipped with a warning.
* A recursive ``$ref`` becomes ``{}`` (accepts anything) at the point where it recurses, a chain
  deeper than ``max_ref_depth`` likewise, and a schema that inlines to more than
  ``MAX_SCHEMA_NODES`` nodes skips its operation; each with a warning.
* YAML anchors and aliases are refused when loading, so a document cannot expand exponentially.
* Size is bounded by named limits, each refused with a ``DocumentLimitError`` that names it: a
  file over ``MAX_DOCUMENT_BYTES``, a document nested deeper than ``MAX_DOCUMENT_DEPTH`` or
  holding more than ``MAX_DOCUMENT_NODES`` values; and while inlining, a schema nested deeper
  than ``MAX_SCHEMA_DEPTH`` (its operation is skipped), and more than ``MAX_IMPORT_NODES``
  inlined nodes over the whole document (the remaining operations are skipped): a ``$ref``
  fan-out ("billion laughs") costs bounded time and memory, and nothing recurses without bound.
* ``servers`` URLs (document, path item and operation level) must be relative or http(s), and
  carry no credentials; ``base_url`` likewise (and is absolute). Calls go to ``base_url`` only.
* A non-string ``operationId`` or parameter ``name`` skips its operation; a non-string
  ``description`` in a schema is dropped (a warning).
* Descriptions are data, never instructions: they are kept and quoted by the planner, but one that
  matches ``INJECTION_PATTERNS`` is flagged (a warning) and cut to ``FLAGGED_DESCRIPTION_CHARS``
  (``descriptions.screen_description``).

OpenAPI 3.0 Schema Objects are rewritten into JSON Schema 2020-12 (OpenAPI 3.1 schemas already
are): ``nullable: true`` adds ``"null"`` to ``type`` (or, on a typeless schema with other
keywords such as a nullable ``allOf``, wraps it in ``anyOf`` with a null schema),
``exclusiveMinimum: true`` with ``minimum: x`` becomes ``exclusiveMinimum: x`` (likewise for the
maximum), ``example`` becomes ``examples``; OpenAPI-only keywords and ``x-`` extensions are dropped.

The tools themselves (``OpenApiTool``: how a call is sent and its response classified) are in
``openapi_tool``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx2
import pydantic
import yaml

from shared_schemas import SideEffect, ToolSpec
from shared_schemas.tool import TOOL_NAME_PATTERN

from .base import ToolAdapter
from .descriptions import (
    FLAGGED_DESCRIPTION_CHARS,
    INJECTION_PATTERNS,
    MAX_DESCRIPTION_CHARS,
    screen_description,
)
from .openapi_tool import OpenApiTool, Parameter

__all__ = [
    "FLAGGED_DESCRIPTION_CHARS",
    "INJECTION_PATTERNS",
    "MAX_DESCRIPTION_CHARS",
    "MAX_DOCUMENT_BYTES",
    "MAX_DOCUMENT_DEPTH",
    "MAX_DOCUMENT_NODES",
    "MAX_IMPORT_NODES",
    "MAX_SCHEMA_DEPTH",
    "MAX_SCHEMA_NODES",
    "DocumentLimitError",
    "ImportResult",
    "OpenApiTool",
    "Parameter",
    "import_openapi",
    "load_openapi_file",
    "screen_description",
]

MAX_SCHEMA_NODES = 10_000
"""Most schema nodes an operation may inline; bounds exponential ``$ref`` fan-out."""
MAX_IMPORT_NODES = 200_000
"""Most schema nodes one document may inline over all its operations."""
MAX_SCHEMA_DEPTH = 128
"""Deepest nesting of one inlined schema (through ``$ref``s too)."""
MAX_DOCUMENT_BYTES = 10_485_760
"""Largest document file read, in bytes (``load_openapi_file``'s default)."""
MAX_DOCUMENT_DEPTH = 64
"""Deepest nesting of objects and arrays in a document."""
MAX_DOCUMENT_NODES = 2_000_000
"""Most values (objects, arrays, scalars) in a document."""


class DocumentLimitError(ValueError):
    """A document exceeds a named size limit (``limit`` is the constant's name)."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(f"{message} ({limit})")
        self.limit = limit


_SIDE_EFFECTS = {
    "get": SideEffect.READ,
    "head": SideEffect.READ,
    "options": SideEffect.READ,
    "post": SideEffect.WRITE,
    "put": SideEffect.WRITE,
    "patch": SideEffect.WRITE,
    "delete": SideEffect.DESTRUCTIVE,
}
_IDEMPOTENT_METHODS = frozenset({"get", "head", "options", "put", "delete"})  # RFC 9110 §9.2.2
_IGNORED_HEADERS = frozenset(
    {"accept", "content-type", "authorization", "content-length", "host"}
    | {"idempotency-key", "traceparent", "tracestate"}
)
"""Header parameters not taken from args: OpenAPI says Accept, Content-Type and Authorization
definitions "SHALL be ignored"; the others belong to the client or the executor."""
_SCHEMA_KEYS = frozenset(
    {"items", "not", "additionalProperties", "contains", "propertyNames", "if", "then", "else"}
    | {"unevaluatedItems", "unevaluatedProperties", "contentSchema"}
)
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "dependentSchemas"})
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_OPENAPI_ONLY = frozenset({"nullable", "discriminator", "xml", "externalDocs", "example"})


class _Skip(Exception):
    """The current operation cannot be imported; the message says why."""


@dataclass(frozen=True)
class ImportResult:
    """What ``import_openapi`` produced."""

    tools: list[ToolAdapter]
    """One adapter per imported operation, in document order."""
    warnings: list[str] = field(default_factory=list)
    """Human-readable notes: skipped operations, flagged descriptions, bounded ``$ref``s."""


class _NoAliasLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses anchors/aliases (no exponential "billion laughs")."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("YAML aliases are not accepted in OpenAPI documents")
        return super().compose_node(parent, index)


def load_openapi_file(path: str | Path, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> dict[str, Any]:
    """Read an OpenAPI 3.x document from a local YAML or JSON file (JSON is YAML).

    Args:
        path: Local file path; nothing is fetched over the network.
        max_bytes: Largest file accepted, in bytes.

    Raises:
        DocumentLimitError: The file is larger than ``max_bytes`` (``MAX_DOCUMENT_BYTES``), or
            nested deeper than ``MAX_DOCUMENT_DEPTH``, or holds over ``MAX_DOCUMENT_NODES``.
        ValueError: The file is not YAML/JSON, uses YAML aliases, or is not an OpenAPI 3.x
            document.
    """
    with Path(path).open("rb") as handle:
        data = handle.read(max_bytes + 1)  # never more than the limit, whatever the file
    if len(data) > max_bytes:
        raise DocumentLimitError("MAX_DOCUMENT_BYTES", f"{path}: larger than {max_bytes} bytes")
    try:
        document = yaml.load(data, Loader=_NoAliasLoader)  # a SafeLoader subclass
    except RecursionError as exc:  # the composer recurses per nesting level
        raise DocumentLimitError(
            "MAX_DOCUMENT_DEPTH", f"{path}: nested deeper than {MAX_DOCUMENT_DEPTH}"
        ) from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not a YAML or JSON document: {exc}") from exc
    if not isinstance(document, dict) or not str(document.get("openapi", "")).startswith("3."):
        raise ValueError(f"{path}: not an OpenAPI 3.x document (no 'openapi: 3.x' field)")
    check_document(document)
    return document


def check_document(document: Any) -> None:
    """Check a parsed document against ``MAX_DOCUMENT_DEPTH`` and ``MAX_DOCUMENT_NODES``.

    Iterative, so a document too deep for recursion is measured too.

    Raises:
        DocumentLimitError: naming the limit exceeded.
    """
    nodes = 0
    pending: list[tuple[Any, int]] = [(document, 1)]
    while pending:
        node, depth = pending.pop()
        nodes += 1
        if nodes > MAX_DOCUMENT_NODES:
            raise DocumentLimitError(
                "MAX_DOCUMENT_NODES", f"the document holds more than {MAX_DOCUMENT_NODES} values"
            )
        if isinstance(node, dict | list):
            if depth > MAX_DOCUMENT_DEPTH:
                raise DocumentLimitError(
                    "MAX_DOCUMENT_DEPTH", f"the document is nested deeper than {MAX_DOCUMENT_DEPTH}"
                )
            children = node.values() if isinstance(node, dict) else node
            pending.extend((child, depth + 1) for child in children)


def check_server_url(url: str, *, where: str, relative_ok: bool = True) -> None:
    """Refuse a server URL that is not http(s) (or relative) or that carries credentials.

    Raises:
        ValueError: naming ``where`` (the URL itself is not quoted: it may hold a secret).
    """
    parts = urlsplit(url)
    if parts.scheme and parts.scheme.lower() not in {"http", "https"}:
        raise ValueError(f"{where}: scheme {parts.scheme!r} is not http or https")
    if not parts.scheme and (not relative_ok or url.startswith("//")):
        raise ValueError(f"{where}: not an absolute http(s) URL")
    if "@" in parts.netloc:
        raise ValueError(f"{where}: credentials (user:password@) are not accepted in a URL")
    if parts.scheme and not parts.hostname:
        raise ValueError(f"{where}: no host")


def _check_servers(document: dict[str, Any]) -> None:
    """Check every ``servers`` list: document, path item and operation level."""
    lists: list[tuple[str, Any]] = [("servers", document.get("servers"))]
    paths = document.get("paths")
    for path, item in paths.items() if isinstance(paths, dict) else []:
        if isinstance(item, dict):
            lists.append((f"paths[{path!r}].servers", item.get("servers")))
            lists.extend(
                (f"paths[{path!r}].{method}.servers", op.get("servers"))
                for method, op in item.items()
                if isinstance(op, dict)
            )
    for where, servers in lists:
        if servers is None:
            continue
        if not isinstance(servers, list):
            raise ValueError(f"{where}: not a list")
        for i, server in enumerate(servers):
            url = server.get("url") if isinstance(server, dict) else None
            if not isinstance(url, str):
                raise ValueError(f"{where}[{i}]: 'url' is not a string")
            variables = server.get("variables") or {}
            if not isinstance(variables, dict):
                raise ValueError(f"{where}[{i}]: 'variables' is not an object")
            for name, variable in variables.items():
                default = variable.get("default") if isinstance(variable, dict) else None
                if not isinstance(default, str):
                    raise ValueError(f"{where}[{i}]: variable {name!r} has no string default")
                url = url.replace("{" + str(name) + "}", default)
            check_server_url(url, where=f"{where}[{i}].url")


def import_openapi(
    document: dict[str, Any],
    *,
    prefix: str,
    base_url: str,
    client: httpx2.AsyncClient,
    max_response_bytes: int = 1_048_576,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    max_ref_depth: int = 32,
) -> ImportResult:
    """Turn each operation of an OpenAPI 3.0/3.1 document into a tool.

    A tool is named ``<prefix>.<operationId>`` (characters outside the catalog's name pattern
    become ``_``), or ``<prefix>.<method>_<path slug>`` without an operationId. Its args are the
    path, query and header parameters by name, plus the JSON request body under ``body``; its
    output schema is the JSON schema of the first 2xx response, else ``{}``. ``side_effect`` is
    read for GET/HEAD/OPTIONS, write for POST/PUT/PATCH, destructive for DELETE; ``idempotent``
    follows RFC 9110 §9.2.2. Operation extensions override these: ``x-planexec-side-effect``,
    ``x-planexec-idempotent``, ``x-planexec-required-scopes``, ``x-planexec-cost-usd`` and
    ``x-planexec-timeout-s`` and ``x-planexec-meter`` (a ``ToolMeter``: cumulative caps on a
    numeric argument, RELIABILITY S6); an invalid extension value skips the operation.

    Args:
        document: The parsed document (see ``load_openapi_file``).
        prefix: Catalog name prefix, e.g. ``httpbin``.
        base_url: Server URL the paths are appended to, e.g. ``http://127.0.0.1:8080/api``.
        client: The HTTP client the tools send with (the executor passes its SSRF-guarded one).
        max_response_bytes: Largest response body a tool reads, in bytes.
        overrides: ``ToolSpec`` field values by full tool name, applied last (operator config).
        max_ref_depth: Longest chain of nested ``$ref``s inlined.

    Returns:
        The tools and the import warnings.

    Raises:
        DocumentLimitError: the document exceeds ``MAX_DOCUMENT_DEPTH`` or
            ``MAX_DOCUMENT_NODES``.
        ValueError: ``document`` is not OpenAPI 3.0/3.1, ``base_url`` is not an http(s) URL
            without credentials, query or fragment, a ``servers`` URL is not relative or
            http(s) or carries credentials, or an override does not make a valid ``ToolSpec``.
    """
    if not isinstance(document, dict):
        raise ValueError("an OpenAPI document is a JSON object")
    check_document(document)
    version = str(document.get("openapi", ""))
    if not re.match(r"^3\.[01]\.", version):
        raise ValueError(f"unsupported OpenAPI version {version!r}; 3.0.x and 3.1.x are")
    check_server_url(base_url, where="base_url", relative_ok=False)
    parts = urlsplit(base_url)
    if parts.query or parts.fragment:
        raise ValueError("base_url must be an http(s) URL without query or fragment")
    _check_servers(document)
    importer = _Importer(document, v31=version.startswith("3.1."), max_ref_depth=max_ref_depth)
    overrides = dict(overrides or {})
    tools: list[ToolAdapter] = []
    names: set[str] = set()
    for path, method, item, operation in importer.operations():
        where = f"{method.upper()} {path}"
        try:
            spec, params, has_body = importer.operation(prefix, path, method, item, operation)
        except _Skip as exc:
            importer.warnings.append(f"{where}: skipped: {exc}")
            continue
        if spec.name in names:
            importer.warnings.append(f"{where}: skipped: duplicate tool name {spec.name}")
            continue
        names.add(spec.name)
        if spec.name in overrides:
            try:
                spec = ToolSpec.model_validate(spec.model_dump() | dict(overrides.pop(spec.name)))
            except pydantic.ValidationError as exc:
                raise ValueError(
                    f"override for {spec.name} is not a valid ToolSpec: {exc}"
                ) from exc
        tool = OpenApiTool(
            spec,
            method=method.upper(),
            path=path,
            parameters=params,
            has_body=has_body,
            base_url=base_url,
            client=client,
            max_response_bytes=max_response_bytes,
        )
        tools.append(tool)
    importer.warnings.extend(f"override for unknown tool {name}" for name in overrides)
    return ImportResult(tools=tools, warnings=importer.warnings)


class _Importer:
    """Walks one document; collects warnings; inlines local ``$ref``s."""

    def __init__(self, document: dict[str, Any], *, v31: bool, max_ref_depth: int) -> None:
        self.document = document
        self.v31 = v31
        self.max_ref_depth = max_ref_depth
        self.warnings: list[str] = []
        self._where = ""
        self._budget = MAX_SCHEMA_NODES
        self._total = MAX_IMPORT_NODES
        self._depth = 0

    def operations(self) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
        found: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = []
        paths = self.document.get("paths") or {}
        if not isinstance(paths, dict):
            self.warnings.append("'paths' is not an object; nothing imported")
            return found
        for path, raw_item in paths.items():
            try:
                item = self.deref(raw_item)
            except _Skip as exc:
                self.warnings.append(f"{path}: skipped: {exc}")
                continue
            for method, operation in item.items():
                if method == "trace":
                    self.warnings.append(f"TRACE {path}: skipped: TRACE is not imported")
                elif method in _SIDE_EFFECTS and isinstance(operation, dict):
                    found.append((str(path), method, item, operation))
        return found

    def operation(
        self, prefix: str, path: str, method: str, item: dict[str, Any], op: dict[str, Any]
    ) -> tuple[ToolSpec, list[Parameter], bool]:
        slug = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_")
        operation_id = op.get("operationId")
        if operation_id is not None and not isinstance(operation_id, str):
            raise _Skip("operationId is not a string")
        local = operation_id or f"{method}_{slug}".rstrip("_")
        name = f"{prefix}.{re.sub(r'[^A-Za-z0-9_.-]+', '_', local).strip('_.-')}"
        if not re.fullmatch(TOOL_NAME_PATTERN, name):
            raise _Skip(f"cannot make a tool name from {local!r}")
        self._where, self._budget = name, MAX_SCHEMA_NODES
        properties: dict[str, Any] = {}
        required: list[str] = []
        params = self._parameters(item, op, properties, required)
        has_body = self._body(op, properties, required)
        description = self._text(  # self._where is the tool name: the same warning
            f"{method.upper()} {path}"
            + (f": {op['summary']}" if isinstance(op.get("summary"), str) else "")
            + (f"\n\n{op['description']}" if isinstance(op.get("description"), str) else "")
        )
        input_schema = {"type": "object", "properties": properties, "required": required}
        try:
            return (
                ToolSpec(
                    name=name,
                    description=description,
                    input_schema=input_schema,
                    output_schema=self._output_schema(op),
                    **self._extensions(method, op),
                ),
                params,
                has_body,
            )
        except pydantic.ValidationError as exc:
            raise _Skip(f"invalid tool spec: {exc.errors()[0]['msg']}") from exc

    def _parameters(
        self,
        item: dict[str, Any],
        op: dict[str, Any],
        properties: dict[str, Any],
        required: list[str],
    ) -> list[Parameter]:
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for raw in [*_list(item.get("parameters")), *_list(op.get("parameters"))]:
            param = self.deref(raw)  # operation-level ones override path-item ones (OpenAPI)
            if not isinstance(param.get("name"), str) or not isinstance(param.get("in"), str):
                raise _Skip("a parameter's 'name' or 'in' is not a string")
            merged[(param["name"], param["in"])] = param
        params: list[Parameter] = []
        for (name, location), param in merged.items():
            if location == "header" and name.lower() in _IGNORED_HEADERS:
                self.warnings.append(f"{self._where}: header parameter {name} ignored")
                continue
            if location not in {"path", "query", "header"}:
                if param.get("required"):
                    raise _Skip(f"required {location} parameter {name} is not supported")
                self.warnings.append(f"{self._where}: {location} parameter {name} ignored")
                continue
            if name in properties or name == "body":
                raise _Skip(f"parameter name {name!r} is used twice")
            media = next(iter((param.get("content") or {}).values()), None)
            schema = param.get("schema", media.get("schema", {}) if isinstance(media, dict) else {})
            prop = self.schema(schema)
            if isinstance(param.get("description"), str) and isinstance(prop, dict):
                prop.setdefault("description", self._text(param["description"]))
            properties[name] = prop
            is_required = location == "path" or bool(param.get("required"))
            if is_required:
                required.append(name)
            style = str(param.get("style") or ("form" if location == "query" else "simple"))
            explode = bool(param.get("explode", style == "form"))
            params.append(Parameter(name, location, is_required, explode))
        return params

    def _body(self, op: dict[str, Any], properties: dict[str, Any], required: list[str]) -> bool:
        if "requestBody" not in op:
            return False
        body = self.deref(op["requestBody"])
        media = _json_media(body.get("content") or {})
        if media is None:
            if body.get("required"):
                raise _Skip("its required request body is not JSON")
            self.warnings.append(f"{self._where}: non-JSON request body ignored")
            return False
        properties["body"] = self.schema(media.get("schema", {}))
        if body.get("required"):
            required.append("body")
        return True

    def _output_schema(self, op: dict[str, Any]) -> dict[str, Any] | bool:
        responses = op.get("responses") or {}
        for code in sorted(str(c) for c in responses):
            if code.startswith("2"):
                media = _json_media(self.deref(responses[code]).get("content") or {})
                return self.schema(media.get("schema", {})) if media else {}
        return {}

    def _extensions(self, method: str, op: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {
            "side_effect": op.get("x-planexec-side-effect", _SIDE_EFFECTS[method].value),
            "idempotent": op.get("x-planexec-idempotent", method in _IDEMPOTENT_METHODS),
            "required_scopes": op.get("x-planexec-required-scopes", []),
            "cost_usd": op.get("x-planexec-cost-usd", 0.0),
        }
        if "x-planexec-timeout-s" in op:
            values["default_timeout_s"] = op["x-planexec-timeout-s"]
        if "x-planexec-meter" in op:  # a ToolMeter: {arg, unit, run_limit, tenant_daily_limit}
            values["meter"] = op["x-planexec-meter"]
        if values["side_effect"] not in {e.value for e in SideEffect}:
            raise _Skip(f"x-planexec-side-effect {values['side_effect']!r} is not a side effect")
        if not isinstance(values["idempotent"], bool):
            raise _Skip("x-planexec-idempotent is not a boolean")
        scopes = values["required_scopes"]
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise _Skip("x-planexec-required-scopes is not a list of strings")
        return values

    def _text(self, text: str) -> str:
        cleaned, label = screen_description(text)
        if label:
            self.warnings.append(
                f"{self._where}: description flagged ({label}); cut to its first part"
            )
        return cleaned

    def pointer(self, ref: str) -> Any:
        """Resolve a local ``$ref`` (RFC 6901 pointer in a URI fragment); refuse any other."""
        if not ref.startswith("#"):
            raise _Skip(f"external $ref {ref!r} is not fetched")
        node: Any = self.document
        for raw in unquote(ref[1:]).split("/")[1:]:
            token = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                raise _Skip(f"$ref {ref!r} points at nothing")
        return node

    def deref(self, node: Any) -> dict[str, Any]:
        """Follow a chain of ``$ref``s to a non-schema object (parameter, response, path item)."""
        seen: set[str] = set()
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            if node["$ref"] in seen or len(seen) >= self.max_ref_depth:
                raise _Skip(f"$ref {node['$ref']!r} is recursive or too deep")
            seen.add(node["$ref"])
            node = self.pointer(node["$ref"])
        if not isinstance(node, dict):
            raise _Skip("an object in the document is not a JSON object")
        return node

    def schema(self, node: Any, stack: tuple[str, ...] = ()) -> Any:
        """Inline and convert a Schema Object into JSON Schema 2020-12."""
        self._budget -= 1
        self._total -= 1
        if self._total < 0:
            raise _Skip(
                f"the document's schemas inline to more than {MAX_IMPORT_NODES} nodes"
                " (MAX_IMPORT_NODES)"
            )
        if self._budget < 0:
            raise _Skip(f"schemas inline to more than {MAX_SCHEMA_NODES} nodes (MAX_SCHEMA_NODES)")
        if isinstance(node, bool):
            return node
        if not isinstance(node, dict):
            raise _Skip("a schema is not a JSON object")
        if self._depth >= MAX_SCHEMA_DEPTH:
            raise _Skip(f"a schema nests deeper than {MAX_SCHEMA_DEPTH} (MAX_SCHEMA_DEPTH)")
        self._depth += 1
        try:
            if "$ref" in node:
                return self._ref_schema(node, stack)
            out: dict[str, Any] = {}
            for key, value in node.items():
                if not key.startswith("x-") and key not in _OPENAPI_ONLY:
                    self._keyword(out, key, value, stack)
            if "example" in node and "examples" not in out:
                out["examples"] = [node["example"]]
            return out if self.v31 else _from_openapi30(node, out)
        finally:
            self._depth -= 1

    def _keyword(self, out: dict[str, Any], key: str, value: Any, stack: tuple[str, ...]) -> None:
        if key == "items" and isinstance(value, list):  # draft-4 tuple form
            out["prefixItems"] = [self.schema(v, stack) for v in value]
        elif key in _SCHEMA_KEYS:
            out[key] = self.schema(value, stack)
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {k: self.schema(v, stack) for k, v in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [self.schema(v, stack) for v in value]
        elif key == "description":
            if isinstance(value, str):
                out[key] = self._text(value)
            else:
                self.warnings.append(f"{self._where}: a non-string description dropped")
        else:
            out[key] = value  # data (enum, default, const...), never walked for $refs

    def _ref_schema(self, node: dict[str, Any], stack: tuple[str, ...]) -> Any:
        ref = node["$ref"]
        if not isinstance(ref, str):
            raise _Skip("a $ref is not a string")
        target: Any
        if ref in stack or len(stack) >= self.max_ref_depth:
            why = "recursive" if ref in stack else f"deeper than {self.max_ref_depth}"
            self.warnings.append(f"{self._where}: $ref {ref} is {why}; replaced by {{}}")
            target = {}
        else:
            target = self.schema(self.pointer(ref), (*stack, ref))
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        if not self.v31 or not siblings:  # 3.0: siblings of a Reference Object SHALL be ignored
            return target
        merged = self.schema(siblings, stack)
        merged["allOf"] = [*merged.get("allOf", []), target]
        return merged


def _from_openapi30(node: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    """Apply the OpenAPI 3.0 keyword meanings that JSON Schema 2020-12 spells differently."""
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if out.get(exclusive) is True and bound in out:
            out[exclusive] = out.pop(bound)
        elif isinstance(out.get(exclusive), bool):
            del out[exclusive]
    if node.get("nullable") is True:
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
            if isinstance(out.get("enum"), list) and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
        elif kind is None and out:  # e.g. a nullable allOf/$ref; a bare {} already allows null
            return {"anyOf": [out, {"type": "null"}]}
    return out


def _list(value: Any) -> list[Any]:
    """A ``parameters`` value as a list; anything else is refused."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Skip("'parameters' is not a list")
    return value


def _json_media(content: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON media type entry of a ``content`` map (``application/json`` or ``*+json``)."""
    for media_type, media in content.items():
        base = str(media_type).split(";")[0].strip().lower()
        if (base == "application/json" or base.endswith("+json")) and isinstance(media, dict):
            return media
    return None
