"""Audit rows: written in the same transaction as the change they describe; never a secret."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.store.models import AuditEntry


@dataclass(frozen=True)
class Actor:
    """Who performs an operation, through which front-end, from where."""

    name: str
    via: str = "cli"
    client: str = ""


SYSTEM = Actor("system", via="scheduler")


def record(
    session: Session,
    now: datetime,
    actor: Actor,
    action: str,
    *,
    account_id: int | None = None,
    subject: str = "",
    outcome: str = "ok",
    reason: str = "",
    details: dict[str, Any] | None = None,
) -> None:
    """Add one audit row to ``session``."""
    session.add(
        AuditEntry(
            at=now,
            actor=actor.name,
            action=action,
            account_id=account_id,
            subject=subject,
            outcome=outcome,
            reason=reason,
            via=actor.via,
            client=actor.client,
            details=details or {},
        )
    )


def query(session: Session, *, account_id: int | None = None, limit: int = 100) -> list[AuditEntry]:
    """The newest audit rows, optionally for one account."""
    stmt = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if account_id is not None:
        stmt = stmt.where(AuditEntry.account_id == account_id)
    return list(session.scalars(stmt))
