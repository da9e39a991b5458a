"""Budget checks made before each step starts (OWASP API4: third-party spending limits)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Spend:
    """What a run and its tenant have spent and may spend, in USD."""

    run_spent_usd: float
    run_budget_usd: float | None
    tenant_spent_usd: float
    """The tenant's spend today (UTC), all runs, as last seen."""
    tenant_budget_usd: float | None
    """The tenant's daily cap."""


def over_budget(spend: Spend, estimate_usd: float) -> dict[str, Any] | None:
    """The ``run.budget_exceeded`` payload if a step would go over a cap, else None.

    A step costing ``estimate_usd`` is checked against the run's and the tenant's caps. A cap
    of None is no cap; a free step (estimate 0) is never stopped.
    """
    if estimate_usd <= 0:
        return None
    checks = (
        ("run", spend.run_spent_usd, spend.run_budget_usd),
        ("tenant", spend.tenant_spent_usd, spend.tenant_budget_usd),
    )
    for scope, spent, budget in checks:
        if budget is not None and spent + estimate_usd > budget:
            return {
                "scope": scope,
                "budget_usd": budget,
                "spent_usd": round(spent, 6),
                "estimate_usd": estimate_usd,
            }
    return None
