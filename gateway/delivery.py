"""Database side of delivery: lease due rows, complete them with compare-and-set, wipe old secrets.

Claiming takes ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (several nodes); on SQLite the write
transaction is ``BEGIN IMMEDIATE`` and there is one node. A lease expires at ``lease_until``, so
rows held by a node that died are claimed again. Completion marks a version delivered only if
the row still has that version; a newer change keeps the row pending. Leases and completions are
*relaxed* writes (no wait for the disk): losing one in a crash only means a row is delivered
again, which every connector tolerates (delivery is at least once).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from connectors.base import Identity
from gateway.desired import AccountState
from gateway.propagation_models import DEAD, DELIVERED, DUE_STATUSES, RETRYING, DesiredRow
from gateway.store.engine import Store
from gateway.store.models import Account


@dataclass(frozen=True)
class Job:
    """One leased row, with everything needed to deliver it (the password still sealed)."""

    row_id: int
    account_id: int
    resource: str
    version: int
    state: AccountState
    owned: frozenset[str]
    target_key: str | None
    sealed_password: bytes | None
    identity: Identity
    attempts: int = 0

    def __repr__(self) -> str:
        return f"Job(row={self.row_id}, resource={self.resource!r}, version={self.version})"


@dataclass(frozen=True)
class Outcome:
    """How one delivery ended: ``done``, ``retry`` (after ``delay`` s) or ``dead``; ``pause``
    (with ``retry``) holds the whole resource back."""

    kind: str
    owned: frozenset[str] = frozenset()
    target_key: str | None = None
    reason: str = ""
    delay: float = 0.0
    relink: bool = False
    pause: bool = False  # the resource itself is misconfigured: hold it back


def _job(row: DesiredRow, acc: Account) -> Job:
    state = AccountState(
        locked=row.locked,
        expired=row.expired,
        account_disabled=row.account_disabled,
        password_pending=row.sealed_password is not None,
        temporary=row.temporary,
    )
    identity = Identity(
        username=acc.username,
        email=acc.email,
        groups=tuple(acc.groups or ()),
        attributes={k: str(v) for k, v in (acc.attributes or {}).items()},
    )
    return Job(
        row_id=row.id,
        account_id=row.account_id,
        resource=row.resource,
        version=row.version,
        state=state,
        owned=frozenset(row.owned or ()),
        target_key=row.target_key,
        sealed_password=row.sealed_password,
        identity=identity,
        attempts=row.attempts,
    )


def claim(
    store: Store, owner: str, quotas: Mapping[str, int], now: datetime, lease: timedelta
) -> list[Job]:
    """Lease up to ``quotas[resource]`` due rows of each resource for ``owner``."""
    jobs: list[Job] = []
    with store.write(relaxed=True) as s:
        for resource, wanted in quotas.items():
            if wanted <= 0:
                continue
            stmt = (
                select(DesiredRow.id)
                .where(
                    DesiredRow.resource == resource,
                    DesiredRow.status.in_(DUE_STATUSES),
                    DesiredRow.next_try_at <= now,
                    or_(DesiredRow.lease_until.is_(None), DesiredRow.lease_until < now),
                )
                .order_by(DesiredRow.next_try_at, DesiredRow.id)
                .limit(wanted)
            )
            if not store.is_sqlite:
                stmt = stmt.with_for_update(skip_locked=True)
            ids = list(s.scalars(stmt))
            if not ids:
                continue
            s.execute(
                update(DesiredRow)
                .where(DesiredRow.id.in_(ids))
                .values(lease_owner=owner, lease_until=now + lease)
                .execution_options(synchronize_session=False)
            )
            rows = s.execute(
                select(DesiredRow, Account)
                .join(Account, Account.id == DesiredRow.account_id)
                .where(DesiredRow.id.in_(ids))
                .order_by(DesiredRow.next_try_at, DesiredRow.id)
            ).all()
            jobs.extend(_job(row, acc) for row, acc in rows)
    return jobs


def _release(owner: str) -> Any:
    return case((DesiredRow.lease_owner == owner, None), else_=DesiredRow.lease_owner)


def _changed(result: Any) -> bool:
    return isinstance(result, CursorResult) and result.rowcount > 0


def _complete_one(s: Session, owner: str, job: Job, outcome: Outcome, now: datetime) -> None:
    by_id = DesiredRow.id == job.row_id
    same = DesiredRow.version == job.version
    released = {"lease_owner": _release(owner), "lease_until": None}
    wipe = DesiredRow.password_version <= job.version
    if outcome.kind == "done":
        target = {"owned": sorted(outcome.owned), "target_key": outcome.target_key}
        stmt = update(DesiredRow).where(by_id, same)
        delivered: dict[str, Any] = {
            **released,
            **target,
            "status": DELIVERED,
            "delivered_version": job.version,
            "delivered_at": now,
            "sealed_password": None,
            "attempts": 0,
            "last_error": "",
            "deliveries": DesiredRow.deliveries + 1,
        }
        if not _changed(s.execute(stmt.values(**delivered))):
            # A newer change arrived meanwhile: keep it pending; the password just delivered
            # (if that is the one pending) is no longer needed.
            s.execute(
                update(DesiredRow)
                .where(by_id)
                .values(**released, **target, deliveries=DesiredRow.deliveries + 1)
            )
            s.execute(update(DesiredRow).where(by_id, wipe).values(sealed_password=None))
        return
    if outcome.kind == "retry":
        s.execute(
            update(DesiredRow)
            .where(by_id, same)
            .values(
                **released,
                status=RETRYING,
                attempts=DesiredRow.attempts + 1,
                next_try_at=now + timedelta(seconds=outcome.delay),
                last_error=outcome.reason,
            )
        )
    else:
        values: dict[str, Any] = {
            **released,
            "status": DEAD,
            "last_error": outcome.reason,
            "sealed_password": None,
            "attempts": DesiredRow.attempts + 1,
        }
        if outcome.relink:
            values["target_key"] = None
        s.execute(update(DesiredRow).where(by_id, same).values(**values))
        s.execute(update(DesiredRow).where(by_id, wipe).values(sealed_password=None))
    s.execute(update(DesiredRow).where(by_id).values(**released))


def complete(
    store: Store, owner: str, results: Sequence[tuple[Job, Outcome]], now: datetime
) -> None:
    """Record a batch of outcomes in one transaction (compare-and-set on each row's version)."""
    table = cast(Table, DesiredRow.__table__)
    with store.write(relaxed=True) as s:
        if store.is_sqlite:  # wiped sealed passwords are overwritten, not just unlinked
            s.connection().exec_driver_sql("PRAGMA secure_delete=ON")
        stmt = select(table.c.id, table.c.version).where(
            table.c.id.in_([job.row_id for job, _ in results])
        )
        if not store.is_sqlite:
            stmt = stmt.with_for_update()
        versions = {row.id: row.version for row in s.execute(stmt)}
        plain: list[dict[str, Any]] = []
        for job, outcome in results:
            if job.row_id not in versions:
                continue  # the account was deleted meanwhile
            if outcome.kind == "done" and versions[job.row_id] == job.version:
                plain.append(
                    {
                        "rid": job.row_id,
                        "ver": job.version,
                        "own": sorted(outcome.owned),
                        "key": outcome.target_key,
                    }
                )
            else:
                _complete_one(s, owner, job, outcome, now)
        if plain:  # the common case, one executemany: delivered, nothing changed meanwhile
            s.execute(
                update(table)
                .where(table.c.id == bindparam("rid"), table.c.version == bindparam("ver"))
                .values(
                    status=DELIVERED,
                    delivered_version=bindparam("ver"),
                    delivered_at=now,
                    sealed_password=None,
                    attempts=0,
                    last_error="",
                    deliveries=table.c.deliveries + 1,
                    owned=bindparam("own"),
                    target_key=bindparam("key"),
                    lease_owner=case(
                        (table.c.lease_owner == owner, None), else_=table.c.lease_owner
                    ),
                    lease_until=None,
                ),
                plain,
            )


def checkpoint(store: Store) -> None:
    """SQLite: fold the WAL into the database and truncate it, so no wiped page survives there."""
    if not store.is_sqlite:
        return
    raw = store.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cur.close()
    finally:
        raw.close()


def wipe_stale(store: Store, now: datetime, max_age: timedelta) -> int:
    """Wipe pending passwords older than ``max_age``; such rows become dead with the reason."""
    limit = now - max_age
    hours = int(max_age.total_seconds() // 3600)
    with store.write() as s:
        result = s.execute(
            update(DesiredRow)
            .where(DesiredRow.sealed_password.is_not(None), DesiredRow.password_set_at < limit)
            .values(
                sealed_password=None,
                status=DEAD,
                last_error=f"the pending password was not delivered within {hours} h; wiped",
            )
        )
    return result.rowcount if isinstance(result, CursorResult) else 0


def release_leases(store: Store, owner: str | None = None) -> None:
    """Drop leases (all of them on a single-node SQLite start, or one owner's)."""
    with store.write() as s:
        stmt = update(DesiredRow).where(DesiredRow.lease_owner.is_not(None))
        if owner is not None:
            stmt = stmt.where(DesiredRow.lease_owner == owner)
        s.execute(stmt.values(lease_owner=None, lease_until=None))
