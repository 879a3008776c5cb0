"""Token helpers: entropy, hash-only storage form, constant-time comparison."""

from __future__ import annotations

import base64
import hashlib

from gateway import tokens


def test_new_tokens_have_256_bits_and_differ() -> None:
    seen = {tokens.new_token() for _ in range(200)}
    assert len(seen) == 200
    for token in list(seen)[:10]:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        assert len(raw) == 32


def test_hash_is_sha256_hex_and_not_the_token() -> None:
    token = tokens.new_token()
    digest = tokens.token_hash(token)
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert token not in digest and len(digest) == 64
    assert tokens.same(digest, tokens.token_hash(token))
    assert not tokens.same(digest, tokens.token_hash(token + "x"))


def test_purposes() -> None:
    assert {p.value for p in tokens.Purpose} == {"self_reset", "admin_reset", "verify_recovery"}
