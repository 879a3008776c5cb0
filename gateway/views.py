"""Read-only snapshots of accounts handed to front-ends (never a hash or a seed)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from gateway import lockout
from gateway.clock import aware
from gateway.store.models import Account


@dataclass(frozen=True)
class AccountView:
    """What front-ends may see of an account."""

    id: int
    kind: str
    username: str
    email: str
    display_name: str
    groups: tuple[str, ...]
    attributes: dict[str, Any]
    state: str
    locked: bool
    locked_until: datetime | None
    lock_reason: str | None
    failed_count: int
    must_change: bool
    temporary: bool
    never_expires: bool
    password_set: bool
    password_changed_at: datetime | None
    password_expires_at: datetime | None
    recovery_email: str | None
    recovery_email_verified_at: datetime | None
    mfa_enrolled: bool
    last_login_at: datetime | None
    version: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with ISO timestamps."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
            elif isinstance(value, tuple):
                out[key] = list(value)
        return out


def lock_state(acc: Account) -> lockout.LockState:
    """The lockout fields of ``acc`` as a pure state."""
    return lockout.LockState(
        failures=acc.failed_count,
        window_start=aware(acc.failure_window_start),
        locked_at=aware(acc.locked_at),
        locked_until=aware(acc.locked_until),
        reason=acc.lock_reason,
    )


def store_lock_state(acc: Account, state: lockout.LockState) -> None:
    """Write a pure lockout state back onto ``acc``."""
    acc.failed_count = state.failures
    acc.failure_window_start = state.window_start
    acc.locked_at = state.locked_at
    acc.locked_until = state.locked_until
    acc.lock_reason = state.reason


def view(acc: Account, now: datetime, mfa_enrolled: bool) -> AccountView:
    """Snapshot ``acc`` at ``now``."""
    state = lock_state(acc)
    return AccountView(
        id=acc.id,
        kind=acc.kind,
        username=acc.username,
        email=acc.email,
        display_name=acc.display_name,
        groups=tuple(acc.groups or ()),
        attributes=dict(acc.attributes or {}),
        state=acc.state,
        locked=lockout.is_locked(state, now),
        locked_until=state.locked_until,
        lock_reason=state.reason if lockout.is_locked(state, now) else None,
        failed_count=acc.failed_count,
        must_change=acc.must_change,
        temporary=acc.temporary,
        never_expires=acc.never_expires,
        password_set=acc.password_hash is not None,
        password_changed_at=aware(acc.password_changed_at),
        password_expires_at=aware(acc.password_expires_at),
        recovery_email=acc.recovery_email,
        recovery_email_verified_at=aware(acc.recovery_email_verified_at),
        mfa_enrolled=mfa_enrolled,
        last_login_at=aware(acc.last_login_at),
        version=acc.version,
    )
