"""Version pinning (DESIGN §6, RELIABILITY R9): a run never mixes plan or tool versions.

A run records its plan version and content hash, the catalog and policy versions, and the
hash of each tool spec its plan uses. Before driving a run its stored plan is checked
against the pinned content hash and its step rows against the plan's steps; before each call
the tool's current spec is checked against the pinned one. A mismatch fails loudly.
"""

from __future__ import annotations

from collections.abc import Callable

from shared_schemas import Plan, ToolSpec, content_hash
from shared_schemas.canonical import sha256_digest

from ..tools.base import ToolAdapter


def spec_hash(spec: ToolSpec) -> str:
    """``sha256:<hex>`` of a tool spec's canonical JSON (RFC 8785): what a run pins."""
    return sha256_digest(spec.model_dump(mode="json"))


def pinned_specs(plan: Plan, tools: Callable[[str], ToolAdapter | None]) -> dict[str, str]:
    """The spec hash of each tool a plan uses (its steps and compensations), by name."""
    names = {s.tool for s in plan.steps} | {
        s.compensation.tool for s in plan.steps if s.compensation is not None
    }
    pinned: dict[str, str] = {}
    for name in sorted(names):
        tool = tools(name)
        if tool is not None:
            pinned[name] = spec_hash(tool.spec)
    return pinned


def divergence_from_pin(plan: Plan, pinned_hash: str, recorded_steps: set[str]) -> str | None:
    """Why a stored run contradicts its pinned plan, or None when it does not."""
    if pinned_hash and content_hash(plan) != pinned_hash:
        return "the stored plan no longer matches the content hash pinned at run creation"
    planned = {s.id for s in plan.steps}
    if recorded_steps != planned:
        return (
            "the run's recorded steps diverge from its pinned plan: "
            f"recorded {sorted(recorded_steps)}, plan {sorted(planned)}"
        )
    return None
