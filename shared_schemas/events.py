"""Run event contract: the append-only history of a run (DESIGN §6)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import Field

from ._base import ContractModel


class RunEvent(ContractModel):
    """One state change of a run or of one of its steps; ``seq`` is gap-free per run."""

    run_id: UUID
    """The run the event belongs to."""
    seq: int = Field(ge=1)
    """Position in the run's history, starting at 1, without gaps."""
    type: str = Field(pattern=r"^[a-z][a-z0-9_.]{0,63}$")
    """Event type, e.g. ``run.started``, ``step.succeeded``, ``approval.granted``."""
    step_id: str | None = None
    """The step concerned, or null for run-level events."""
    attempt: int | None = Field(default=None, ge=1)
    """Attempt number for step-attempt events, starting at 1."""
    payload: dict[str, Any] = Field(default_factory=dict)
    """Event-specific data (error, output digest, decision, ...)."""
    trace_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    """W3C Trace Context trace id of the span that wrote the event."""
    at: datetime
    """When the event was committed (database clock, UTC)."""
