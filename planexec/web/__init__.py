"""HTTP plumbing shared by both services: problem+json errors, body limits, authentication."""

from .auth import DISPATCH_SCOPE, PrincipalDep, require_role, require_scope
from .limits import BodyLimitMiddleware
from .problems import PROBLEM_JSON, install_problem_handlers, problem_response, problem_responses

__all__ = [
    "DISPATCH_SCOPE",
    "PROBLEM_JSON",
    "BodyLimitMiddleware",
    "PrincipalDep",
    "install_problem_handlers",
    "problem_response",
    "problem_responses",
    "require_role",
    "require_scope",
]
