"""Planner persistence: SQL behind small repositories, one transaction per unit of work."""

from .plans import AttemptRow, NewAttempt, NewVersion, PlanStore, PlanSummary, StoredVersion

__all__ = ["AttemptRow", "NewAttempt", "NewVersion", "PlanStore", "PlanSummary", "StoredVersion"]
