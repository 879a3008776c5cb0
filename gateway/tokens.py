"""One-time tokens for e-mailed links (pure): 256 random bits, stored only as a hash.

A token is bound to one account and one purpose; lifetimes by purpose are in ``org.toml``
(1 h self-service reset, 24 h admin-initiated reset, 4 h recovery e-mail verification).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from enum import StrEnum

TOKEN_BYTES = 32


class Purpose(StrEnum):
    """What a token may be used for."""

    SELF_RESET = "self_reset"
    ADMIN_RESET = "admin_reset"
    VERIFY_RECOVERY = "verify_recovery"


def new_token() -> str:
    """A new URL-safe token with 256 bits of entropy."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """The only form of a token the database ever holds."""
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two token hashes."""
    return hmac.compare_digest(a.encode(), b.encode())
