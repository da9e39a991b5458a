"""Test-only fault injection: end the worker process at a named point of the engine.

The fault tests of ``RELIABILITY.md`` (crash between a side effect and its checkpoint, a
poison step, a crash during compensation) set ``PLANEXEC_FAULT=<point>[:<step_id>]`` on a
worker process; when the engine reaches ``<point>`` (for ``<step_id>``, or any step), the
process ends at once with ``os._exit(137)``, as after ``kill -9``: no ``finally`` blocks,
no lease release. Settings refuse the variable when ``PLANEXEC_ENV=prod``.
"""

from __future__ import annotations

import os

POINTS = frozenset({"before_call", "after_call", "before_compensation", "after_compensation"})
"""``before_call``: an attempt is about to call its tool. ``after_call``: the tool answered,
its outcome is not committed yet. ``before_compensation`` / ``after_compensation``: the same
around a compensation call."""


def parse_fault(value: str | None) -> tuple[str, str | None] | None:
    """``"after_call:charge"`` -> ``("after_call", "charge")``; None for no fault.

    Raises:
        ValueError: for a point not in ``POINTS``.
    """
    if not value:
        return None
    point, _, step_id = value.partition(":")
    if point not in POINTS:
        raise ValueError(f"unknown fault point {point!r}; known: {sorted(POINTS)}")
    return point, step_id or None


def crash_if(fault: tuple[str, str | None] | None, point: str, step_id: str) -> None:
    """End the process with status 137 when ``fault`` names this point (and step)."""
    if fault is None or fault[0] != point:
        return
    if fault[1] is None or fault[1] == step_id:
        os._exit(137)
