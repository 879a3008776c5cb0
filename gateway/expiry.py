"""Password expiry (pure): maximum age, warning window, must-change, exemption, expire-now.

States of a password at ``now``:
    valid      – no expiry, or more than ``warn_days`` left
    warning    – expires within ``warn_days``
    expired    – ``expires_at`` passed, an admin expired it, or a temporary password ran out
A must-change password is usable only to set a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from gateway.orgpolicy import ExpiryRules


class Status(StrEnum):
    """Where a password stands."""

    VALID = "valid"
    WARNING = "warning"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Verdict:
    """The expiry verdict for one password."""

    status: Status
    expires_at: datetime | None
    days_left: int | None


def expires_at(
    changed_at: datetime, rules: ExpiryRules, *, never_expires: bool, temporary: bool
) -> datetime | None:
    """When a password set at ``changed_at`` expires (None: never)."""
    if temporary:
        return changed_at + timedelta(hours=rules.temporary_hours)
    if never_expires or rules.max_age_days == 0:
        return None
    return changed_at + timedelta(days=rules.max_age_days)


def verdict(expires: datetime | None, rules: ExpiryRules, now: datetime) -> Verdict:
    """Classify a password that expires at ``expires``."""
    if expires is None:
        return Verdict(Status.VALID, None, None)
    if expires <= now:
        return Verdict(Status.EXPIRED, expires, 0)
    left = expires - now
    days = left.days
    if left <= timedelta(days=rules.warn_days):
        return Verdict(Status.WARNING, expires, days)
    return Verdict(Status.VALID, expires, days)
