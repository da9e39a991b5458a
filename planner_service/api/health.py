"""Liveness and readiness: ``GET /v1/healthz``."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from planexec.errors import ServiceUnavailableError
from planexec.web import problem_responses

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """Service health."""

    status: Literal["ok"]
    """Always ``ok`` when the service and its database answer."""
    service: str
    """Which service answered."""
    database: Literal["ok"]
    """The database answered ``SELECT 1``."""


@router.get(
    "/v1/healthz",
    operation_id="healthz",
    responses=problem_responses(ServiceUnavailableError),
)
async def healthz(request: Request) -> Health:
    """Report whether the service and its database answer (no authentication)."""
    try:
        async with request.app.state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as exc:
        raise ServiceUnavailableError(f"database unavailable: {type(exc).__name__}") from exc
    return Health(status="ok", service=request.app.title, database="ok")
