"""Planner backends: turn an intent into a ``PlanDraft`` (template, openai, draft)."""
