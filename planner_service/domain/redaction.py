"""Secret redaction applied to provenance before it is written (DESIGN §8).

Built-in patterns cover planexec API keys, OpenAI-style keys, ``Authorization``/``X-API-Key``
header values and bearer tokens; a deployment adds its own regular expressions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[REDACTED]"

BUILTIN_PATTERNS: tuple[str, ...] = (
    r"pxk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}",
    r"\bsk-[A-Za-z0-9_-]{16,}",
    r"(?i:(?P<bearer>\bbearer\s+)[A-Za-z0-9._~+/=-]{8,})",
    r"(?i:(?P<header>\b(?:authorization|x-api-key)[\"']?\s*[:=]\s*[\"']?)(?:[A-Za-z]+\s+)?[^\s\"',}]+)",
)
"""Regular expressions of secrets; a group named ``bearer`` or ``header`` is kept."""

_SECRET_KEYS = frozenset({"authorization", "x-api-key", "api_key", "apikey", "password", "secret"})


def _replace(match: re.Match[str]) -> str:
    kept = match.groupdict()
    prefix = kept.get("bearer") or kept.get("header") or ""
    return prefix + REDACTED


class Redactor:
    """Replaces secrets in strings and JSON values with ``[REDACTED]``."""

    def __init__(self, extra_patterns: Iterable[str] = ()) -> None:
        patterns = (*BUILTIN_PATTERNS, *extra_patterns)
        self._pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def text(self, value: str) -> str:
        """``value`` with every secret match replaced."""
        return self._pattern.sub(_replace, value)

    def value(self, value: Any) -> Any:
        """A copy of a JSON value with secrets in strings, and values of secret keys, replaced."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {
                k: REDACTED if k.lower() in _SECRET_KEYS and v else self.value(v)
                for k, v in value.items()
            }
        return value
