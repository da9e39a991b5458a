"""Which steps a revised plan carries over from the run it replaces (DESIGN §6, Replan).

A step of the new version is carried over, not run again, when the old version had a step
with the same id and tool that succeeded, and its arguments resolve to the same values
against the carried-over outputs. Everything else starts afresh; steps the new version
dropped are removed from the run (their attempts and events stay in the history).
"""

from __future__ import annotations

import graphlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared_schemas import Plan

from .arguments import RefResolutionError, resolve_args


@dataclass(frozen=True)
class OldStep:
    """What the run knows of a step of the version being replaced."""

    tool: str
    status: str
    resolved_args: Any
    output: Any


@dataclass(frozen=True)
class CarryOver:
    """The new version's steps, split by what happens to them."""

    carried: dict[str, OldStep]
    """Step id -> the old step whose output is kept."""
    fresh: list[str]
    """Steps of the new version that will run."""
    removed: list[str]
    """Steps of the old version the new one does not have."""


def carry_over(new_plan: Plan, old: Mapping[str, OldStep]) -> CarryOver:
    """Split the new version's steps into carried over and fresh (pure)."""
    by_id = {s.id: s for s in new_plan.steps}
    order = graphlib.TopologicalSorter({s.id: set(s.depends_on) for s in new_plan.steps})
    outputs: dict[str, Any] = {}
    carried: dict[str, OldStep] = {}
    fresh: list[str] = []
    for step_id in order.static_order():
        step = by_id[step_id]
        previous = old.get(step_id)
        same = previous is not None and previous.status == "succeeded"
        same = same and previous is not None and previous.tool == step.tool
        same = same and all(dep in carried for dep in step.depends_on)
        if same and previous is not None:
            try:
                same = resolve_args(step.args, outputs) == previous.resolved_args
            except RefResolutionError:
                same = False
        if same and previous is not None:
            carried[step_id] = previous
            outputs[step_id] = previous.output
        else:
            fresh.append(step_id)
    removed = sorted(set(old) - set(by_id))
    return CarryOver(carried, [s.id for s in new_plan.steps if s.id in set(fresh)], removed)
