"""Server-side web sessions: only the SHA-256 of the cookie value is stored; CSRF per cookie.

A session belongs to one portal (``user`` or ``admin``) and moves through stages:
``mfa`` (password accepted, TOTP still due) -> ``must_change`` (a new password is due) -> ``ok``.
Each stage change issues a fresh id (no fixation). Sessions end after ``IDLE`` without use or
``ABSOLUTE`` after login, and every session of an account is deleted, in the same transaction,
when its password changes or it is locked, disabled or deleted (``SessionListener``).

The CSRF token of a form is an HMAC of the cookie value it is bound to (the session cookie, or
the anonymous pre-session cookie on login and link pages) under a key derived from the sealing
key file, so every node of a cluster checks it without storing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from gateway.changes import Change, Trigger
from gateway.clock import Clock, aware
from gateway.store.engine import Store
from gateway.store.models import Account, Base

if TYPE_CHECKING:
    from gateway.runtime import Runtime

log = logging.getLogger("gateway.web.sessions")

IDLE = timedelta(minutes=30)
ABSOLUTE = timedelta(hours=12)
PENDING = timedelta(minutes=5)  # a session waiting for a TOTP code
ENDING_TRIGGERS = frozenset(
    {Trigger.PASSWORD_CHANGE, Trigger.LOCKED, Trigger.DISABLED, Trigger.DELETED}
)


class WebSession(Base):
    """One signed-in browser: hashed id, portal, stage and lifetimes."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    portal: Mapped[str] = mapped_column(String(8))  # user | admin
    stage: Mapped[str] = mapped_column(String(16))  # mfa | must_change | ok
    must_change: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)


@dataclass(frozen=True)
class SessionInfo:
    """What a request handler learns about its signed-in browser."""

    raw_id: str
    account_id: int
    portal: str
    stage: str
    must_change: bool


def hash_id(raw: str) -> str:
    """The only form of a session id the database holds."""
    return hashlib.sha256(raw.encode()).hexdigest()


def csrf_key(key_file: Path) -> bytes:
    """A CSRF key derived from the sealing key (never the sealing key itself)."""
    return hmac.new(key_file.read_bytes(), b"gateway web csrf v1", hashlib.sha256).digest()


def csrf_token(key: bytes, cookie_value: str) -> str:
    """The CSRF token bound to one cookie value."""
    return hmac.new(key, b"csrf|" + cookie_value.encode(), hashlib.sha256).hexdigest()


def csrf_ok(key: bytes, cookie_value: str | None, submitted: str | None) -> bool:
    """True when ``submitted`` is the token for ``cookie_value`` (constant time)."""
    if not cookie_value or not submitted:
        return False
    return hmac.compare_digest(csrf_token(key, cookie_value), submitted)


class SessionStore:
    """Creates, reads, advances and ends web sessions on the gateway store."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def create(self, account_id: int, portal: str, stage: str, must_change: bool) -> str:
        """A new session; returns the raw id for the cookie (shown nowhere else)."""
        raw = secrets.token_urlsafe(32)
        now = self.clock.now()
        life = PENDING if stage == "mfa" else IDLE
        with self.store.write() as s:
            s.add(
                WebSession(
                    id_hash=hash_id(raw),
                    account_id=account_id,
                    portal=portal,
                    stage=stage,
                    must_change=must_change,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + life,
                    version=1,
                )
            )
        return raw

    def get(self, raw: str | None, portal: str) -> SessionInfo | None:
        """The live session for ``raw`` in ``portal``; sliding idle expiry, absolute cap."""
        if not raw:
            return None
        now = self.clock.now()
        with self.store.write(relaxed=True) as s:
            row = s.get(WebSession, hash_id(raw), with_for_update=True)
            if row is None or row.portal != portal:
                return None
            expires = aware(row.expires_at)
            created = aware(row.created_at)
            assert expires is not None and created is not None
            if expires <= now or created + ABSOLUTE <= now:
                s.delete(row)
                return None
            if row.stage != "mfa":
                row.last_seen_at = now
                row.expires_at = min(now + IDLE, created + ABSOLUTE)
            return SessionInfo(raw, row.account_id, row.portal, row.stage, row.must_change)

    def advance(self, info: SessionInfo, stage: str) -> str:
        """Move to ``stage`` under a fresh id (the old id stops working)."""
        self.end(info.raw_id)
        return self.create(info.account_id, info.portal, stage, info.must_change)

    def end(self, raw: str | None) -> None:
        """Delete one session (sign-out)."""
        if not raw:
            return
        with self.store.write() as s:
            s.execute(delete(WebSession).where(WebSession.id_hash == hash_id(raw)))

    def count(self, account_id: int) -> int:
        """How many live session rows an account has (admin view and tests)."""
        with self.store.read() as s:
            rows = s.scalars(select(WebSession.id_hash).where(WebSession.account_id == account_id))
            return len(list(rows))

    def purge_expired(self) -> int:
        """Delete expired rows; returns how many."""
        now = self.clock.now()
        with self.store.write() as s:
            result = s.execute(delete(WebSession).where(WebSession.expires_at <= now))
            return int(getattr(result, "rowcount", 0) or 0)


class SessionListener:
    """Ends every web session of an account when its password changes or it is locked."""

    def on_change(self, session: Session, account: Account, change: Change) -> None:
        """Delete the account's session rows inside the change's own transaction."""
        if change.trigger in ENDING_TRIGGERS:
            session.execute(delete(WebSession).where(WebSession.account_id == account.id))


class SessionJanitor:
    """Daemon component: deletes expired session rows every ``every`` seconds."""

    name = "web-sessions"

    def __init__(self, sessions: SessionStore, every: float = 600.0) -> None:
        self.sessions = sessions
        self.every = every
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the purge loop."""
        self._task = asyncio.create_task(self._run(), name="web-session-janitor")

    async def stop(self) -> None:
        """Stop the purge loop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                removed = await asyncio.to_thread(self.sessions.purge_expired)
                if removed:
                    log.info("purged %d expired web sessions", removed)
            except Exception:
                log.exception("purging web sessions failed")
            await asyncio.sleep(self.every)


def janitor(rt: Runtime) -> SessionJanitor:
    """Component factory for ``daemon._register``."""
    return SessionJanitor(SessionStore(rt.store, rt.service.clock))
