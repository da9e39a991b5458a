"""API key format and digests."""

from __future__ import annotations

import hashlib

from planexec.auth import digest_secret, generate_key, parse_key


def test_generated_key_parses_and_digest_matches_secret() -> None:
    issued = generate_key()
    parsed = parse_key(issued.token)
    assert parsed is not None
    assert parsed.key_id == issued.key_id
    assert digest_secret(parsed.secret) == issued.digest
    assert issued.digest == hashlib.sha256(parsed.secret.encode()).hexdigest()
    assert parsed.secret not in issued.digest


def test_keys_are_unique_and_malformed_keys_are_refused() -> None:
    assert generate_key().token != generate_key().token
    for bad in ["", "pxk_", "pxk_zzzzzzzzzzzz_" + "a" * 43, "Bearer abc", "pxk_0123456789ab_short"]:
        assert parse_key(bad) is None
