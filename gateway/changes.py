"""What the service tells other parts of the core inside each transaction.

Listeners (the propagation outbox, the mail queue) receive every account change in the same
database transaction as the change itself, so state, audit row and follow-up work commit
together or not at all. After the commit, ``after_commit`` callbacks run (to wake dispatchers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from pydantic import SecretStr
from sqlalchemy.orm import Session

from connectors.base import PasswordLimit
from gateway.store.models import Account


class Trigger(StrEnum):
    """Account events that resources act on (their policy names an action for each)."""

    PASSWORD_CHANGE = "password_change"
    EXPIRED = "expired"
    LOCKED = "locked"
    UNLOCKED = "unlocked"
    DISABLED = "disabled"
    ENABLED = "enabled"
    DELETED = "deleted"
    CREATED = "created"
    UPDATED = "updated"  # profile, groups, recovery e-mail or MFA enrolment changed


@dataclass(frozen=True)
class Change:
    """One account change; ``password`` is set only for ``PASSWORD_CHANGE``."""

    trigger: Trigger
    password: SecretStr | None = None
    temporary: bool = False


class ChangeListener(Protocol):
    """Receives changes inside the transaction that makes them."""

    def on_change(self, session: Session, account: Account, change: Change) -> None: ...


class LimitsProvider(Protocol):
    """Tells which target password limits apply to an account (its enabled resources)."""

    def password_limits(self, account: Account) -> Sequence[PasswordLimit]: ...
