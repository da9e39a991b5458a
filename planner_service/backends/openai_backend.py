"""The ``openai`` planner backend: any OpenAI-compatible chat-completions endpoint (DESIGN §4).

It asks for structured output (``response_format`` ``json_schema`` with ``strict: true``),
temperature 0 and a fixed seed, with the prompt from a versioned template
(``planner_service/prompts/``) and the catalog quoted in it (see ``prompt``). The answer is
decoded from the wire shape (below) back into ``PlanDraft`` JSON and parsed strictly: malformed
JSON is reported as ``schema`` issues, never guessed at.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any, cast

import httpx2
import openai
from openai import AsyncOpenAI

from shared_schemas import IssueCode, PlanDraft, PlannerInfo, ValidationIssue

from ..domain.parsing import DraftParseError, loads_strict, parse_draft_value
from .base import (
    AttemptRecord,
    BackendUnavailableError,
    Generation,
    PlanRequest,
    PriorAttempt,
)
from .prompt import build_messages, load_prompt

_ERROR_TEXT_LIMIT = 300


# --- Strict response schema (OpenAI structured outputs, ``strict: true``) -------------------
#
# OpenAI's strict mode accepts a subset of JSON Schema: every object must list all of its
# properties in ``required`` and set ``additionalProperties: false``, and keywords such as
# ``default``, ``minLength`` or ``maxLength`` are not supported ("Structured Outputs",
# supported schemas). The wire schema is derived from ``PlanDraft.model_json_schema()``:
# optional fields become required and nullable (null = "not set"); a free-form value (an open
# object such as ``args``, or ``Any``) cannot be described, so it travels as JSON text in a
# string field with a ``_json`` suffix (``args`` -> ``args_json``); ``requires_approval`` is left
# out, as it is set by policy, never by a backend.

RESPONSE_FORMAT_NAME = "planexec_plan_v1"
"""``json_schema.name`` of the response format."""

JSON_SUFFIX = "_json"
OMITTED_FIELDS = frozenset({"requires_approval"})
_KEPT_KEYWORDS = frozenset(
    {
        "type", "enum", "const", "pattern", "format", "minimum", "maximum",
        "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minItems", "maxItems",
    }
)  # fmt: skip
_NULL: dict[str, Any] = {"type": "null"}


def _is_open(schema: dict[str, Any]) -> bool:
    """True for a schema that admits any object or any value (no properties described)."""
    if "$ref" in schema or "anyOf" in schema:
        return False
    kind = schema.get("type")
    return kind is None or (kind == "object" and "properties" not in schema)


def _open_branch(schema: dict[str, Any]) -> tuple[bool, bool]:
    """(is free-form, is nullable) of a property schema."""
    branches = schema.get("anyOf", [schema])
    rest = [b for b in branches if b != _NULL]
    return len(rest) == 1 and _is_open(rest[0]), len(rest) < len(branches)


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return {"$ref": schema["$ref"]}
    if "anyOf" in schema:
        return {"anyOf": [_strict(b) for b in schema["anyOf"]]}
    if schema.get("type") == "object":
        if "properties" not in schema:
            raise ValueError(f"a free-form object is not expressible in strict mode: {schema}")
        required = set(schema.get("required", []))
        properties: dict[str, Any] = {}
        for name, prop in schema["properties"].items():
            if name in OMITTED_FIELDS:
                continue
            free, nullable = _open_branch(prop)
            note = prop.get("description", "")
            wire: dict[str, Any] = {"type": "string"} if free else _strict(prop)
            if free:
                note = f"JSON text of the value. {note}".strip()
            if (nullable or name not in required) and _NULL not in wire.get("anyOf", []):
                wire = {"anyOf": [wire, _NULL]}
            if note and "$ref" not in wire:
                wire["description"] = note
            properties[name + JSON_SUFFIX if free else name] = wire
        return {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
            **_pick(schema, "description"),
        }
    out = {k: v for k, v in schema.items() if k in _KEPT_KEYWORDS}
    if "items" in schema:
        out["items"] = _strict(schema["items"])
    return out


def _pick(schema: dict[str, Any], key: str) -> dict[str, Any]:
    return {key: schema[key]} if key in schema else {}


@functools.cache
def _contract_schema() -> dict[str, Any]:
    """``PlanDraft.model_json_schema()``, computed once; never mutated."""
    return PlanDraft.model_json_schema()


def wire_schema() -> dict[str, Any]:
    """The strict-mode response schema, derived from ``PlanDraft.model_json_schema()``.

    Raises:
        ValueError: if the contract gains a free-form value this derivation cannot express.
    """
    source = _contract_schema()
    out = _strict({k: v for k, v in source.items() if k != "$defs"})
    out["$defs"] = {name: _strict(sub) for name, sub in source.get("$defs", {}).items()}
    return out


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return defs[ref.rsplit("/", 1)[-1]] if isinstance(ref, str) else schema


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    rest = [b for b in schema.get("anyOf", [schema]) if b != _NULL]
    return rest[0] if len(rest) == 1 else schema


def _from_wire(
    value: Any,
    schema: dict[str, Any],
    defs: dict[str, Any],
    path: str,
    issues: list[ValidationIssue],
) -> Any:
    schema = _resolve(_non_null(_resolve(schema, defs)), defs)
    if isinstance(value, list) and "items" in schema:
        return [
            _from_wire(v, schema["items"], defs, f"{path}/{i}", issues) for i, v in enumerate(value)
        ]
    if not isinstance(value, dict) or "properties" not in schema:
        return value
    props, required = schema["properties"], set(schema.get("required", []))
    out: dict[str, Any] = {}
    for key, item in value.items():
        base = key.removesuffix(JSON_SUFFIX)
        if key in OMITTED_FIELDS:
            issues.append(_wire_issue(f"{path}/{key}", f"'{key}' is set by policy, not by a plan"))
        elif key != base and base in props and _open_branch(props[base])[0]:
            here = f"{path}/{base}"
            if item is None and base not in required:
                continue
            if not isinstance(item, str):
                issues.append(_wire_issue(here, f"'{key}' must be a string of JSON text"))
                continue
            try:
                out[base] = loads_strict(item)
            except ValueError as exc:
                issues.append(_wire_issue(here, f"'{key}' is not valid JSON: {exc}"))
        elif key in props and item is None and key not in required:
            continue  # null on the wire means "not set": the contract default applies
        elif key in props:
            out[key] = _from_wire(item, props[key], defs, f"{path}/{key}", issues)
        else:
            out[key] = item  # unknown: left for the strict parse to refuse
    return out


def _wire_issue(path: str, message: str) -> ValidationIssue:
    return ValidationIssue(code=IssueCode.SCHEMA, message=message, path=path)


def wire_to_draft_value(wire: Any) -> tuple[Any, list[ValidationIssue]]:
    """Turn a decoded wire response into ``PlanDraft`` JSON.

    ``<name>_json`` strings are decoded strictly (RFC 8259, no duplicate keys, no NaN) into
    ``<name>``; nulls of optional fields are dropped. Nothing else is changed or guessed.

    Returns:
        The ``PlanDraft`` JSON value and the ``schema`` issues found decoding ``_json`` fields
        (JSON pointers into the plan, e.g. ``/steps/0/args``).
    """
    source = _contract_schema()
    issues: list[ValidationIssue] = []
    value = _from_wire(wire, source, source.get("$defs", {}), "", issues)
    return value, issues


def _to_wire(value: Any, schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    schema = _resolve(_non_null(_resolve(schema, defs)), defs)
    if isinstance(value, list) and "items" in schema:
        return [_to_wire(v, schema["items"], defs) for v in value]
    if not isinstance(value, dict) or "properties" not in schema:
        return value
    out: dict[str, Any] = {}
    for name, prop in schema["properties"].items():
        if name in OMITTED_FIELDS:
            continue
        item = value.get(name)
        if _open_branch(prop)[0]:
            out[name + JSON_SUFFIX] = None if item is None else json.dumps(item)
        else:
            out[name] = _to_wire(item, prop, defs)
    return out


def draft_to_wire(draft: PlanDraft) -> dict[str, Any]:
    """The wire form of ``draft`` (the inverse of ``wire_to_draft_value``), e.g. for examples."""
    source = _contract_schema()
    value = draft.model_dump(mode="json")
    result: dict[str, Any] = _to_wire(value, source, source.get("$defs", {}))
    return result


class LLMCallError(BackendUnavailableError):
    """The model server could not be reached or refused the call; ``attempt`` records it."""

    def __init__(self, message: str, attempt: AttemptRecord) -> None:
        super().__init__(message)
        self.attempt = attempt
        """Provenance of the failed call (``error`` set, no ``raw_response``)."""


def _describe(exc: openai.APIError) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return "the model server did not answer in time"
    if isinstance(exc, openai.APIConnectionError):
        return f"cannot connect to the model server: {exc.__cause__ or exc}"
    if isinstance(exc, openai.APIStatusError):
        kind = {401: "authentication failed", 403: "permission denied", 429: "rate limited"}
        reason = kind.get(exc.status_code, "server error" if exc.status_code >= 500 else "refused")
        body = exc.body if isinstance(exc.body, dict) else {}
        detail = body.get("message") if isinstance(body.get("message"), str) else exc.message
        return f"model server answered HTTP {exc.status_code} ({reason}): {detail}"
    return f"model server error: {exc}"


class OpenAIBackend:
    """Plans with an LLM behind an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        base_url: API base URL, e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1``.
        api_key: bearer key sent to the server.
        model: model name.
        timeout_s: timeout of one HTTP request, in seconds.
        seed: sampling seed (best-effort determinism, with temperature 0).
        max_retries: retries of the ``openai`` client on connection errors, 408, 429 and 5xx.
        prompt_version: prompt template file stem under ``planner_service/prompts/``.
        catalog_token_budget: estimated tokens (``ceil(chars/4)``) the catalog may take.
        max_output_tokens: cap on completion tokens, or None for the server's default.

    Raises:
        PromptError: when the prompt template is missing or malformed.
    """

    name = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        model: str,
        timeout_s: float = 60.0,
        seed: int = 0,
        max_retries: int = 2,
        prompt_version: str = "plan_v1",
        catalog_token_budget: int = 8000,
        max_output_tokens: int | None = None,
    ) -> None:
        self.model = model
        self.seed = seed
        self.catalog_token_budget = catalog_token_budget
        self.max_output_tokens = max_output_tokens
        self.prompt = load_prompt(prompt_version)
        self.response_format: dict[str, Any] = {
            "type": "json_schema",
            "json_schema": {"name": RESPONSE_FORMAT_NAME, "strict": True, "schema": wire_schema()},
        }
        self._client = AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            http_client=httpx2.AsyncClient(timeout=timeout_s),
            max_retries=max_retries,
        )

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.close()

    def _planner(self) -> PlannerInfo:
        return PlannerInfo(backend="openai", model=self.model, prompt_version=self.prompt.version)

    async def generate(self, request: PlanRequest, prior: list[PriorAttempt]) -> Generation:
        """Ask the model for a plan; ``prior`` attempts are replayed for repair.

        Returns:
            A ``Generation`` whose ``attempt`` holds messages, parameters, raw response, token
            usage and latency; ``draft`` is None and ``issues`` say why when the answer is not a
            valid ``PlanDraft``.

        Raises:
            LLMCallError: a ``BackendUnavailableError`` on connection errors, timeouts, HTTP
                errors (5xx, 401, 429 after the client's retries, ...); it carries the attempt.
        """
        messages, catalog = build_messages(self.prompt, request, prior, self.catalog_token_budget)
        parameters: dict[str, Any] = {
            "model": self.model,
            "temperature": 0,
            "seed": self.seed,
            "response_format": RESPONSE_FORMAT_NAME,
            "max_tokens": self.max_output_tokens,
            "catalog_tools": catalog.tools,
            "catalog_dropped": catalog.dropped,
            "catalog_tokens_estimate": catalog.tokens,
        }
        extra: dict[str, Any] = {}
        if self.max_output_tokens is not None:
            extra["max_tokens"] = self.max_output_tokens
        started = time.perf_counter()
        try:
            completion = await self._client.chat.completions.create(
                model=self.model,
                messages=cast(Any, messages),
                temperature=0,
                seed=self.seed,
                response_format=cast(Any, self.response_format),
                **extra,
            )
        except openai.APIError as exc:
            message = _describe(exc)[:_ERROR_TEXT_LIMIT]
            attempt = AttemptRecord(
                backend=self.name,
                model=self.model,
                prompt_version=self.prompt.version,
                messages=list(messages),
                parameters=parameters,
                latency_s=time.perf_counter() - started,
                error=message,
            )
            raise LLMCallError(message, attempt) from exc
        latency = time.perf_counter() - started
        usage = completion.usage
        choice = completion.choices[0] if completion.choices else None
        content = choice.message.content if choice is not None else None
        attempt = AttemptRecord(
            backend=self.name,
            model=completion.model or self.model,
            prompt_version=self.prompt.version,
            messages=list(messages),
            parameters=parameters,
            raw_response=content,
            input_tokens=usage.prompt_tokens if usage is not None else None,
            output_tokens=usage.completion_tokens if usage is not None else None,
            latency_s=latency,
        )
        if choice is None or content is None:
            refusal = choice.message.refusal if choice is not None else None
            why = f"the model refused: {refusal}" if refusal else "the model returned no content"
            issue = ValidationIssue(code=IssueCode.SCHEMA, message=why, path="")
            return Generation(attempt=attempt, planner=self._planner(), issues=[issue])
        parsed = _parse(content, choice.finish_reason)
        if isinstance(parsed, list):
            return Generation(attempt=attempt, planner=self._planner(), issues=parsed)
        return Generation(attempt=attempt, planner=self._planner(), draft=parsed)


def _parse(content: str, finish_reason: str | None) -> PlanDraft | list[ValidationIssue]:
    """Decode wire JSON strictly into a ``PlanDraft``, or return the list of issues."""
    truncated = (
        " (the response was cut off at the token limit)" if finish_reason == "length" else ""
    )
    try:
        wire = loads_strict(content)
    except ValueError as exc:
        message = f"malformed JSON{truncated}: {exc}"
        return [ValidationIssue(code=IssueCode.SCHEMA, message=message, path="")]
    value, issues = wire_to_draft_value(wire)
    if issues:
        return issues
    try:
        return parse_draft_value(value)
    except DraftParseError as exc:
        return exc.issues
