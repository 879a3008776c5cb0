"""Lock, unlock and expire, and the scheduled auto-unlock and expiry sweep."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from gateway import audit, lockout
from gateway.audit import SYSTEM, Actor
from gateway.changes import Change, Trigger
from gateway.service_base import ServiceBase
from gateway.store.models import Account
from gateway.views import lock_state, store_lock_state


class StateOps(ServiceBase):
    """lock(), unlock(), expire(), auto_unlock_due(), expiry_sweep()."""

    # ---------------------------------------------------------------- lock / unlock / expire
    async def lock(self, ref: int | str, *, actor: Actor, until: datetime | None = None) -> None:
        """Lock an account (until ``until`` or until an admin unlocks it)."""
        await self._db(self._lock, ref, actor, until)
        self._committed()

    def _lock(self, ref: int | str, actor: Actor, until: datetime | None) -> None:
        now = self.clock.now()
        with self.store.write() as s:
            acc = self._get(s, ref)
            store_lock_state(acc, lockout.admin_lock(lock_state(acc), now, until))
            acc.updated_at = now
            self._lock_side_effects(s, acc, now, actor, "admin")

    async def unlock(self, ref: int | str, *, actor: Actor) -> None:
        """Clear the lock and the failure count; the password is left as it is."""
        await self._db(self._unlock, ref, actor, "admin")
        self._committed()

    def _unlock(self, ref: int | str, actor: Actor, why: str) -> None:
        now = self.clock.now()
        with self.store.write() as s:
            acc = self._get(s, ref)
            was_locked = acc.locked_at is not None
            store_lock_state(acc, lockout.unlock())
            acc.mfa_failed_count = 0
            acc.updated_at = now
            audit.record(
                s, now, actor, "unlock", account_id=acc.id, subject=acc.username, reason=why
            )
            if was_locked:
                self._emit(s, acc, Change(Trigger.UNLOCKED))

    async def expire(self, ref: int | str, *, actor: Actor) -> None:
        """Expire the password now: the user must set a new one."""
        await self._db(self._expire, ref, actor)
        self._committed()

    def _expire(self, ref: int | str, actor: Actor) -> None:
        now = self.clock.now()
        with self.store.write() as s:
            acc = self._get(s, ref)
            acc.password_expires_at = now
            acc.expired_notified = True
            acc.must_change = True
            acc.updated_at = now
            audit.record(s, now, actor, "expire", account_id=acc.id, subject=acc.username)
            self._emit(s, acc, Change(Trigger.EXPIRED))

    # ---------------------------------------------------------------- scheduled jobs
    def auto_unlock_due(self, limit: int = 500) -> int:
        """Unlock accounts whose timed lock ran out (indexed on ``locked_until``)."""
        now = self.clock.now()
        with self.store.write() as s:
            due = s.scalars(
                select(Account)
                .where(Account.locked_until.is_not(None), Account.locked_until <= now)
                .limit(limit)
                .with_for_update()
            ).all()
            for acc in due:
                store_lock_state(acc, lockout.unlock())
                acc.updated_at = now
                audit.record(
                    s,
                    now,
                    SYSTEM,
                    "unlock",
                    account_id=acc.id,
                    subject=acc.username,
                    reason="lock duration passed",
                )
                self._emit(s, acc, Change(Trigger.UNLOCKED))
        if due:
            self._committed()
        return len(due)

    def expiry_sweep(self, limit: int = 500) -> int:
        """Mark passwords that expired since the last sweep (indexed on ``password_expires_at``)."""
        now = self.clock.now()
        with self.store.write() as s:
            due = s.scalars(
                select(Account)
                .where(
                    Account.password_expires_at.is_not(None),
                    Account.password_expires_at <= now,
                    Account.expired_notified.is_(False),
                )
                .limit(limit)
                .with_for_update()
            ).all()
            for acc in due:
                acc.expired_notified = True
                acc.updated_at = now
                audit.record(
                    s,
                    now,
                    SYSTEM,
                    "expire",
                    account_id=acc.id,
                    subject=acc.username,
                    reason="maximum age reached"
                    if not acc.temporary
                    else "temporary password expired",
                )
                self._emit(s, acc, Change(Trigger.EXPIRED))
        if due:
            self._committed()
        return len(due)

    # ---------------------------------------------------------------- reconcile
    async def reconcile(self, ref: int | str | None = None, *, actor: Actor) -> int:
        """Offer every account (or one) to the listeners again, so that resources added or
        re-scoped since its last change get a desired-state row carrying its current state.

        Nothing already pending or delivered is touched; no password is re-sent (the gateway
        does not keep one). Returns how many accounts were offered.
        """
        return await self._db(self._reconcile, ref, actor)

    def _reconcile(self, ref: int | str | None, actor: Actor) -> int:
        now = self.clock.now()
        with self.store.read() as s:
            ids = (
                [self._get(s, ref, lock=False).id]
                if ref is not None
                else list(s.scalars(select(Account.id).order_by(Account.id)))
            )
        for start in range(0, len(ids), 200):  # one transaction per batch of accounts
            with self.store.write() as s:
                for account_id in ids[start : start + 200]:
                    acc = s.get(Account, account_id)
                    if acc is not None:
                        self._emit(s, acc, Change(Trigger.UPDATED))
        with self.store.write() as s:
            audit.record(
                s,
                now,
                actor,
                "sync_reconcile",
                subject=str(ref or "*"),
                details={"accounts": len(ids)},
            )
        if ids:
            self._committed()
        return len(ids)
