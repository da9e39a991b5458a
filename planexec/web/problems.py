"""One handler renders every error as RFC 9457 ``application/problem+json``.

Covered: ``PlanexecError`` subclasses, FastAPI request validation errors (malformed JSON is
400 ``malformed-request``, the rest 422 ``validation-error``), Starlette's 404/405 and other
HTTP errors, and unexpected exceptions (500 ``internal``, logged with the traceback, never
shown to the caller).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from planexec.errors import (
    MalformedRequestError,
    MethodNotAllowedError,
    NotFoundError,
    PlanexecError,
    RequestValidationFailedError,
)
from shared_schemas import ProblemDetails

PROBLEM_JSON = "application/problem+json"
_log = structlog.get_logger("planexec.http")

_BY_STATUS: dict[int, type[PlanexecError]] = {404: NotFoundError, 405: MethodNotAllowedError}


def problem_response(exc: PlanexecError, instance: str | None = None) -> JSONResponse:
    """Render ``exc`` as a problem+json response."""
    body = ProblemDetails(
        type=exc.type_uri(),
        title=exc.title,
        status=exc.status,
        detail=exc.detail,
        instance=instance,
        code=exc.code,
        retryable=exc.retryable,
        errors=exc.errors,
        **exc.extensions,
    )
    headers = (
        {"Retry-After": str(exc.extensions["retry_after_s"])}
        if "retry_after_s" in exc.extensions
        else None
    )
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True),
        status_code=exc.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def problem_responses(*errors: type[PlanexecError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem+json bodies for ``errors``.

    Keyed by HTTP status; errors that share a status share its entry, whose description
    lists their titles (``"Request validation failed; Limit exceeded"``).
    """
    out: dict[int | str, dict[str, Any]] = {}
    for err in errors:
        entry = out.setdefault(
            err.status,
            {
                "description": err.title,
                "content": {
                    PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}
                },
            },
        )
        titles = entry["description"].split("; ")
        if err.title not in titles:
            entry["description"] = "; ".join([*titles, err.title])
    return out


def _clean(value: Any) -> Any:
    """Make pydantic error context JSON-safe (exceptions and bytes become strings)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value) if isinstance(value, bytes) else str(value)


def _validation_problem(exc: RequestValidationError) -> PlanexecError:
    errors = exc.errors()
    if any(err.get("type") == "json_invalid" for err in errors):
        first = next(err for err in errors if err.get("type") == "json_invalid")
        return MalformedRequestError(
            f"request body is not valid JSON: {first.get('ctx', {}).get('error', '')}".rstrip(": ")
        )
    items = [
        {
            "loc": _clean(list(err.get("loc", ()))),
            "type": err.get("type"),
            "msg": err.get("msg"),
        }
        for err in errors
    ]
    summary = "; ".join(f"{'/'.join(str(p) for p in i['loc'])}: {i['msg']}" for i in items[:5])
    return RequestValidationFailedError(f"request validation failed: {summary}", errors=items)


def install_problem_handlers(app: FastAPI) -> None:
    """Register the problem+json handlers on ``app``; also documents ``ProblemDetails``."""

    async def on_planexec(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PlanexecError)
        return problem_response(exc, request.url.path)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem_response(_validation_problem(exc), request.url.path)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        cls = _BY_STATUS.get(exc.status_code)
        if cls is not None:
            response = problem_response(cls(), request.url.path)
        else:
            phrase = HTTPStatus(exc.status_code).phrase
            body = ProblemDetails(
                title=phrase,
                status=exc.status_code,
                detail=str(exc.detail),
                instance=request.url.path,
                code=phrase.lower().replace(" ", "-"),
            )
            response = JSONResponse(
                body.model_dump(mode="json", exclude_none=True),
                status_code=exc.status_code,
                media_type=PROBLEM_JSON,
            )
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        _log.error("unhandled_exception", path=request.url.path, exc_info=exc)
        return problem_response(PlanexecError(), request.url.path)

    app.add_exception_handler(PlanexecError, on_planexec)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
