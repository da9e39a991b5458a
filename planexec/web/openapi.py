"""OpenAPI document additions shared by both services."""

from __future__ import annotations

from fastapi import FastAPI

from shared_schemas import ProblemDetails


def document_problem_schema(app: FastAPI) -> None:
    """Add ``ProblemDetails`` to the components so error responses can reference it."""
    original = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = original()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["ProblemDetails"] = ProblemDetails.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
