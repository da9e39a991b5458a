"""``GET /v1/healthz`` and ``GET /v1/tools``."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from planexec.errors import AuthenticationRequiredError, ServiceUnavailableError
from planexec.web import PrincipalDep, problem_responses
from shared_schemas import ToolCatalog

from ..tools.registry import ToolRegistry

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """Service health."""

    status: Literal["ok"]
    """Always ``ok`` when the service and its database answer."""
    service: str
    """Which service answered."""
    database: Literal["ok"]
    """The database answered ``SELECT 1``."""
    tools: int
    """Number of tools in the catalog."""


@router.get(
    "/v1/healthz", operation_id="healthz", responses=problem_responses(ServiceUnavailableError)
)
async def healthz(request: Request) -> Health:
    """Report whether the service and its database answer (no authentication)."""
    try:
        async with request.app.state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as exc:
        raise ServiceUnavailableError(f"database unavailable: {type(exc).__name__}") from exc
    registry: ToolRegistry = request.app.state.registry
    return Health(status="ok", service=request.app.title, database="ok", tools=len(registry))


@router.get(
    "/v1/tools",
    operation_id="listTools",
    tags=["tools"],
    responses=problem_responses(AuthenticationRequiredError),
)
async def list_tools(request: Request, _: PrincipalDep) -> ToolCatalog:
    """The tool catalog: every tool with schemas, side effect, scopes, cost; and its version."""
    registry: ToolRegistry = request.app.state.registry
    return registry.catalog
