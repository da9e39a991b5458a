"""API key format, generation and digests.

A key reads ``pxk_<key_id>_<secret>``: ``key_id`` (12 hex characters) is public and locates the
stored row; ``secret`` (32 random bytes, URL-safe base64) is shown once and stored only as its
SHA-256 digest, compared in constant time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

KEY_PREFIX = "pxk"
_KEY_RE = re.compile(r"^pxk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class ParsedKey:
    """The two parts of a presented key."""

    key_id: str
    """Public id of the key (12 hex characters)."""
    secret: str
    """The secret part; never stored or logged."""


@dataclass(frozen=True)
class IssuedKey:
    """A newly generated key: ``token`` is shown once, ``digest`` is stored."""

    key_id: str
    """Public id of the key."""
    token: str
    """The full key to hand to the caller."""
    digest: str
    """Hex SHA-256 of the secret part."""


def digest_secret(secret: str) -> str:
    """Hex SHA-256 of a key's secret part."""
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_key() -> IssuedKey:
    """Generate a new key from the OS CSPRNG (``secrets``)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return IssuedKey(
        key_id=key_id, token=f"{KEY_PREFIX}_{key_id}_{secret}", digest=digest_secret(secret)
    )


def parse_key(token: str) -> ParsedKey | None:
    """Split a presented key into id and secret; None when it is not a planexec key."""
    match = _KEY_RE.fullmatch(token.strip())
    if match is None:
        return None
    return ParsedKey(key_id=match.group(1), secret=match.group(2))
