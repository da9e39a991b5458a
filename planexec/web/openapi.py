"""OpenAPI document additions shared by both services, and parameter bounds they share."""

from __future__ import annotations

from typing import Annotated, Any

from annotated_types import Ge, Le
from fastapi import FastAPI

from planexec.errors import (
    MalformedRequestError,
    PayloadTooLargeError,
    RateLimitedError,
    RequestValidationFailedError,
    UnsupportedMediaTypeError,
)
from shared_schemas import ProblemDetails

from .problems import problem_responses

PG_INTEGER_MAX = 2**31 - 1
"""Largest value of a Postgres ``integer`` column (int4): plan versions, event ``seq``."""

VersionNumber = Annotated[int, Ge(1), Le(PG_INTEGER_MAX)]
"""A plan version number, 1 to ``PG_INTEGER_MAX`` (the column is a Postgres ``integer``):
as a path, query or body value, a larger one is a 422 ``validation-error`` instead of an
overflow in the database driver."""

_BODY_METHODS = frozenset({"post", "put", "patch"})
_FASTAPI_422_REF = "#/components/schemas/HTTPValidationError"


def _refers_to(node: Any, ref: str) -> bool:
    if isinstance(node, dict):
        return node.get("$ref") == ref or any(_refers_to(v, ref) for v in node.values())
    if isinstance(node, list):
        return any(_refers_to(v, ref) for v in node)
    return False


def document_framework_errors(schema: dict[str, Any]) -> None:
    """Document, on every operation, the problem+json errors the shared plumbing sends.

    * ``422``: FastAPI documents request validation failures as its own ``application/json``
      ``HTTPValidationError``; ``planexec.web.problems`` sends them as problem+json
      ``validation-error``, so that entry is replaced (an operation's own 422 entry stays).
    * ``400`` ``malformed-request`` on operations with a JSON request body (a body that is not
      JSON at all, ``planexec.web.problems``).
    * ``413`` ``payload-too-large`` and ``415`` ``unsupported-media-type`` on every POST, PUT
      and PATCH (``planexec.web.limits.BodyLimitMiddleware`` refuses before any route runs).
    * ``429`` ``rate-limited`` on every operation that takes an API key
      (``planexec.web.ratelimit``: failed authentications per address, requests per tenant).

    Then drops the ``HTTPValidationError`` and ``ValidationError`` components if nothing
    refers to them any more. ``schema`` is changed in place.
    """
    validation = problem_responses(RequestValidationFailedError)[422]
    body_errors = problem_responses(PayloadTooLargeError, UnsupportedMediaTypeError)
    malformed = problem_responses(MalformedRequestError)[400]
    rate_limited = problem_responses(RateLimitedError)[429]
    for operations in schema.get("paths", {}).values():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            if operation.get("security"):
                responses.setdefault("429", rate_limited)
            if _refers_to(responses.get("422"), _FASTAPI_422_REF):
                responses["422"] = validation
            if method not in _BODY_METHODS:
                continue
            for status, entry in body_errors.items():
                responses.setdefault(str(status), entry)
            if "application/json" in operation.get("requestBody", {}).get("content", {}):
                responses.setdefault("400", malformed)
    components = schema.get("components", {}).get("schemas", {})
    paths = schema.get("paths", {})
    if not _refers_to(paths, _FASTAPI_422_REF):
        components.pop("HTTPValidationError", None)
    others = [s for name, s in components.items() if name != "ValidationError"]
    if not _refers_to([paths, others], "#/components/schemas/ValidationError"):
        components.pop("ValidationError", None)


def document_problem_schema(app: FastAPI) -> None:
    """Add ``ProblemDetails`` to ``app``'s OpenAPI components and the shared error entries.

    Error responses reference ``#/components/schemas/ProblemDetails``; the errors every
    operation can get are added by ``document_framework_errors``.
    """
    original = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = original()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["ProblemDetails"] = ProblemDetails.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            document_framework_errors(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
