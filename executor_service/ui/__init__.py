"""The operator console at ``/ui``: server-rendered Jinja2 pages with htmx, no build step.

Screens: runs (filters, paging), a run (its DAG coloured by step state and updated live from
the run's events, attempts timeline, step details, operator actions), the approvals inbox and
plans (versions, diffs, validation, provenance). Login pastes an API key; every form carries a
CSRF token bound to the session. htmx and its SSE extension are vendored under ``static/``.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.staticfiles import StaticFiles

from . import approval_routes, auth_routes, plan_routes, run_routes
from .templating import STATIC_DIR

router = APIRouter(include_in_schema=False)
"""Every console route, and ``/ui/static`` (the stylesheet and the vendored scripts)."""
router.include_router(auth_routes.router)
router.include_router(run_routes.router)
router.include_router(approval_routes.router)
router.include_router(plan_routes.router)
router.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")

__all__ = ["router"]
