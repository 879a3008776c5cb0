"""Access-Challenge State for MFA ``challenge`` mode: bound to one login, used once, expiring.

A State value is 16 random octets. It is bound to the NAS client, the username key and the
account that passed the password step; taking it removes it, whatever the outcome, so a code
can be tried once per password step. Entries expire after ``ttl`` seconds; the table is bounded.
States live in this process only: with several nodes, a NAS must send the answer to the same one.
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Pending:
    """A login waiting for its TOTP code."""

    client: str
    user_key: str
    account_id: int
    expires: float
    context: Any


class ChallengeStore:
    """Issues and takes State values."""

    def __init__(self, ttl: float, max_entries: int = 10000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._pending: OrderedDict[bytes, Pending] = OrderedDict()

    def issue(self, client: str, user_key: str, account_id: int, now: float, context: Any) -> bytes:
        """A fresh State for this login."""
        while len(self._pending) >= self.max_entries:
            self._pending.popitem(last=False)
        state = secrets.token_bytes(16)
        self._pending[state] = Pending(client, user_key, account_id, now + self.ttl, context)
        return state

    def take(self, state: bytes, client: str, user_key: str, now: float) -> Pending | None:
        """The login bound to ``state`` if it matches and is live; the State is spent either way."""
        pending = self._pending.pop(state, None)
        if pending is None or pending.expires <= now:
            return None
        if not (hmac.compare_digest(pending.client, client) and pending.user_key == user_key):
            return None
        return pending
