"""Failed-attempt lockout as a pure state machine; the current time is always a parameter.

    ┌────────┐ reserve (evaluate)  ┌───────────┐ wrong password, failures >= threshold ┌────────┐
    │ open   │ ──────────────────▶ │ in flight │ ─────────────────────────────────────▶ │ locked │
    │ n < T  │ ◀────────────────── │ n += 1    │                                        │        │
    └────────┘  right password:    └───────────┘   a reservation that finds n >= T      └────────┘
        ▲       n = 0 (unless locked meanwhile)     while unlocked (parallel attempts)       │
        │                                           also locks                               │
        └──────────── admin unlock, successful reset, or ``locked_until`` passed ────────────┘

An attempt is counted *before* the password is verified (a reservation), so parallel attempts
can never evaluate more than ``threshold`` guesses; a correct password that completes after the
account locked is refused. Failures older than the counting window start a new count.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from gateway.orgpolicy import LockoutRules


class LockReason(StrEnum):
    """Why an account is locked."""

    FAILURES = "failures"
    ADMIN = "admin"
    MFA = "mfa"


@dataclass(frozen=True)
class LockState:
    """The lockout fields of one account."""

    failures: int = 0
    window_start: datetime | None = None
    locked_at: datetime | None = None
    locked_until: datetime | None = None
    reason: str | None = None


OPEN = LockState()


def is_locked(state: LockState, now: datetime) -> bool:
    """True while the account is locked at ``now``."""
    if state.locked_at is None:
        return False
    return state.locked_until is None or state.locked_until > now


def lock_expired(state: LockState, now: datetime) -> bool:
    """True when a timed lock has run out and auto-unlock is due."""
    return (
        state.locked_at is not None
        and state.locked_until is not None
        and (state.locked_until <= now)
    )


def _lock(state: LockState, rules: LockoutRules, now: datetime, reason: LockReason) -> LockState:
    until = now + timedelta(minutes=rules.duration_minutes) if rules.duration_minutes else None
    return replace(state, locked_at=now, locked_until=until, reason=reason.value)


def reserve(state: LockState, rules: LockoutRules, now: datetime) -> tuple[LockState, bool]:
    """Count one attempt before it is evaluated; returns (new state, may evaluate)."""
    if lock_expired(state, now):
        state = OPEN
    if is_locked(state, now):
        return replace(state, failures=state.failures + 1), False
    window = timedelta(minutes=rules.window_minutes)
    if state.window_start is None or now - state.window_start >= window:
        state = replace(state, failures=0, window_start=now)
    if state.failures >= rules.threshold:
        # more attempts in flight than the threshold allows: a parallel guessing attack
        locked = _lock(state, rules, now, LockReason.FAILURES)
        return replace(locked, failures=state.failures + 1), False
    return replace(state, failures=state.failures + 1), True


def fail(state: LockState, rules: LockoutRules, now: datetime) -> LockState:
    """A reserved attempt turned out wrong; it is already counted, so only lock if due."""
    if not is_locked(state, now) and state.failures >= rules.threshold:
        return _lock(state, rules, now, LockReason.FAILURES)
    return state


def succeed(state: LockState, now: datetime) -> LockState | None:
    """A reserved attempt was right: clear the count, or None if the account locked meanwhile."""
    if is_locked(state, now):
        return None
    return OPEN


def admin_lock(state: LockState, now: datetime, until: datetime | None = None) -> LockState:
    """An admin locks the account (until ``until``, or until an admin unlocks it)."""
    return replace(state, locked_at=now, locked_until=until, reason=LockReason.ADMIN.value)


def mfa_lock(state: LockState, rules: LockoutRules, now: datetime) -> LockState:
    """Too many wrong TOTP codes lock the account like too many wrong passwords."""
    return _lock(state, rules, now, LockReason.MFA)


def unlock() -> LockState:
    """Admin unlock, successful reset or auto-unlock: no lock and no count."""
    return OPEN
