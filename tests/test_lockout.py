"""Lockout state machine with a frozen clock: threshold, window, duration, admin-only, races."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway import lockout
from gateway.lockout import OPEN, LockState
from gateway.orgpolicy import LockoutRules

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RULES = LockoutRules(threshold=5, window_minutes=15, duration_minutes=30)
ADMIN_ONLY = LockoutRules(threshold=3, window_minutes=15, duration_minutes=0)


def wrong(state: LockState, rules: LockoutRules, now: datetime) -> tuple[LockState, bool]:
    state, may = lockout.reserve(state, rules, now)
    return (lockout.fail(state, rules, now) if may else state), may


def test_locks_on_threshold_with_duration() -> None:
    state = OPEN
    for i in range(4):
        state, may = wrong(state, RULES, T0 + timedelta(seconds=i))
        assert may and not lockout.is_locked(state, T0)
    assert state.failures == 4
    state, may = wrong(state, RULES, T0 + timedelta(seconds=10))
    assert may and state.failures == 5
    now = T0 + timedelta(seconds=10)
    assert lockout.is_locked(state, now)
    assert state.locked_until == now + timedelta(minutes=30)
    assert state.reason == "failures"


def test_locked_attempts_are_counted_but_never_evaluated() -> None:
    state = OPEN
    for _ in range(5):
        state, _ = wrong(state, RULES, T0)
    for n in range(6, 20):
        state, may = lockout.reserve(state, RULES, T0 + timedelta(minutes=1))
        assert not may and state.failures == n
    # a right password completing now is refused
    assert lockout.succeed(state, T0 + timedelta(minutes=1)) is None


def test_auto_unlock_after_duration_and_fresh_count() -> None:
    state = OPEN
    for _ in range(5):
        state, _ = wrong(state, RULES, T0)
    assert lockout.is_locked(state, T0 + timedelta(minutes=29, seconds=59))
    assert not lockout.lock_expired(state, T0 + timedelta(minutes=29, seconds=59))
    due = T0 + timedelta(minutes=30)
    assert not lockout.is_locked(state, due) and lockout.lock_expired(state, due)
    state, may = lockout.reserve(state, RULES, due)
    assert may and state.failures == 1 and state.locked_at is None


def test_admin_only_lock_never_expires() -> None:
    state = OPEN
    for _ in range(3):
        state, _ = wrong(state, ADMIN_ONLY, T0)
    assert state.locked_until is None
    far = T0 + timedelta(days=3650)
    assert lockout.is_locked(state, far) and not lockout.lock_expired(state, far)
    state, may = lockout.reserve(state, ADMIN_ONLY, far)
    assert not may
    assert lockout.unlock() == OPEN


def test_counting_window_starts_a_new_count() -> None:
    state = OPEN
    for _ in range(4):
        state, _ = wrong(state, RULES, T0)
    # the window started at T0; failures older than 15 minutes are forgotten
    state, may = wrong(state, RULES, T0 + timedelta(minutes=15))
    assert may and state.failures == 1 and not lockout.is_locked(state, T0 + timedelta(minutes=15))
    # just inside the window the fifth failure locks
    state = OPEN
    for _ in range(4):
        state, _ = wrong(state, RULES, T0)
    state, _ = wrong(state, RULES, T0 + timedelta(minutes=14, seconds=59))
    assert lockout.is_locked(state, T0 + timedelta(minutes=15))


def test_success_clears_count() -> None:
    state = OPEN
    for _ in range(4):
        state, _ = wrong(state, RULES, T0)
    state, may = lockout.reserve(state, RULES, T0)
    assert may
    assert lockout.succeed(state, T0) == OPEN


def test_parallel_reservations_evaluate_at_most_threshold() -> None:
    state, allowed = OPEN, 0
    for _ in range(50):  # 50 attempts reserved before any finishes
        state, may = lockout.reserve(state, RULES, T0)
        allowed += may
    assert allowed == RULES.threshold
    assert state.failures == 50
    assert lockout.is_locked(state, T0) and state.reason == "failures"
    # the in-flight evaluations now complete: wrong ones keep the lock, a right one is refused
    assert lockout.fail(state, RULES, T0) == state
    assert lockout.succeed(state, T0) is None


def test_admin_lock_and_mfa_lock() -> None:
    state = lockout.admin_lock(OPEN, T0)
    assert lockout.is_locked(state, T0 + timedelta(days=999)) and state.reason == "admin"
    timed = lockout.admin_lock(OPEN, T0, until=T0 + timedelta(hours=1))
    assert lockout.lock_expired(timed, T0 + timedelta(hours=1))
    mfa = lockout.mfa_lock(OPEN, RULES, T0)
    assert mfa.reason == "mfa" and mfa.locked_until == T0 + timedelta(minutes=30)


def test_threshold_one() -> None:
    rules = LockoutRules(threshold=1, window_minutes=1, duration_minutes=1)
    state, may = wrong(OPEN, rules, T0)
    assert may and lockout.is_locked(state, T0)
