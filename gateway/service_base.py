"""Plumbing of CredentialService: pools, sessions, listeners, lookups; identity keys."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from gateway import audit, passwords, tokens
from gateway.audit import Actor
from gateway.changes import Change, ChangeListener, LimitsProvider, Trigger
from gateway.clock import Clock, SystemClock
from gateway.errors import (
    NotFound,
    PolicyViolation,
)
from gateway.hashing import Hasher
from gateway.orgpolicy import OrgPolicy
from gateway.sealing import Sealer
from gateway.store.engine import Store
from gateway.store.models import Account, Token, TotpCredential
from gateway.views import AccountView, view

T = TypeVar("T")
SEED_PURPOSE = "totp-seed"


def identity_key(identity: str) -> str:
    """One spelling per account: NFKC, trimmed, case-folded (username or e-mail)."""
    return passwords.normalise(identity).strip().casefold()


@dataclass(frozen=True)
class Grace:
    """Expired-password grace a front-end's policy grants: N logins and/or N days."""

    logins: int | None = None
    days: int | None = None


@dataclass(frozen=True)
class AuthResult:
    """A successful authentication."""

    account_id: int
    username: str
    kind: str
    version: int
    groups: tuple[str, ...]
    must_change: bool
    mfa_enrolled: bool
    expires_at: datetime | None
    warn_days_left: int | None
    in_grace: bool = False


class ServiceBase:
    """Plumbing shared by every part of the service: pools, sessions, listeners."""

    def __init__(
        self,
        store: Store,
        hasher: Hasher,
        sealer: Sealer,
        org: Callable[[], OrgPolicy],
        *,
        clock: Clock | None = None,
        listeners: Sequence[ChangeListener] = (),
        limits: LimitsProvider | None = None,
        db_workers: int = 8,
    ) -> None:
        self.store = store
        self.hasher = hasher
        self.sealer = sealer
        self._org = org
        self.clock = clock or SystemClock()
        self.listeners: list[ChangeListener] = list(listeners)
        self.limits = limits
        self.after_commit: list[Callable[[], None]] = []
        self._db_pool = ThreadPoolExecutor(db_workers, thread_name_prefix="db")

    # ---------------------------------------------------------------- plumbing
    @property
    def org(self) -> OrgPolicy:
        """The organisation rules in force (reloaded with the policy set)."""
        return self._org()

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_pool, fn, *args)

    def _committed(self) -> None:
        for callback in self.after_commit:
            callback()

    def _emit(self, session: Session, acc: Account, change: Change) -> None:
        acc.version += 1
        for listener in self.listeners:
            listener.on_change(session, acc, change)

    @staticmethod
    def _find(session: Session, identity: str, *, lock: bool = False) -> Account | None:
        key = identity_key(identity)
        stmt = select(Account).where(or_(Account.username_key == key, Account.email_key == key))
        if lock:
            stmt = stmt.with_for_update()
        return session.scalars(stmt).first()

    def _get(self, session: Session, ref: int | str, *, lock: bool = True) -> Account:
        if isinstance(ref, int):
            stmt = select(Account).where(Account.id == ref)
            acc = session.scalars(stmt.with_for_update() if lock else stmt).first()
        else:
            acc = self._find(session, ref, lock=lock)
        if acc is None:
            raise NotFound(f"no account {ref!r}")
        return acc

    @staticmethod
    def _mfa_enrolled(session: Session, account_id: int) -> bool:
        cred = session.scalars(
            select(TotpCredential).where(TotpCredential.account_id == account_id)
        ).first()
        return cred is not None and cred.confirmed_at is not None

    def _view(self, session: Session, acc: Account) -> AccountView:
        return view(acc, self.clock.now(), self._mfa_enrolled(session, acc.id))

    @staticmethod
    def _revoke_tokens(
        session: Session, account_id: int, now: datetime, purposes: Sequence[str] = ()
    ) -> None:
        stmt = (
            update(Token)
            .where(
                Token.account_id == account_id, Token.used_at.is_(None), Token.revoked_at.is_(None)
            )
            .values(revoked_at=now)
        )
        if purposes:
            stmt = stmt.where(Token.purpose.in_(list(purposes)))
        session.execute(stmt)

    def _lock_side_effects(
        self, s: Session, acc: Account, now: datetime, actor: Actor, why: str
    ) -> None:
        self._revoke_tokens(s, acc.id, now)
        audit.record(s, now, actor, "lock", account_id=acc.id, subject=acc.username, reason=why)
        self._emit(s, acc, Change(Trigger.LOCKED))

    def _consume(
        self, s: Session, account_id: int, token: str, purposes: Sequence[str], now: datetime
    ) -> Token:
        result = s.execute(
            update(Token)
            .where(
                Token.token_hash == tokens.token_hash(token),
                Token.account_id == account_id,
                Token.purpose.in_(list(purposes)),
                Token.used_at.is_(None),
                Token.revoked_at.is_(None),
                Token.expires_at > now,
            )
            .values(used_at=now)
            .returning(Token.id)
        ).first()
        if result is None:
            raise PolicyViolation("token", "This link is no longer valid.")
        row = s.get(Token, result[0])
        assert row is not None
        return row

    def _refusal(
        self, now: datetime, actor: Actor, account_id: int, subject: str, reason: str
    ) -> None:
        """Audit a refused attempt durably; the commit also flushes relaxed commits before it."""
        with self.store.write() as s:
            audit.record(
                s,
                now,
                actor,
                "authenticate",
                account_id=account_id,
                subject=subject,
                outcome="failed",
                reason=reason,
            )

    def close(self) -> None:
        """Release pools."""
        self._db_pool.shutdown(wait=False, cancel_futures=True)
