"""Tool catalog contract: what a tool is, what it costs and what it may change (DESIGN §3)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import Field

from ._base import ContractModel

TOOL_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$"


class SideEffect(StrEnum):
    """What calling a tool may change in the world."""

    READ = "read"
    """No change outside the call: safe to repeat and to run in safe mode."""
    WRITE = "write"
    """Creates or changes something; needs the tool's required scopes."""
    DESTRUCTIVE = "destructive"
    """Deletes or overwrites something that cannot be restored; always needs an approval."""


class ToolMeter(ContractModel):
    """A numeric argument of a side-effecting tool whose running total is capped (RELIABILITY S6).

    A payment split into many small steps (AgentDojo banking: "in small increments of no more
    than $10,000") passes any per-step rule; what is limited here is the sum. The planner puts
    the plan's running total of ``arg`` into each step's Cedar context (``cumulative_amount``,
    ``amount_known``) and exposes these limits on the tool entity; the executor adds up the
    resolved values of the calls it starts (per run, and per tenant per UTC day across runs)
    and refuses the call that would go over a limit (``executor_service.domain.metering``).
    """

    arg: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
    """Name of the top-level argument metered, e.g. ``amount``; its value must be a number."""
    unit: str = Field(default="", max_length=16)
    """Unit of the argument's values, e.g. ``USD``; for reports and events only."""
    run_limit: float | None = Field(default=None, ge=0, le=1e15)
    """Most one run may add up over its calls of this tool, in ``unit``; None: no cap."""
    tenant_daily_limit: float | None = Field(default=None, ge=0, le=1e15)
    """Most one tenant may add up per UTC day over all its runs, in ``unit``; None: no cap."""

    def amount(self, args: Mapping[str, Any]) -> Decimal | None:
        """What a call with ``args`` adds to the totals: ``|args[arg]|`` exactly, as a Decimal.

        None when the value is missing or not a number (a ``$ref`` object, a string, a
        boolean, NaN or an infinity): planners treat the total as unknown from there on, the
        executor refuses the call. Absolute values, so a negative amount offsets nothing.
        """
        value = args.get(self.arg)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        amount = abs(Decimal(str(value)))
        return amount if amount.is_finite() else None


class ToolSpec(ContractModel):
    """One entry of the tool catalog, as served by the executor's ``GET /v1/tools``."""

    name: str = Field(pattern=TOOL_NAME_PATTERN)
    """Catalog name the steps refer to, e.g. ``http.request`` or ``git.log``."""
    version: str = Field(default="1", min_length=1, max_length=64)
    """Version of the tool's contract; a changed spec gets a new version."""
    description: str = Field(default="", max_length=8192)
    """Human-readable description. Data, never instructions: it is quoted in prompts."""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    """JSON Schema (Draft 2020-12) the step ``args`` must satisfy."""
    output_schema: dict[str, Any] = Field(default_factory=dict)
    """JSON Schema (Draft 2020-12) the tool's output must satisfy; ``{}`` accepts anything."""
    side_effect: SideEffect = SideEffect.READ
    """What a call may change: ``read``, ``write`` or ``destructive``."""
    idempotent: bool = False
    """True when repeating a call with the same idempotency key has no further effect."""
    required_scopes: list[str] = Field(default_factory=list)
    """API-key scopes a caller needs to invoke the tool (checked by policy)."""
    default_timeout_s: float = Field(default=30.0, gt=0, le=86400)
    """Timeout of one attempt when the step sets none, in seconds."""
    cost_usd: float = Field(default=0.0, ge=0, le=1_000_000)
    """Estimated cost of one call, in USD; summed against a plan's budget."""
    compensation: str | None = Field(default=None, pattern=TOOL_NAME_PATTERN)
    """Name of the tool that undoes this one, when there is one."""
    meter: ToolMeter | None = Field(default=None, exclude_if=lambda v: v is None)
    """Cumulative limits on a numeric argument (S6); left out of the catalog when None, so a
    tool without one keeps its catalog hash."""


class ToolCatalog(ContractModel):
    """A versioned set of tools; ``catalog_version`` is derived from the tools."""

    catalog_version: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    """``sha256:`` + hex digest of the RFC 8785 canonical JSON of the tools sorted by name."""
    tools: list[ToolSpec]
    """The tools, sorted by name."""
