"""Expiry rules with a frozen clock: maximum age, warning window, exemption, temporary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway import expiry
from gateway.expiry import Status
from gateway.orgpolicy import ExpiryRules

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RULES = ExpiryRules(max_age_days=90, warn_days=14, temporary_hours=72)


def test_maximum_age() -> None:
    assert expiry.expires_at(T0, RULES, never_expires=False, temporary=False) == T0 + timedelta(
        days=90
    )


def test_never_expires_exemption_and_zero_age() -> None:
    assert expiry.expires_at(T0, RULES, never_expires=True, temporary=False) is None
    none = ExpiryRules(max_age_days=0)
    assert expiry.expires_at(T0, none, never_expires=False, temporary=False) is None
    assert expiry.verdict(None, RULES, T0).status is Status.VALID


def test_temporary_expires_after_hours_even_when_exempt() -> None:
    for never in (False, True):
        got = expiry.expires_at(T0, RULES, never_expires=never, temporary=True)
        assert got == T0 + timedelta(hours=72)
    assert expiry.expires_at(T0, ExpiryRules(max_age_days=0), never_expires=False, temporary=True)


def test_warning_window_boundaries() -> None:
    exp = T0 + timedelta(days=90)
    v = expiry.verdict(exp, RULES, exp - timedelta(days=14, seconds=1))
    assert v.status is Status.VALID and v.days_left == 14
    v = expiry.verdict(exp, RULES, exp - timedelta(days=14))
    assert v.status is Status.WARNING and v.days_left == 14
    v = expiry.verdict(exp, RULES, exp - timedelta(hours=1))
    assert v.status is Status.WARNING and v.days_left == 0
    v = expiry.verdict(exp, RULES, exp)  # expire-now sets expires_at = now
    assert v.status is Status.EXPIRED and v.days_left == 0
    assert expiry.verdict(exp, RULES, exp + timedelta(days=1)).status is Status.EXPIRED


def test_no_warning_window() -> None:
    rules = ExpiryRules(max_age_days=30, warn_days=0)
    exp = T0 + timedelta(days=30)
    assert expiry.verdict(exp, rules, exp - timedelta(seconds=1)).status is Status.VALID
    assert expiry.verdict(exp, rules, exp).status is Status.EXPIRED
