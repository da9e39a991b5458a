"""The console's Jinja2 environment: autoescaping on, strict undefined, display filters.

Everything rendered from a run, a tool output, a plan or an LLM response goes through
autoescaping; no template marks such a value ``safe``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATE_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"


SHOWN_JSON_CHARS = 20_000
"""Longest JSON text a page shows of one value (an output may be up to 1 MiB)."""


def pretty_json(value: Any, limit: int = SHOWN_JSON_CHARS) -> str:
    """``value`` as indented JSON (keys sorted, non-ASCII kept); ``—`` for None.

    Text longer than ``limit`` characters is cut, with a note saying how much was left out.
    """
    if value is None:
        return "—"
    out = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    if len(out) > limit:
        return f"{out[:limit]}\n… ({len(out) - limit} more characters)"
    return out


def compact_json(value: Any, limit: int = 300) -> str:
    """``value`` as one-line JSON, cut after ``limit`` characters."""
    out = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return out if len(out) <= limit else out[:limit] + "…"


def when(value: datetime | None) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM:SS.mmm UTC``; ``—`` for None."""
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def duration(seconds: float | None) -> str:
    """A duration in seconds as ``0.005 s``, ``2.51 s`` or ``3 min 4 s``; ``—`` for None."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds:.3f} s"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def short_id(value: Any) -> str:
    """The first 8 characters of an id (UUIDs are shown in full in titles)."""
    return str(value)[:8]


def error_text(error: Any) -> str:
    """A stored error ``{code, message, ...}`` as ``code: message``; ``""`` for None."""
    if not error:
        return ""
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        if code or message:
            return f"{code or 'error'}: {message or ''}".rstrip(": ")
    return json.dumps(error, sort_keys=True, default=str)


def make_environment() -> Environment:
    """The console's environment; ``autoescape`` is on for every template."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters |= {
        "pretty": pretty_json,
        "compact": compact_json,
        "when": when,
        "duration": duration,
        "short": short_id,
        "error_text": error_text,
    }
    return env


TEMPLATES = Jinja2Templates(env=make_environment())
"""The console's templates (``templates/*.html``)."""
