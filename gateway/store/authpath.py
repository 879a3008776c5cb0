"""The authentication hot path in SQL Core: one row read and one row write per step.

Every authentication runs two short transactions (reserve the attempt, record the outcome).
The ORM's unit of work costs several times the CPU of the statements themselves, and on a
hash-bound server every millisecond of CPU spent here is taken from argon2, so these steps use
plain statements on the same tables. Rare paths (a lock being taken) still go through the ORM
so that listeners see the change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, bindparam, exists, or_, select
from sqlalchemy.orm import Session

from gateway.audit import Actor
from gateway.clock import aware
from gateway.lockout import LockState
from gateway.store.models import Account, AuditEntry, TotpCredential

ACCOUNTS: Table = Account.__table__  # type: ignore[assignment]
AUDIT: Table = AuditEntry.__table__  # type: ignore[assignment]
TOTP: Table = TotpCredential.__table__  # type: ignore[assignment]

_c = ACCOUNTS.c
_COLUMNS = (
    _c.id,
    _c.kind,
    _c.username,
    _c.username_key,
    _c.state,
    _c.password_hash,
    _c.password_expires_at,
    _c.temporary,
    _c.must_change,
    _c.grace_used,
    _c.version,
    _c.groups,
    _c.failed_count,
    _c.failure_window_start,
    _c.locked_at,
    _c.locked_until,
    _c.lock_reason,
)
_MFA = exists().where(and_(TOTP.c.account_id == _c.id, TOTP.c.confirmed_at.is_not(None)))
# built once: constructing a statement per call costs more CPU than executing it
_FIND = (
    select(*_COLUMNS)
    .where(or_(_c.username_key == bindparam("key"), _c.email_key == bindparam("key")))
    .with_for_update()
)
_GET = (
    select(*_COLUMNS, _MFA.label("mfa"))
    .where(_c.id == bindparam("key"))
    .with_for_update(of=ACCOUNTS)
)
_UPDATE = ACCOUNTS.update().where(_c.id == bindparam("_id"))
_INSERT_AUDIT = AUDIT.insert()


@dataclass(frozen=True)
class AuthRow:
    """The fields of one account that an authentication reads."""

    id: int
    kind: str
    username: str
    username_key: str
    state: str
    password_hash: str | None
    password_expires_at: datetime | None
    temporary: bool
    must_change: bool
    grace_used: int
    version: int
    groups: tuple[str, ...]
    lock: LockState
    mfa_enrolled: bool = False


def _row(values: Any, mfa: bool = False) -> AuthRow:
    return AuthRow(
        id=values.id,
        kind=values.kind,
        username=values.username,
        username_key=values.username_key,
        state=values.state,
        password_hash=values.password_hash,
        password_expires_at=aware(values.password_expires_at),
        temporary=bool(values.temporary),
        must_change=bool(values.must_change),
        grace_used=values.grace_used,
        version=values.version,
        groups=tuple(values.groups or ()),
        lock=LockState(
            failures=values.failed_count,
            window_start=aware(values.failure_window_start),
            locked_at=aware(values.locked_at),
            locked_until=aware(values.locked_until),
            reason=values.lock_reason,
        ),
        mfa_enrolled=mfa,
    )


def find(session: Session, key: str) -> AuthRow | None:
    """The account whose username or e-mail key is ``key``, row-locked for the transaction."""
    found = session.connection().execute(_FIND, {"key": key}).first()
    return None if found is None else _row(found)


def get(session: Session, account_id: int) -> AuthRow | None:
    """One account by id, row-locked, with whether a confirmed TOTP credential exists."""
    found = session.connection().execute(_GET, {"key": account_id}).first()
    return None if found is None else _row(found, bool(found.mfa))


def update(session: Session, account_id: int, lock: LockState | None, **values: Any) -> None:
    """Write the lock state (when given) and ``values`` onto one account."""
    if lock is not None:
        values.update(
            failed_count=lock.failures,
            failure_window_start=lock.window_start,
            locked_at=lock.locked_at,
            locked_until=lock.locked_until,
            lock_reason=lock.reason,
        )
    if values:
        session.connection().execute(_UPDATE, {"_id": account_id, **values})


def audit(
    session: Session,
    now: datetime,
    actor: Actor,
    action: str,
    *,
    account_id: int,
    subject: str,
    outcome: str = "ok",
    reason: str = "",
    details: dict[str, Any] | None = None,
) -> None:
    """Insert one audit row (the same row ``gateway.audit.record`` writes)."""
    session.connection().execute(
        _INSERT_AUDIT,
        {
            "at": now,
            "actor": actor.name,
            "action": action,
            "account_id": account_id,
            "subject": subject,
            "outcome": outcome,
            "reason": reason,
            "via": actor.via,
            "client": actor.client,
            "details": details or {},
        },
    )
