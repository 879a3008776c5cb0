"""Admin API credentials: API keys for automation and short-lived admin bearer tokens.

Both are shown once and stored only as a SHA-256 hash. The presented value carries a public
id (``gwk_<id>_<secret>`` for keys, ``gwt_<id>_<secret>`` for login tokens): the row is found by
that id and the hash compared in constant time (a dummy hash when no row matches).

A key lives until revoked; every use records its time and client. A login token lives
``SESSION_LIFETIME`` and dies early on logout, or when its admin is disabled, locked, deleted,
demoted, or changes password. Only admin accounts can hold a login token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ForeignKey, Integer, String, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from gateway import audit, lockout
from gateway.audit import Actor
from gateway.clock import Clock, aware
from gateway.errors import Conflict, NotFound, PolicyViolation
from gateway.store.engine import Store
from gateway.store.models import Account, Base
from gateway.views import lock_state

KEY_PREFIX = "gwk_"
TOKEN_PREFIX = "gwt_"
ID_HEX = 12
SESSION_LIFETIME = timedelta(minutes=15)
PURGE_AFTER = timedelta(days=1)  # expired login-token rows are deleted at the next login
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DUMMY_HASH = hashlib.sha256(b"no such credential").hexdigest()


class ApiKey(Base):
    """An API key for automation: only its SHA-256 is stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    key_id: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column()
    created_by: Mapped[str] = mapped_column(String(255))
    last_used_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_used_from: Mapped[str] = mapped_column(String(128), default="")
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class ApiSession(Base):
    """A short-lived bearer token an admin got with password (+ TOTP); hash only."""

    __tablename__ = "api_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    token_id: Mapped[str] = mapped_column(String(16), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column(index=True)
    last_used_at: Mapped[datetime | None] = mapped_column(nullable=True)
    client: Mapped[str] = mapped_column(String(128), default="")
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about an API key (never the key or its hash)."""

    name: str
    key_id: str
    created_at: datetime
    created_by: str
    last_used_at: datetime | None
    last_used_from: str
    revoked_at: datetime | None


@dataclass(frozen=True)
class Principal:
    """Who an authenticated API request acts as."""

    kind: str  # "admin" | "apikey"
    name: str
    credential_id: int
    account_id: int | None = None

    def actor(self, client: str) -> Actor:
        """The audit actor for this principal calling from ``client``."""
        return Actor(f"{self.kind}:{self.name}", via="api", client=client)


@dataclass(frozen=True)
class IssuedToken:
    """A new login token (shown once) and when it stops working."""

    token: str
    expires_at: datetime


def digest(presented: str) -> str:
    """SHA-256 (hex) of a presented credential: the only form stored."""
    return hashlib.sha256(presented.encode()).hexdigest()


def _new(prefix: str) -> tuple[str, str]:
    public = secrets.token_hex(ID_HEX // 2)
    return public, f"{prefix}{public}_{secrets.token_urlsafe(32)}"


def _public_id(presented: str, prefix: str) -> str | None:
    if not presented.startswith(prefix):
        return None
    rest = presented[len(prefix) :]
    if len(rest) < ID_HEX + 2 or rest[ID_HEX] != "_":
        return None
    public = rest[:ID_HEX]
    return public if all(c in "0123456789abcdef" for c in public) else None


def _matches(stored: str | None, presented: str) -> bool:
    return hmac.compare_digest((stored or _DUMMY_HASH).encode(), digest(presented).encode())


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        name=row.name,
        key_id=row.key_id,
        created_at=aware(row.created_at) or row.created_at,
        created_by=row.created_by,
        last_used_at=aware(row.last_used_at),
        last_used_from=row.last_used_from,
        revoked_at=aware(row.revoked_at),
    )


class ApiCredentials:
    """Create, verify and revoke API keys and admin login tokens (one transaction each)."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    # ------------------------------------------------------------ API keys
    def create_key(self, name: str, *, actor: Actor) -> tuple[KeyInfo, str]:
        """Create a key named ``name``; returns its description and the key (shown once)."""
        if not NAME_RE.match(name):
            raise PolicyViolation(
                "name", "A key name is 1-64 letters, digits, '.', '_' or '-', starting alnum."
            )
        now = self.clock.now()
        public, key = _new(KEY_PREFIX)
        try:
            with self.store.write() as s:
                if s.scalars(select(ApiKey).where(ApiKey.name == name)).first() is not None:
                    raise Conflict("an API key with that name exists (names are never reused)")
                row = ApiKey(
                    name=name,
                    key_id=public,
                    key_hash=digest(key),
                    created_at=now,
                    created_by=actor.name,
                    last_used_from="",
                )
                s.add(row)
                audit.record(
                    s, now, actor, "apikey_create", subject=name, details={"key_id": public}
                )
                s.flush()
                info = _info(row)
        except IntegrityError:
            raise Conflict("an API key with that name exists (names are never reused)") from None
        return info, key

    def list_keys(self) -> list[KeyInfo]:
        """Every key, live and revoked, by name."""
        with self.store.read() as s:
            return [_info(r) for r in s.scalars(select(ApiKey).order_by(ApiKey.name))]

    def revoke_key(self, name: str, *, actor: Actor) -> KeyInfo:
        """Revoke the key named ``name`` (revoking twice is harmless)."""
        now = self.clock.now()
        with self.store.write() as s:
            row = s.scalars(select(ApiKey).where(ApiKey.name == name).with_for_update()).first()
            if row is None:
                raise NotFound(f"no API key {name!r}")
            if row.revoked_at is None:
                row.revoked_at = now
                audit.record(
                    s, now, actor, "apikey_revoke", subject=name, details={"key_id": row.key_id}
                )
            return _info(row)

    def verify_key(self, presented: str, client: str) -> Principal | None:
        """The principal for a live key, recording its use; None for anything else."""
        public = _public_id(presented, KEY_PREFIX)
        now = self.clock.now()
        with self.store.write(relaxed=True) as s:
            row = None
            if public is not None:
                row = s.scalars(select(ApiKey).where(ApiKey.key_id == public)).first()
            if not _matches(row.key_hash if row else None, presented) or row is None:
                return None
            if row.revoked_at is not None:
                return None
            row.last_used_at = now
            row.last_used_from = client[:128]
            return Principal("apikey", row.name, row.id)

    # ------------------------------------------------------------ admin login tokens
    def open_session(self, account_id: int, *, client: str, actor: Actor) -> IssuedToken:
        """Issue a login token for an admin who passed password (and TOTP) checks."""
        now = self.clock.now()
        public, token = _new(TOKEN_PREFIX)
        with self.store.write() as s:
            acc = s.get(Account, account_id)
            if acc is None or acc.kind != "admin":
                raise NotFound("no such administrator")
            expires = now + SESSION_LIFETIME
            s.execute(delete(ApiSession).where(ApiSession.expires_at < now - PURGE_AFTER))
            s.add(
                ApiSession(
                    account_id=acc.id,
                    token_id=public,
                    token_hash=digest(token),
                    created_at=now,
                    expires_at=expires,
                    client=client[:128],
                )
            )
            audit.record(
                s,
                now,
                actor,
                "api_login",
                account_id=acc.id,
                subject=acc.username,
                details={"token_id": public},
            )
        return IssuedToken(token, expires)

    def verify_session(self, presented: str, client: str) -> Principal | None:
        """The admin behind a live login token; None when expired, revoked or no longer valid."""
        public = _public_id(presented, TOKEN_PREFIX)
        now = self.clock.now()
        with self.store.write(relaxed=True) as s:
            row = None
            if public is not None:
                row = s.scalars(select(ApiSession).where(ApiSession.token_id == public)).first()
            if not _matches(row.token_hash if row else None, presented) or row is None:
                return None
            acc = s.get(Account, row.account_id)
            if acc is None or not self._session_valid(row, acc, now):
                return None
            row.last_used_at = now
            return Principal("admin", acc.username, row.id, acc.id)

    @staticmethod
    def _session_valid(row: ApiSession, acc: Account, now: datetime) -> bool:
        expires = aware(row.expires_at)
        changed = aware(acc.password_changed_at)
        created = aware(row.created_at)
        return (
            row.revoked_at is None
            and expires is not None
            and expires > now
            and acc.kind == "admin"
            and acc.state == "active"
            and not acc.must_change
            and not lockout.is_locked(lock_state(acc), now)
            and (changed is None or created is None or changed <= created)
        )

    def close_session(self, session_id: int, *, actor: Actor) -> None:
        """Log out: revoke one login token."""
        now = self.clock.now()
        with self.store.write() as s:
            row = s.get(ApiSession, session_id)
            if row is None or row.revoked_at is not None:
                return
            row.revoked_at = now
            audit.record(
                s,
                now,
                actor,
                "api_logout",
                account_id=row.account_id,
                details={"token_id": row.token_id},
            )

    def verify_bearer(self, presented: str, client: str) -> Principal | None:
        """Dispatch a bearer credential by its prefix."""
        if presented.startswith(KEY_PREFIX):
            return self.verify_key(presented, client)
        if presented.startswith(TOKEN_PREFIX):
            return self.verify_session(presented, client)
        _matches(None, presented)  # same work as a miss
        return None
