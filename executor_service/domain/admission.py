"""Admission: the checks a plan passes before a run is created for it (DESIGN §2, §5)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shared_schemas import Plan, content_hash, verify
from shared_schemas.canonical import CanonicalJSONError


@dataclass(frozen=True)
class Refusal:
    """Why a plan may not run."""

    code: str
    """``bad_hash``, ``bad_signature``, ``unknown_schema``, ``unknown_catalog``, ``not_ready``."""
    message: str


def admit(
    plan: Plan,
    *,
    status: str,
    signing_key: bytes,
    accepted_schema_ids: Iterable[str],
    catalog_version: str,
) -> Refusal | None:
    """None when the plan may run; the first reason it may not otherwise.

    Checks, in order: the plan is ``ready``; its schema id is one this executor speaks; its
    ``content_hash`` is the SHA-256 of its RFC 8785 canonical body; its HMAC-SHA256
    signature verifies under the shared signing key; it was planned against the catalog
    this executor serves now (a plan for a catalog it no longer has is refused).
    """
    if status != "ready":
        return Refusal("not_ready", f"plan status is {status!r}; only ready plans run")
    if plan.schema_version not in set(accepted_schema_ids):
        return Refusal("unknown_schema", f"schema id {plan.schema_version!r} is not accepted")
    try:
        digest = content_hash(plan)
    except CanonicalJSONError as exc:
        return Refusal("bad_hash", f"plan body is not canonicalisable: {exc}")
    if plan.content_hash != digest:
        return Refusal("bad_hash", "content_hash does not match the plan body")
    if not verify(plan, signing_key):
        return Refusal("bad_signature", "the plan signature does not verify")
    if plan.catalog_version != catalog_version:
        return Refusal(
            "unknown_catalog",
            f"planned against catalog {plan.catalog_version}, executor serves {catalog_version}",
        )
    return None
