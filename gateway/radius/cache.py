"""The optional success cache for re-authentication, and the batched record of cached successes.

Wi-Fi clients re-authenticate often with the same password. With ``success_cache_seconds`` > 0
in the RADIUS policy, a successful PAP login is remembered for that long under
``HMAC-SHA256(per-process random key, resource | username key | password)``; a request with the
same triple is then accepted without an argon2id verify and without touching the database.

Invalidation: any change of the account made through this process (password, lock, expiry,
disable, delete, profile or groups, TOTP enrolment) drops its entries at once (the cache is a
change listener, called inside the transaction). Every second the listener also compares the
cached ``account.version`` with the database and drops entries whose account changed on another
node or enrolled TOTP meanwhile, so such a change takes effect within about a second. An entry
also ends when the password's expiry time passes.

Trade-off (why it is off by default): while an entry lives, this process's memory holds a fast
verifier of the password. The key never leaves the process and is random per start, but anyone
who can read the process memory can test guesses against an entry at HMAC speed rather than at
argon2id speed; and a change made on another node is seen up to a second late. Accounts with
MFA, passwords in grace and must-change passwords are never cached. A cached success does not
reset the failure counter (only a verified one does), so it never weakens the lockout. Cached
successes are written in batches (last login + an audit row with ``cached: true``) instead of
one transaction each.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from gateway.changes import Change
from gateway.service import AuthResult
from gateway.store.engine import Store
from gateway.store.models import Account, AuditEntry, TotpCredential

log = logging.getLogger("gateway.radius")


@dataclass(frozen=True)
class Hit:
    """A remembered success."""

    result: AuthResult
    until: float  # monotonic seconds
    attributes: tuple[tuple[str, Any], ...]


class SuccessCache:
    """HMAC-keyed, TTL-bounded, invalidated by any account change."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._key = os.urandom(32)
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, Hit] = OrderedDict()
        self._by_account: dict[int, set[bytes]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def digest(self, resource: str, user_key: str, password: str) -> bytes:
        """The cache key for this login (never the password itself)."""
        msg = b"\x00".join(p.encode() for p in (resource, user_key, password))
        return hmac.digest(self._key, msg, "sha256")

    def get(self, digest: bytes, now: float) -> Hit | None:
        """A live entry, or None."""
        hit = self._entries.get(digest)
        if hit is None:
            return None
        if hit.until <= now:
            self._drop(digest)
            return None
        return hit

    def put(self, digest: bytes, hit: Hit) -> None:
        """Remember a success."""
        with self._lock:
            while len(self._entries) >= self.max_entries:
                old, old_hit = self._entries.popitem(last=False)
                self._by_account.get(old_hit.result.account_id, set()).discard(old)
            self._entries[digest] = hit
            self._by_account.setdefault(hit.result.account_id, set()).add(digest)

    def _drop(self, digest: bytes) -> None:
        with self._lock:
            hit = self._entries.pop(digest, None)
            if hit is not None:
                self._by_account.get(hit.result.account_id, set()).discard(digest)

    def invalidate(self, account_id: int) -> None:
        """Forget every entry of an account."""
        with self._lock:
            for digest in self._by_account.pop(account_id, set()):
                self._entries.pop(digest, None)

    def versions(self) -> dict[int, int]:
        """The account version each cached account was seen with."""
        out: dict[int, int] = {}
        with self._lock:
            for hit in self._entries.values():
                seen = out.setdefault(hit.result.account_id, hit.result.version)
                if seen != hit.result.version:
                    out[hit.result.account_id] = -1  # mixed versions: check forces a drop
        return out

    def clear(self) -> None:
        """Forget everything (policy reload)."""
        with self._lock:
            self._entries.clear()
            self._by_account.clear()

    def on_change(self, session: Session, account: Account, change: Change) -> None:
        """ChangeListener: any change of an account drops its entries."""
        self.invalidate(account.id)


def stale(store: Store, versions: dict[int, int]) -> list[int]:
    """Accounts whose cached version is out of date, that are gone, or that enrolled TOTP."""
    if not versions:
        return []
    ids = list(versions)
    with store.read() as s:
        now = dict(s.execute(select(Account.id, Account.version).where(Account.id.in_(ids))).all())
        totp = set(
            s.scalars(
                select(TotpCredential.account_id).where(
                    TotpCredential.account_id.in_(ids), TotpCredential.confirmed_at.is_not(None)
                )
            )
        )
    return [i for i, v in versions.items() if now.get(i) != v or i in totp]


@dataclass(frozen=True)
class Success:
    """A cached success still to be written."""

    account_id: int
    subject: str
    at: datetime
    via: str
    client: str


class SuccessLog:
    """Collects cached successes; each flush writes one relaxed transaction.

    The listener flushes every few seconds. Successes of one account from one NAS within a
    flush become one audit row (``cached: true`` with their ``count`` and the ``first`` time;
    the row's time is the last), and the account's last login is set once: a re-authenticating
    Wi-Fi fleet costs a few rows per flush, not one transaction per request.
    """

    def __init__(self, store: Store, max_batch: int = 50_000) -> None:
        self.store = store
        self.max_batch = max_batch
        self._pending: list[Success] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, success: Success) -> None:
        """Queue one success."""
        with self._lock:
            self._pending.append(success)

    def flush(self) -> int:
        """Write the queued successes (last login + aggregated audit rows); returns how many."""
        with self._lock:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        if not batch:
            return 0
        groups: dict[tuple[int, str, str, str], list[Success]] = {}
        for item in batch:
            groups.setdefault((item.account_id, item.subject, item.via, item.client), []).append(
                item
            )
        rows: list[dict[str, Any]] = []
        last: dict[int, datetime] = {}
        for (account_id, subject, via, client), items in groups.items():
            first, latest = min(i.at for i in items), max(i.at for i in items)
            rows.append(
                {
                    "at": latest,
                    "actor": subject,
                    "action": "authenticate",
                    "account_id": account_id,
                    "subject": subject,
                    "outcome": "ok",
                    "reason": "",
                    "via": via,
                    "client": client,
                    "details": {"cached": True, "count": len(items), "first": first.isoformat()},
                }
            )
            last[account_id] = max(latest, last.get(account_id, latest))
        with self.store.write(relaxed=True) as s:  # two executemany statements per flush
            s.execute(insert(AuditEntry), rows)
            s.execute(
                update(Account),
                [{"id": account_id, "last_login_at": at} for account_id, at in last.items()],
            )
        return len(batch)
