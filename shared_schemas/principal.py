"""The authenticated caller of a request (DESIGN §8)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from ._base import ContractModel


class Role(StrEnum):
    """What a principal may do; a principal may hold several roles."""

    SUBMITTER = "submitter"
    """Submits intents and reads its tenant's plans and runs."""
    APPROVER = "approver"
    """Approves or rejects gated steps of its tenant."""
    OPERATOR = "operator"
    """Cancels, retries, forks and resolves runs of its tenant."""
    ADMIN = "admin"
    """Manages keys, catalogs and policies of its tenant."""


class Principal(ContractModel):
    """Who is calling: resolved from an API key (``X-API-Key``)."""

    tenant: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Tenant the principal belongs to; every object it sees carries this tenant."""
    subject: str = Field(min_length=1, max_length=256)
    """Stable id of the person or service behind the key."""
    roles: frozenset[Role] = frozenset()
    """Roles granted to the key."""
    scopes: frozenset[str] = frozenset()
    """Scopes granted to the key, matched against a tool's ``required_scopes``."""

    def has_role(self, role: Role) -> bool:
        """True when the principal holds ``role`` or is an ``admin``."""
        return role in self.roles or Role.ADMIN in self.roles
