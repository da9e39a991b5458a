"""API-key authentication: keys map to a ``Principal`` (DESIGN §8)."""

from .keys import KEY_PREFIX, IssuedKey, ParsedKey, digest_secret, generate_key, parse_key
from .store import ApiKeyStore

__all__ = [
    "KEY_PREFIX",
    "ApiKeyStore",
    "IssuedKey",
    "ParsedKey",
    "digest_secret",
    "generate_key",
    "parse_key",
]
