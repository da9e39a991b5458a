"""HTTP plumbing shared by both services: problem+json errors, body limits, authentication."""

from .auth import PrincipalDep, require_role
from .limits import BodyLimitMiddleware
from .problems import PROBLEM_JSON, install_problem_handlers, problem_response, problem_responses

__all__ = [
    "PROBLEM_JSON",
    "BodyLimitMiddleware",
    "PrincipalDep",
    "install_problem_handlers",
    "problem_response",
    "problem_responses",
    "require_role",
]
