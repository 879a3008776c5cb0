"""What operators see and do about propagation: status per account and resource, retry, discard.

Every operation writes an audit row (no secret: a row shows only whether a password is pending).
``retry`` makes dead or retrying rows due now; ``discard`` drops what is pending (and wipes the
sealed password) so the row is no longer delivered until the next change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update

from gateway import audit
from gateway.audit import Actor
from gateway.pgnotify import notify
from gateway.propagation_models import DEAD, DUE_STATUSES, PENDING, RETRYING, DesiredRow
from gateway.store.engine import Store
from gateway.store.models import Account

DISCARDED = "discarded"


@dataclass(frozen=True)
class Selection:
    """Which rows an operator command applies to (empty fields: all)."""

    account: str | None = None
    resource: str | None = None


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.replace(tzinfo=value.tzinfo or UTC).isoformat()


def due_count(store: Store, now: datetime, held: Sequence[str] = ()) -> int:
    """How many rows are due for delivery now (leaving out resources ``held`` back)."""
    with store.read() as s:
        stmt = select(func.count(DesiredRow.id)).where(
            DesiredRow.status.in_(DUE_STATUSES), DesiredRow.next_try_at <= now
        )
        if held:
            stmt = stmt.where(DesiredRow.resource.not_in(list(held)))
        return int(s.scalar(stmt) or 0)


def _where(sel: Selection) -> list[Any]:
    conds: list[Any] = []
    if sel.account:
        key = sel.account.casefold()
        conds.append(or_account(key))
    if sel.resource:
        conds.append(DesiredRow.resource == sel.resource)
    return conds


def or_account(key: str) -> Any:
    """Match rows of the account whose username or e-mail is ``key``."""
    ids = select(Account.id).where((Account.username_key == key) | (Account.email_key == key))
    return DesiredRow.account_id.in_(ids)


def status(store: Store, sel: Selection, actor: Actor, now: datetime) -> list[dict[str, Any]]:
    """One dict per (account, resource): state, versions, next try, last error."""
    with store.write() as s:
        rows = s.execute(
            select(DesiredRow, Account.username)
            .join(Account, Account.id == DesiredRow.account_id)
            .where(*_where(sel))
            .order_by(Account.username, DesiredRow.resource)
        ).all()
        audit.record(s, now, actor, "sync_status", subject=sel.account or "", details=_d(sel))
    return [
        {
            "account": username,
            "resource": row.resource,
            "status": row.status,
            "version": row.version,
            "delivered_version": row.delivered_version,
            "attempts": row.attempts,
            "next_try_at": _iso(row.next_try_at) if row.status == RETRYING else None,
            "last_error": row.last_error,
            "password_pending": row.sealed_password is not None,
            "changed_at": _iso(row.changed_at),
            "delivered_at": _iso(row.delivered_at),
            "leased_by": row.lease_owner,
        }
        for row, username in rows
    ]


def _d(sel: Selection) -> dict[str, Any]:
    return {"account": sel.account, "resource": sel.resource}


def _change(
    store: Store, sel: Selection, actor: Actor, now: datetime, action: str, values: dict[str, Any]
) -> int:
    statuses = (DEAD, RETRYING) if action == "sync_retry" else (PENDING, RETRYING, DEAD)
    with store.write() as s:
        targets = s.execute(
            select(DesiredRow.id, DesiredRow.account_id, DesiredRow.resource, Account.username)
            .join(Account, Account.id == DesiredRow.account_id)
            .where(DesiredRow.status.in_(statuses), *_where(sel))
            .with_for_update()
        ).all()
        ids = [t.id for t in targets]
        if ids:
            s.execute(update(DesiredRow).where(DesiredRow.id.in_(ids)).values(**values))
            notify(s)
        for t in targets:
            audit.record(
                s,
                now,
                actor,
                action,
                account_id=t.account_id,
                subject=t.username,
                details={"resource": t.resource},
            )
        if not targets:
            audit.record(s, now, actor, action, subject=sel.account or "", details=_d(sel))
    return len(ids)


def retry(store: Store, sel: Selection, actor: Actor, now: datetime) -> int:
    """Make dead and retrying rows due now (a wiped password is not resent); returns the count."""
    values = {"status": PENDING, "next_try_at": now, "attempts": 0, "last_error": ""}
    return _change(store, sel, actor, now, "sync_retry", values)


def discard(store: Store, sel: Selection, actor: Actor, now: datetime) -> int:
    """Stop delivering what is pending (the sealed password is wiped); returns the count."""
    values = {"status": DISCARDED, "sealed_password": None, "last_error": "discarded by an admin"}
    return _change(store, sel, actor, now, "sync_discard", values)
