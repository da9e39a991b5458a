"""ASGI entry for process managers (``uvicorn --factory planner_service.asgi:...``)."""

from __future__ import annotations

from fastapi import FastAPI

from .app import create_app
from .settings import PlannerSettings


def create_app_from_env() -> FastAPI:
    """Build the planner app from ``PLANEXEC_*`` environment settings."""
    return create_app(PlannerSettings())
