"""RFC 9457 problem details, the body of every error response."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ProblemDetails(BaseModel):
    """An ``application/problem+json`` body (RFC 9457 §3) with planexec extension members."""

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)

    type: str = "about:blank"
    """URI that identifies the problem type; stable, listed in the README."""
    title: str
    """Short summary of the problem type; the same for every occurrence."""
    status: int = Field(ge=400, le=599)
    """HTTP status code of this occurrence."""
    detail: str | None = None
    """Explanation specific to this occurrence."""
    instance: str | None = None
    """URI reference of this occurrence (the request path)."""
    code: str
    """Stable machine-readable error code (the last segment of ``type``)."""
    retryable: bool = False
    """True when the same request may succeed if retried later."""
    errors: list[dict[str, Any]] | None = None
    """Itemised problems (e.g. each invalid field), when there are several."""
