r"""Refuse request text that Postgres cannot store: U+0000 and unpaired UTF-16 surrogates.

PostgreSQL ``text`` and ``jsonb`` hold no NUL character (U+0000) and no lone surrogate
(``"\ud800"`` is valid JSON, I-JSON (RFC 7493 §2.1) forbids it, Python keeps it as a code
point UTF-8 cannot encode). Such a string in a path or query parameter or anywhere in a JSON
body would reach the database driver and fail there as a 500; this dependency turns it into a
422 ``limit-exceeded`` before any route runs (found by the OpenAPI fuzzer, ``tests/fuzz``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fastapi import Request

from planexec.errors import LimitExceededError

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
Location = tuple[str | int, ...]


def unstorable(text: str) -> str | None:
    """Why PostgreSQL cannot store ``text``: ``no_nul``, ``no_lone_surrogate``, or None."""
    if "\x00" in text:
        return "no_nul"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "no_lone_surrogate"
    return None


def _in_json(value: Any, loc: Location) -> Iterator[tuple[Location, str]]:
    """``(location, reason)`` of each unstorable string (keys included) of a JSON value."""
    if isinstance(value, str):
        if reason := unstorable(value):
            yield loc, reason
    elif isinstance(value, dict):
        for key, item in value.items():
            if reason := unstorable(key):
                yield (*loc, repr(key)), reason
            yield from _in_json(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _in_json(item, (*loc, index))


async def refuse_unstorable_text(request: Request) -> None:
    """App-wide dependency: path and query parameters and the JSON body hold storable text.

    A body that is not JSON is left to the route (400 ``malformed-request``).

    Raises:
        LimitExceededError: 422 ``limit-exceeded`` with ``limit`` ``no_nul`` (U+0000, the name
            the planner's intent check uses) or ``no_lone_surrogate``; ``errors`` gives each
            offending location (``["query", "tenant"]``, ``["body", "failure_context", "x"]``).
    """
    found: list[tuple[Location, str]] = []
    for name, value in request.path_params.items():
        if reason := unstorable(str(value)):
            found.append((("path", name), reason))
    for name, value in request.query_params.multi_items():
        if reason := unstorable(name) or unstorable(value):
            found.append((("query", name if not unstorable(name) else repr(name)), reason))
    if request.method in _BODY_METHODS:
        body = await request.body()
        try:
            parsed = json.loads(body) if body else None
        except (ValueError, RecursionError):
            parsed = None
        found.extend(_in_json(parsed, ("body",)))
    if found:
        (loc, reason), message = found[0], "text PostgreSQL cannot store"
        detail = {"no_nul": "NUL characters (U+0000)", "no_lone_surrogate": "unpaired surrogates"}
        raise LimitExceededError(
            f"{detail[reason]} are not accepted (at {'/'.join(str(p) for p in loc)})",
            limit=reason,
            errors=[
                {"loc": list(where), "type": why, "msg": f"{detail[why]}: {message}"}
                for where, why in found[:20]
            ],
        )
