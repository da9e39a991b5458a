"""``GET /v1/catalog``: the tool catalog the planner plans against."""

from __future__ import annotations

from fastapi import APIRouter, Request

from planexec.errors import AuthenticationRequiredError, ServiceUnavailableError
from planexec.web import PrincipalDep, problem_responses
from shared_schemas import ToolCatalog

from ..catalog import CatalogService, CatalogUnavailableError

router = APIRouter(prefix="/v1", tags=["catalog"])


@router.get(
    "/catalog",
    operation_id="getCatalog",
    responses=problem_responses(AuthenticationRequiredError, ServiceUnavailableError),
)
async def get_catalog(request: Request, principal: PrincipalDep) -> ToolCatalog:
    """The current catalog: tools with schemas, side effects, scopes and cost estimates."""
    service: CatalogService = request.app.state.catalog
    try:
        return service.current
    except CatalogUnavailableError as exc:
        raise ServiceUnavailableError(str(exc)) from exc
