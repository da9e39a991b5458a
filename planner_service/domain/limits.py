"""Input limits checked before anything is generated or stored (OWASP API4).

Each check names the limit it enforces so that the problem response can say which one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LimitViolation:
    """A refused input: which limit, its value, and where."""

    limit: str
    """Settings name of the limit, e.g. ``max_json_depth``."""
    value: int
    """The configured value of the limit."""
    message: str
    """What exceeded it."""


def json_depth(value: Any) -> int:
    """Nesting depth of a JSON value: a scalar is 0, ``{}`` and ``[]`` are 1.

    Iterative, so a hostile value cannot exhaust the Python stack.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            depth += 1
            stack.extend((child, depth) for child in node.values())
        elif isinstance(node, list):
            depth += 1
            stack.extend((child, depth) for child in node)
        deepest = max(deepest, depth)
    return deepest


def find_nul(value: Any, path: str = "") -> str | None:
    """JSON pointer of the first string (or key) holding a NUL character, else None.

    Postgres ``jsonb`` and ``text`` cannot store U+0000, so such input is refused up front.
    """
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return where
        elif isinstance(node, dict):
            for key, child in node.items():
                escaped = key.replace("~", "~0").replace("/", "~1")
                if "\x00" in key:
                    return f"{where}/{escaped}"
                stack.append((child, f"{where}/{escaped}"))
        elif isinstance(node, list):
            stack.extend((child, f"{where}/{i}") for i, child in enumerate(node))
    return None


def check_intent(intent: str, max_bytes: int) -> LimitViolation | None:
    """Refuse an intent longer than ``max_bytes`` UTF-8 bytes."""
    size = len(intent.encode("utf-8"))
    if size > max_bytes:
        return LimitViolation(
            "max_intent_bytes", max_bytes, f"intent is {size} bytes, over {max_bytes}"
        )
    return None


def check_depth(value: Any, where: str, max_depth: int) -> LimitViolation | None:
    """Refuse ``value`` nested deeper than ``max_depth``."""
    depth = json_depth(value)
    if depth > max_depth:
        return LimitViolation(
            "max_json_depth", max_depth, f"{where} is nested {depth} deep, over {max_depth}"
        )
    return None


def check_step_count(steps: Any, max_steps: int) -> LimitViolation | None:
    """Refuse a caller-supplied draft with more than ``max_steps`` steps."""
    if isinstance(steps, list) and len(steps) > max_steps:
        return LimitViolation(
            "max_steps", max_steps, f"draft has {len(steps)} steps, over {max_steps}"
        )
    return None
