"""Content hashing and signing of plans and catalogs.

``content_hash`` is the SHA-256 of the RFC 8785 (JSON Canonicalization Scheme) serialisation of
the plan body; the body is the plan without ``content_hash`` and ``signature``. The signature
is HMAC-SHA256 (RFC 2104) over the ASCII ``content_hash`` string.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any

import rfc8785

from .plan import Plan

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .tool import ToolSpec

_SIGNED_FIELDS = frozenset({"content_hash", "signature"})


class CanonicalJSONError(ValueError):
    """A value cannot be canonicalised under RFC 8785.

    Raised for numbers outside the I-JSON domain (RFC 7493 §2.2: integers beyond
    ±(2**53 - 1), NaN, infinities) and for non-string keys; such values are refused,
    never rounded.
    """


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` as RFC 8785 canonical JSON (UTF-8 bytes).

    Raises:
        CanonicalJSONError: when a number is outside the I-JSON domain or a value is not JSON.

    """
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise CanonicalJSONError(f"not canonicalisable under RFC 8785: {exc}") from exc


def sha256_digest(value: Any) -> str:
    """Return ``sha256:<hex>`` of the canonical JSON of ``value``."""
    return "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()


def plan_body(plan: Plan) -> dict[str, Any]:
    """Return the signed body of ``plan``: its JSON form without hash and signature."""
    return plan.model_dump(mode="json", exclude=set(_SIGNED_FIELDS))


def content_hash(plan: Plan) -> str:
    """Return ``sha256:<hex>`` of the RFC 8785 canonical JSON of the plan body.

    Raises:
        CanonicalJSONError: when the plan holds a number outside the I-JSON domain.

    """
    return sha256_digest(plan_body(plan))


def sign(digest: str, key: bytes) -> str:
    """Return ``hmac-sha256:<hex>`` of ``digest`` (an ASCII string) under ``key``."""
    return "hmac-sha256:" + hmac.new(key, digest.encode("ascii"), hashlib.sha256).hexdigest()


def seal(plan: Plan, key: bytes) -> Plan:
    """Return a copy of ``plan`` with ``content_hash`` and ``signature`` set."""
    digest = content_hash(plan)
    return plan.model_copy(update={"content_hash": digest, "signature": sign(digest, key)})


def verify(plan: Plan, key: bytes) -> bool:
    """True when the plan's hash matches its body and its signature matches the hash.

    Comparisons are constant-time (``hmac.compare_digest``).
    """
    if plan.content_hash is None or plan.signature is None:
        return False
    try:
        digest = content_hash(plan)
    except CanonicalJSONError:
        return False
    return hmac.compare_digest(digest, plan.content_hash) and hmac.compare_digest(
        sign(digest, key), plan.signature
    )


def catalog_version(tools: Iterable[ToolSpec]) -> str:
    """Return the catalog version: ``sha256:<hex>`` of the tools sorted by name."""
    ordered = sorted(tools, key=lambda t: (t.name, t.version))
    return sha256_digest([t.model_dump(mode="json") for t in ordered])
