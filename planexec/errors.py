"""The planexec error hierarchy; every error renders as RFC 9457 problem+json.

Each class has a stable ``code`` (the last segment of its problem ``type`` URI), an HTTP
``status``, a ``retryable`` flag and, as its docstring, the default human-readable message.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

PROBLEM_TYPE_BASE = "https://planexec.dev/problems/"
"""Prefix of every problem ``type`` URI; the README lists the types."""


class PlanexecError(Exception):
    """An unexpected error occurred."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: list[dict[str, Any]] | None = None,
        **extensions: Any,
    ) -> None:
        self.detail = detail or self.default_message()
        self.errors = errors
        self.extensions = extensions
        super().__init__(self.detail)

    @classmethod
    def default_message(cls) -> str:
        """The class docstring, the default detail."""
        return inspect.cleandoc(cls.__doc__ or cls.title)

    @classmethod
    def type_uri(cls) -> str:
        """The stable problem ``type`` URI of this error."""
        return PROBLEM_TYPE_BASE + cls.code


class MalformedRequestError(PlanexecError):
    """The request body is not valid JSON."""

    code = "malformed-request"
    status = 400
    title = "Malformed request"


class RequestValidationFailedError(PlanexecError):
    """The request does not match the documented schema; see ``errors``."""

    code = "validation-error"
    status = 422
    title = "Request validation failed"


class UnsupportedMediaTypeError(PlanexecError):
    """The request body must be sent as application/json."""

    code = "unsupported-media-type"
    status = 415
    title = "Unsupported media type"


class PayloadTooLargeError(PlanexecError):
    """The request body is larger than the configured limit."""

    code = "payload-too-large"
    status = 413
    title = "Payload too large"


class LimitExceededError(PlanexecError):
    """A named limit (size, depth, count) was exceeded; ``limit`` names it."""

    code = "limit-exceeded"
    status = 422
    title = "Limit exceeded"


class AuthenticationRequiredError(PlanexecError):
    """A valid API key is required in the X-API-Key header."""

    code = "unauthenticated"
    status = 401
    title = "Authentication required"


class ForbiddenError(PlanexecError):
    """The principal's roles do not allow this operation."""

    code = "forbidden"
    status = 403
    title = "Forbidden"


class NotFoundError(PlanexecError):
    """The resource does not exist or belongs to another tenant."""

    code = "not-found"
    status = 404
    title = "Not found"


class MethodNotAllowedError(PlanexecError):
    """The HTTP method is not allowed on this resource."""

    code = "method-not-allowed"
    status = 405
    title = "Method not allowed"


class ConflictError(PlanexecError):
    """The request conflicts with the current state of the resource."""

    code = "conflict"
    status = 409
    title = "Conflict"


class IdempotencyKeyReusedError(ConflictError):
    """The Idempotency-Key was already used with a different request body."""

    code = "idempotency-key-reused"
    title = "Idempotency key reused"


class PlanRefusedError(PlanexecError):
    """The plan may not run here (hash, signature, schema id, catalog or status); see ``reason``."""

    code = "plan-refused"
    status = 422
    title = "Plan refused"


class RateLimitedError(PlanexecError):
    """Too many requests; retry after ``retry_after_s`` seconds (also the Retry-After header).

    ``limit`` names the setting that was hit (``auth_failure_limit``, ``tenant_rate_limit``),
    ``limit_value`` its value and ``window_s`` its window in seconds.
    """

    code = "rate-limited"
    status = 429
    retryable = True
    title = "Too many requests"


class ServiceUnavailableError(PlanexecError):
    """A dependency (database, model server, peer service) is unavailable; retry later."""

    code = "service-unavailable"
    status = 503
    retryable = True
    title = "Service unavailable"


ERROR_TYPES: tuple[type[PlanexecError], ...] = (
    MalformedRequestError,
    RequestValidationFailedError,
    UnsupportedMediaTypeError,
    PayloadTooLargeError,
    LimitExceededError,
    AuthenticationRequiredError,
    ForbiddenError,
    NotFoundError,
    MethodNotAllowedError,
    ConflictError,
    IdempotencyKeyReusedError,
    PlanRefusedError,
    RateLimitedError,
    ServiceUnavailableError,
    PlanexecError,
)
"""Every problem type planexec emits; a test keeps the README's list in step with it."""
