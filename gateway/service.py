"""CredentialService: the one API every front-end calls; all rules are applied here.

Each operation is one transaction holding the account change, its audit row and whatever the
listeners (propagation, mail) add. Authentication failures are uniform: unknown, wrong, locked,
expired and disabled all raise ``AuthenticationFailed``; the audit row keeps the real reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import SecretStr
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from gateway import audit, expiry, lockout, mfa, passwords, tokens
from gateway.audit import SYSTEM, Actor
from gateway.changes import Change, ChangeListener, LimitsProvider, Trigger
from gateway.clock import Clock, SystemClock, aware
from gateway.errors import (
    AuthenticationFailed,
    Conflict,
    NotFound,
    PolicyViolation,
)
from gateway.hashing import Hasher
from gateway.orgpolicy import OrgPolicy
from gateway.sealing import Sealer
from gateway.store import authpath
from gateway.store.engine import Store
from gateway.store.models import Account, PasswordHistory, Token, TotpCredential
from gateway.views import AccountView, lock_state, store_lock_state, view

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


class CredentialService:
    """Accounts, passwords, expiry, lockout and MFA, one transaction per operation."""

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

    # ---------------------------------------------------------------- authentication
    async def authenticate(
        self,
        identity: str,
        password: str,
        *,
        via: str,
        client: str = "",
        grace: Grace | None = None,
    ) -> AuthResult:
        """Check a password under every rule; raise ``AuthenticationFailed`` uniformly."""
        now = self.clock.now()
        pw = passwords.normalise(password)
        with self.hasher.slot():  # Overloaded here: shed before anything is counted
            reserved = await self._db(self._reserve, identity, now, via, client)
            if reserved is None:
                await self.hasher.verify(None, pw, in_slot=True)  # same cost as a real check
                raise AuthenticationFailed()
            account_id, encoded, may_evaluate = reserved
            ok = await self.hasher.verify(encoded if may_evaluate else None, pw, in_slot=True)
        if not may_evaluate:
            raise AuthenticationFailed()
        if not ok:
            await self._db(self._record_failure, account_id, now, via, client)
            raise AuthenticationFailed()
        assert encoded is not None
        rehash = await self.hasher.hash(pw) if self.hasher.needs_rehash(encoded) else None
        result = await self._db(self._record_success, account_id, now, via, client, grace, rehash)
        if result is None:
            raise AuthenticationFailed()
        return result

    def _reserve(
        self, identity: str, now: datetime, via: str, client: str
    ) -> tuple[int, str | None, bool] | None:
        with self.store.write(relaxed=True) as s:
            row = authpath.find(s, identity_key(identity))  # hot path: SQL Core, row-locked
            if row is None:
                return None  # failures against unknown accounts leave no record
            before = row.lock
            state, may = lockout.reserve(before, self.org.lockout, now)
            if row.state != "active" or row.password_hash is None:
                may = False
            newly_locked = not lockout.is_locked(before, now) and lockout.is_locked(state, now)
            account_id, encoded = row.id, row.password_hash
            if newly_locked:  # rare: through the ORM so that listeners see the lock
                acc = self._get(s, account_id)
                store_lock_state(acc, state)
                self._lock_side_effects(
                    s, acc, now, Actor("lockout", via, client), "parallel attempts"
                )
            else:
                authpath.update(s, account_id, state)
        if not may:
            with self.store.write() as s:  # durable: also flushes the relaxed reservation
                reason = (
                    "disabled"
                    if encoded is None or not self._is_active(s, account_id)
                    else "locked"
                )
                audit.record(
                    s,
                    now,
                    Actor(identity_key(identity), via, client),
                    "authenticate",
                    account_id=account_id,
                    subject=identity_key(identity),
                    outcome="failed",
                    reason=reason,
                )
            if newly_locked:
                self._committed()
        return account_id, encoded, may

    @staticmethod
    def _is_active(session: Session, account_id: int) -> bool:
        acc = session.get(Account, account_id)
        return acc is not None and acc.state == "active"

    def _lock_side_effects(
        self, s: Session, acc: Account, now: datetime, actor: Actor, why: str
    ) -> None:
        self._revoke_tokens(s, acc.id, now)
        audit.record(s, now, actor, "lock", account_id=acc.id, subject=acc.username, reason=why)
        self._emit(s, acc, Change(Trigger.LOCKED))

    def _record_failure(self, account_id: int, now: datetime, via: str, client: str) -> None:
        locked = False
        with self.store.write() as s:
            acc = self._get(s, account_id)
            before = lock_state(acc)
            state = lockout.fail(before, self.org.lockout, now)
            store_lock_state(acc, state)
            audit.record(
                s,
                now,
                Actor(acc.username_key, via, client),
                "authenticate",
                account_id=acc.id,
                subject=acc.username,
                outcome="failed",
                reason="wrong password",
            )
            if not lockout.is_locked(before, now) and lockout.is_locked(state, now):
                locked = True
                self._lock_side_effects(
                    s, acc, now, Actor("lockout", via, client), "too many failures"
                )
        if locked:
            self._committed()

    def _record_success(
        self,
        account_id: int,
        now: datetime,
        via: str,
        client: str,
        grace: Grace | None,
        rehash: str | None,
    ) -> AuthResult | None:
        reason = ""
        with self.store.write(relaxed=True) as s:
            row = authpath.get(s, account_id)  # hot path: SQL Core, row-locked
            if row is None:
                return None  # deleted while the password was being verified
            actor = Actor(row.username_key, via, client)
            state = lockout.succeed(row.lock, now)
            verdict = expiry.verdict(row.password_expires_at, self.org.expiry, now)
            in_grace, grace_used = False, row.grace_used
            if state is None:
                reason = "locked during verification"
            elif row.state != "active":
                reason = "disabled"
            elif verdict.status is expiry.Status.EXPIRED:
                in_grace, grace_used = self._take_grace(row, grace, now)
                if not in_grace:
                    reason = "temporary password expired" if row.temporary else "password expired"
            result: AuthResult | None = None
            values: dict[str, Any] = {}
            if not reason:
                if rehash is not None:
                    values["password_hash"] = rehash
                values["last_login_at"] = now
                if grace_used != row.grace_used:
                    values["grace_used"] = grace_used
                authpath.audit(
                    s,
                    now,
                    actor,
                    "authenticate",
                    account_id=row.id,
                    subject=row.username,
                    details={"grace": True} if in_grace else None,
                )
                result = AuthResult(
                    account_id=row.id,
                    username=row.username,
                    kind=row.kind,
                    version=row.version,
                    groups=row.groups,
                    must_change=row.must_change,
                    mfa_enrolled=row.mfa_enrolled,
                    expires_at=verdict.expires_at,
                    warn_days_left=verdict.days_left
                    if verdict.status is not expiry.Status.VALID
                    else None,
                    in_grace=in_grace,
                )
            if state is not None and state != row.lock:
                authpath.update(s, row.id, state, **values)
            else:
                authpath.update(s, row.id, None, **values)
            subject = row.username
        if reason:
            with self.store.write() as s:  # durable, and flushes the relaxed commit before it
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
        return result

    @staticmethod
    def _take_grace(row: authpath.AuthRow, grace: Grace | None, now: datetime) -> tuple[bool, int]:
        """Whether an expired password is still in grace, and the new count of grace logins."""
        if grace is None or row.temporary:
            return False, row.grace_used
        expires = row.password_expires_at
        if (
            grace.days is not None
            and expires is not None
            and now < expires + timedelta(days=grace.days)
        ):
            return True, row.grace_used
        if grace.logins is not None and row.grace_used < grace.logins:
            return True, row.grace_used + 1
        return False, row.grace_used

    # ---------------------------------------------------------------- passwords
    async def _check_new_password(
        self, acc_snapshot: tuple[int, str, str, str], password: str
    ) -> str:
        account_id, kind, username, email = acc_snapshot
        rules = self.org.rules_for(kind)
        pw = passwords.check(password, rules, username, email)
        if self.limits is not None:
            acc = await self._db(self._load, account_id)
            for limit in self.limits.password_limits(acc):
                problem = limit.violation(pw)
                if problem:
                    raise PolicyViolation("target", f"The password would be refused: {problem}.")
        history = await self._db(self._history, account_id, rules.history)
        for old in history:
            if await self.hasher.verify(old, pw):
                raise PolicyViolation("history", "The password was used recently; choose another.")
        return pw

    def _load(self, account_id: int) -> Account:
        with self.store.read() as s:
            acc = self._get(s, account_id, lock=False)
            s.expunge(acc)
            return acc

    def _snapshot(self, ref: int | str) -> tuple[int, str, str, str]:
        with self.store.read() as s:
            acc = self._get(s, ref, lock=False)
            return acc.id, acc.kind, acc.username, acc.email

    def _history(self, account_id: int, depth: int) -> list[str]:
        if depth == 0:
            return []
        with self.store.read() as s:
            current = s.get(Account, account_id)
            hashes = [current.password_hash] if current and current.password_hash else []
            rows = s.scalars(
                select(PasswordHistory.password_hash)
                .where(PasswordHistory.account_id == account_id)
                .order_by(PasswordHistory.id.desc())
                .limit(depth)
            )
            return hashes + list(rows)

    def _write_password(
        self,
        s: Session,
        acc: Account,
        encoded: str,
        plain: str,
        now: datetime,
        *,
        temporary: bool,
        actor: Actor,
        action: str,
        reason: str = "",
    ) -> None:
        if acc.password_hash is not None:
            s.add(
                PasswordHistory(account_id=acc.id, password_hash=acc.password_hash, created_at=now)
            )
            keep = max(self.org.rules_for(acc.kind).history, 1)
            old_ids = s.scalars(
                select(PasswordHistory.id)
                .where(PasswordHistory.account_id == acc.id)
                .order_by(PasswordHistory.id.desc())
                .offset(keep)
            ).all()
            if old_ids:
                s.execute(delete(PasswordHistory).where(PasswordHistory.id.in_(old_ids)))
        was_locked = lockout.is_locked(lock_state(acc), now)
        acc.password_hash = encoded
        acc.password_changed_at = now
        acc.temporary = temporary
        acc.must_change = temporary
        acc.grace_used = 0
        acc.expired_notified = False
        acc.password_expires_at = expiry.expires_at(
            now, self.org.expiry, never_expires=acc.never_expires, temporary=temporary
        )
        acc.updated_at = now
        store_lock_state(acc, lockout.unlock())
        acc.mfa_failed_count = 0
        self._revoke_tokens(s, acc.id, now)
        audit.record(
            s,
            now,
            actor,
            action,
            account_id=acc.id,
            subject=acc.username,
            reason=reason,
            details={"temporary": temporary},
        )
        self._emit(s, acc, Change(Trigger.PASSWORD_CHANGE, SecretStr(plain), temporary))
        if was_locked:
            audit.record(
                s,
                now,
                actor,
                "unlock",
                account_id=acc.id,
                subject=acc.username,
                reason="password reset",
            )
            self._emit(s, acc, Change(Trigger.UNLOCKED))

    async def change_password(
        self,
        ref: int | str,
        new_password: str,
        *,
        actor: Actor,
        current_password: str | None = None,
        consume_token: str | None = None,
        token_purposes: Sequence[str] = (),
    ) -> None:
        """Set a new long-term password (self-service or admin), clearing any lock.

        With ``current_password`` the old password is verified first (an expired one is fine,
        a locked account is not). With ``consume_token`` the link token is used up in the same
        transaction; a password refused by policy leaves the token usable.
        """
        snapshot = await self._db(self._snapshot, ref)
        if current_password is not None:
            await self.authenticate_for_change(snapshot[0], current_password, actor)
        pw = await self._check_new_password(snapshot, new_password)
        encoded = await self.hasher.hash(pw)
        await self._db(
            self._apply_password,
            snapshot[0],
            encoded,
            pw,
            actor,
            False,
            "change_password",
            consume_token,
            tuple(token_purposes),
        )
        self._committed()

    async def authenticate_for_change(self, account_id: int, password: str, actor: Actor) -> None:
        """Verify the current password before a change; expiry and must-change don't block it."""
        now = self.clock.now()
        username = await self._db(self._username_of, account_id)
        reserved = await self._db(self._reserve, username, now, actor.via, actor.client)
        if reserved is None:
            raise AuthenticationFailed()
        _, encoded, may = reserved
        ok = await self.hasher.verify(encoded if may else None, passwords.normalise(password))
        if not may:
            raise AuthenticationFailed()
        if not ok:
            await self._db(self._record_failure, account_id, now, actor.via, actor.client)
            raise AuthenticationFailed()
        if not await self._db(self._release, account_id, now, actor):
            raise AuthenticationFailed()  # locked meanwhile, or an expired temporary password

    def _release(self, account_id: int, now: datetime, actor: Actor) -> bool:
        """A reserved attempt proved the right password: clear the count; False if unusable.

        An expired password may still be used to set a new one, an expired temporary password
        may not: it is dead once its time is up, and only an admin can issue another.
        """
        reason = subject = ""
        with self.store.write(relaxed=True) as s:
            row = authpath.get(s, account_id)
            if row is None:
                return False
            subject = row.username
            state = lockout.succeed(row.lock, now)
            if state is None:
                reason = "locked during verification"
            else:
                authpath.update(s, row.id, state)
                expires = row.password_expires_at
                if row.temporary and expires is not None and expires <= now:
                    reason = "temporary password expired"
        if reason:
            with self.store.write() as s:  # durable, and flushes the relaxed commit before it
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
        return not reason

    def _username_of(self, account_id: int) -> str:
        with self.store.read() as s:
            return self._get(s, account_id, lock=False).username_key

    def _apply_password(
        self,
        account_id: int,
        encoded: str,
        plain: str,
        actor: Actor,
        temporary: bool,
        action: str,
        token: str | None,
        purposes: tuple[str, ...],
    ) -> None:
        now = self.clock.now()
        with self.store.write() as s:
            acc = self._get(s, account_id)
            if token is not None:
                self._consume(s, acc.id, token, purposes, now)
            self._write_password(
                s, acc, encoded, plain, now, temporary=temporary, actor=actor, action=action
            )

    async def set_temporary_password(
        self, ref: int | str, password: str | None = None, *, actor: Actor
    ) -> str | None:
        """Set a must-change temporary password; generated unless the admin typed one.

        Returns the generated password (shown once to the admin), or None when typed.
        """
        snapshot = await self._db(self._snapshot, ref)
        generated = password is None
        plain = passwords.generate() if password is None else password
        pw = await self._check_new_password(snapshot, plain)
        encoded = await self.hasher.hash(pw)
        await self._db(
            self._apply_password,
            snapshot[0],
            encoded,
            pw,
            actor,
            True,
            "set_temporary_password",
            None,
            (),
        )
        self._committed()
        return pw if generated else None

    # ---------------------------------------------------------------- tokens
    def issue_token(
        self,
        account_id: int,
        purpose: tokens.Purpose,
        lifetime: timedelta,
        *,
        actor: Actor,
        data: dict[str, Any] | None = None,
        session: Session | None = None,
        revoke: Sequence[str] | None = None,
    ) -> str:
        """Create a one-time token (older ones of the same purpose are revoked).

        ``revoke`` names the purposes whose live tokens a new one revokes instead (``()``: none,
        e.g. for the second link of one reset request sent to the recovery address).
        """
        now = self.clock.now()
        token = tokens.new_token()
        revoked = [purpose.value] if revoke is None else list(revoke)

        def write(s: Session) -> None:
            if revoked:
                self._revoke_tokens(s, account_id, now, revoked)
            s.add(
                Token(
                    account_id=account_id,
                    purpose=purpose.value,
                    token_hash=tokens.token_hash(token),
                    data=data or {},
                    created_at=now,
                    expires_at=now + lifetime,
                )
            )
            audit.record(
                s,
                now,
                actor,
                "issue_token",
                account_id=account_id,
                details={"purpose": purpose.value},
            )

        if session is not None:
            write(session)
        else:
            with self.store.write() as s:
                write(s)
        return token

    def peek_token(self, token: str, purposes: Sequence[str]) -> Token | None:
        """The live token row for ``token`` (a GET renders a form and changes nothing)."""
        now = self.clock.now()
        with self.store.read() as s:
            row = s.scalars(
                select(Token).where(Token.token_hash == tokens.token_hash(token))
            ).first()
            if row is None or row.purpose not in purposes or row.used_at or row.revoked_at:
                return None
            if aware(row.expires_at) is None or aware(row.expires_at) <= now:  # type: ignore[operator]
                return None
            s.expunge(row)
            return row

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

    # ---------------------------------------------------------------- TOTP
    async def enrol_totp(self, ref: int | str, *, actor: Actor) -> str:
        """Start TOTP enrolment: a new sealed seed, unconfirmed until a code is checked."""
        seed = mfa.new_seed()
        sealed = self.sealer.seal(seed, SEED_PURPOSE)
        await self._db(self._store_seed, ref, sealed, actor)
        return seed

    def _store_seed(self, ref: int | str, sealed: bytes, actor: Actor) -> None:
        now = self.clock.now()
        with self.store.write() as s:
            acc = self._get(s, ref)
            s.execute(delete(TotpCredential).where(TotpCredential.account_id == acc.id))
            s.add(TotpCredential(account_id=acc.id, sealed_seed=sealed, created_at=now))
            audit.record(s, now, actor, "totp_enrol", account_id=acc.id, subject=acc.username)
            self._emit(s, acc, Change(Trigger.UPDATED))

    async def verify_totp(
        self,
        ref: int | str,
        code: str,
        *,
        actor: Actor,
        confirm: bool = False,
        in_reset: bool = False,
    ) -> None:
        """Check a TOTP code: each accepted once; wrong codes count; the limit locks the account.

        ``in_reset``: the check is part of a password reset, which may clear a lock caused by
        wrong passwords, so such a lock does not refuse the code (an admin or MFA lock does).
        """
        ok = await self._db(self._verify_totp, ref, code, actor, confirm, in_reset)
        if not ok:
            raise AuthenticationFailed()

    def _verify_totp(
        self, ref: int | str, code: str, actor: Actor, confirm: bool, in_reset: bool = False
    ) -> bool:
        now = self.clock.now()
        locked = False
        with self.store.write() as s:
            acc = self._get(s, ref)
            cred = s.scalars(
                select(TotpCredential).where(TotpCredential.account_id == acc.id).with_for_update()
            ).first()
            usable = cred is not None and (confirm or cred.confirmed_at is not None)
            blocked = lockout.is_locked(lock_state(acc), now) and not (
                in_reset and acc.lock_reason == lockout.LockReason.FAILURES.value
            )
            if blocked or not usable or cred is None:
                audit.record(
                    s,
                    now,
                    actor,
                    "totp",
                    account_id=acc.id,
                    subject=acc.username,
                    outcome="failed",
                    reason="locked" if usable else "not enrolled",
                )
                return False
            seed = self.sealer.open(cred.sealed_seed, SEED_PURPOSE)
            result = mfa.check(seed, code, cred.last_step, now)
            if result.step is None:
                acc.mfa_failed_count += 1
                audit.record(
                    s,
                    now,
                    actor,
                    "totp",
                    account_id=acc.id,
                    subject=acc.username,
                    outcome="failed",
                    reason="wrong or reused code",
                )
                if acc.mfa_failed_count >= self.org.totp_attempts_for(acc.kind):
                    store_lock_state(acc, lockout.mfa_lock(lock_state(acc), self.org.lockout, now))
                    self._lock_side_effects(s, acc, now, actor, "too many wrong TOTP codes")
                    locked = True
                ok = False
            else:
                cred.last_step = result.step
                if cred.confirmed_at is None:
                    cred.confirmed_at = now
                    self._emit(s, acc, Change(Trigger.UPDATED))
                acc.mfa_failed_count = 0
                audit.record(s, now, actor, "totp", account_id=acc.id, subject=acc.username)
                ok = True
        if locked:
            self._committed()
        return ok

    # ---------------------------------------------------------------- recovery e-mail
    def set_recovery_email_in(
        self, s: Session, account_id: int, address: str, *, actor: Actor
    ) -> Account:
        """Set (or, with "", clear) the recovery e-mail inside ``s``; it starts unverified."""
        now = self.clock.now()
        acc = self._get(s, account_id)
        address = address.strip()
        if address:
            local, _, domain = address.partition("@")
            if not local or "." not in domain or len(address) > 320 or " " in address:
                raise PolicyViolation("recovery_email", "Enter a valid e-mail address.")
            if identity_key(address) == acc.email_key:
                raise PolicyViolation(
                    "recovery_email", "The recovery e-mail must differ from the work address."
                )
        acc.recovery_email = address or None
        acc.recovery_email_verified_at = None
        acc.updated_at = now
        self._emit(s, acc, Change(Trigger.UPDATED))
        self._revoke_tokens(s, acc.id, now, [tokens.Purpose.VERIFY_RECOVERY.value])
        audit.record(
            s,
            now,
            actor,
            "set_recovery_email",
            account_id=acc.id,
            subject=acc.username,
            details={"cleared": not address},
        )
        return acc

    def verify_recovery_email_in(self, s: Session, token: str, *, actor: Actor) -> Account:
        """Use a verification link inside ``s``: marks the recovery e-mail verified (audited)."""
        now = self.clock.now()
        gone = PolicyViolation("token", "This link is no longer valid.")
        owner = s.scalars(
            select(Token.account_id).where(Token.token_hash == tokens.token_hash(token))
        ).first()
        if owner is None:
            raise gone
        acc = self._get(s, owner)
        used = self._consume(s, acc.id, token, [tokens.Purpose.VERIFY_RECOVERY.value], now)
        address = (used.data or {}).get("address")
        if acc.recovery_email is None or identity_key(acc.recovery_email) != address:
            raise gone
        acc.recovery_email_verified_at = now
        acc.updated_at = now
        self._emit(s, acc, Change(Trigger.UPDATED))
        audit.record(
            s,
            now,
            Actor(acc.username_key, actor.via, actor.client),
            "verify_recovery_email",
            account_id=acc.id,
            subject=acc.username,
        )
        return acc

    # ---------------------------------------------------------------- accounts
    async def create_account(
        self,
        *,
        kind: str,
        username: str,
        email: str,
        actor: Actor,
        password: str | None = None,
        generate: bool = False,
        display_name: str = "",
        groups: Sequence[str] = (),
        attributes: dict[str, Any] | None = None,
        never_expires: bool = False,
    ) -> tuple[AccountView, str | None]:
        """Create a user or admin; with ``generate`` a temporary password is made and returned."""
        if kind not in ("user", "admin"):
            raise PolicyViolation("kind", "kind must be user or admin")
        if "@" not in email or identity_key(email) == "":
            raise PolicyViolation("email", "a valid e-mail address is required")
        if not username.strip():
            raise PolicyViolation("username", "a username is required")
        plain = passwords.generate() if generate else password
        encoded = None
        if plain is not None:
            rules = self.org.rules_for(kind)
            plain = passwords.check(plain, rules, username, email)
            encoded = await self.hasher.hash(plain)
        created = await self._db(
            self._insert,
            kind,
            username,
            email,
            display_name,
            list(groups),
            attributes or {},
            never_expires,
            encoded,
            plain,
            generate,
            actor,
        )
        self._committed()
        return created, (plain if generate else None)

    def _insert(
        self,
        kind: str,
        username: str,
        email: str,
        display_name: str,
        groups: list[str],
        attributes: dict[str, Any],
        never_expires: bool,
        encoded: str | None,
        plain: str | None,
        temporary: bool,
        actor: Actor,
    ) -> AccountView:
        now = self.clock.now()
        with self.store.write() as s:
            if (
                self._find(s, username)
                or self._find(s, email)
                or s.scalars(
                    select(Account).where(
                        or_(
                            Account.username_key == identity_key(email),
                            Account.email_key == identity_key(username),
                        )
                    )
                ).first()
            ):
                raise Conflict("an account with that username or e-mail already exists")
            acc = Account(
                kind=kind,
                username=username.strip(),
                username_key=identity_key(username),
                email=email.strip(),
                email_key=identity_key(email),
                display_name=display_name,
                groups=groups,
                attributes=attributes,
                state="active",
                never_expires=never_expires,
                expired_notified=False,
                must_change=False,
                temporary=False,
                grace_used=0,
                failed_count=0,
                mfa_failed_count=0,
                version=1,
                created_at=now,
                updated_at=now,
            )
            s.add(acc)
            s.flush()
            audit.record(s, now, actor, f"{kind}_add", account_id=acc.id, subject=acc.username)
            self._emit(s, acc, Change(Trigger.CREATED))
            if encoded is not None and plain is not None:
                self._write_password(
                    s,
                    acc,
                    encoded,
                    plain,
                    now,
                    temporary=temporary,
                    actor=actor,
                    action="set_password",
                )
            return self._view(s, acc)

    async def get_account(self, ref: int | str) -> AccountView:
        """One account by id, username or e-mail."""
        return await self._db(self._get_view, ref)

    def account_view(self, ref: int | str) -> AccountView:
        """One account by id, username or e-mail, synchronously (for code already off the loop)."""
        return self._get_view(ref)

    def _get_view(self, ref: int | str) -> AccountView:
        with self.store.read() as s:
            return self._view(s, self._get(s, ref, lock=False))

    async def list_accounts(self, kind: str | None = None) -> list[AccountView]:
        """Every account (of one kind), ordered by username."""
        return await self._db(self._list, kind)

    def _list(self, kind: str | None) -> list[AccountView]:
        with self.store.read() as s:
            stmt = select(Account).order_by(Account.username_key)
            if kind:
                stmt = stmt.where(Account.kind == kind)
            return [self._view(s, acc) for acc in s.scalars(stmt)]

    async def update_account(
        self,
        ref: int | str,
        *,
        actor: Actor,
        email: str | None = None,
        display_name: str | None = None,
        groups: Sequence[str] | None = None,
        never_expires: bool | None = None,
        recovery_email: str | None = None,
    ) -> AccountView:
        """Change profile fields; a new recovery e-mail starts unverified."""
        return await self._db(
            self._update, ref, actor, email, display_name, groups, never_expires, recovery_email
        )

    def _update(
        self,
        ref: int | str,
        actor: Actor,
        email: str | None,
        display_name: str | None,
        groups: Sequence[str] | None,
        never_expires: bool | None,
        recovery_email: str | None,
    ) -> AccountView:
        now = self.clock.now()
        with self.store.write() as s:
            acc = self._get(s, ref)
            changed: list[str] = []
            if email is not None and identity_key(email) != acc.email_key:
                other = self._find(s, email)
                if other is not None and other.id != acc.id:
                    raise Conflict("another account uses that e-mail")
                acc.email, acc.email_key = email.strip(), identity_key(email)
                changed.append("email")
            if display_name is not None:
                acc.display_name = display_name
                changed.append("display_name")
            if groups is not None:
                acc.groups = list(groups)
                changed.append("groups")
            if never_expires is not None and never_expires != acc.never_expires:
                acc.never_expires = never_expires
                if acc.password_changed_at is not None and not acc.temporary:
                    acc.password_expires_at = expiry.expires_at(
                        aware(acc.password_changed_at) or now,
                        self.org.expiry,
                        never_expires=never_expires,
                        temporary=False,
                    )
                changed.append("never_expires")
            if recovery_email is not None:
                if identity_key(recovery_email) == acc.email_key:
                    raise PolicyViolation(
                        "recovery_email", "The recovery e-mail must differ from the work address."
                    )
                acc.recovery_email = recovery_email.strip() or None
                acc.recovery_email_verified_at = None
                changed.append("recovery_email")
            acc.updated_at = now
            self._emit(s, acc, Change(Trigger.UPDATED))
            audit.record(
                s,
                now,
                actor,
                "update",
                account_id=acc.id,
                subject=acc.username,
                details={"fields": changed},
            )
            return self._view(s, acc)

    async def set_state(self, ref: int | str, *, active: bool, actor: Actor) -> None:
        """Disable or re-enable an account."""
        await self._db(self._set_state, ref, active, actor)
        self._committed()

    def _set_state(self, ref: int | str, active: bool, actor: Actor) -> None:
        now = self.clock.now()
        with self.store.write() as s:
            acc = self._get(s, ref)
            acc.state = "active" if active else "disabled"
            acc.updated_at = now
            if not active:
                self._revoke_tokens(s, acc.id, now)
            audit.record(
                s,
                now,
                actor,
                "enable" if active else "disable",
                account_id=acc.id,
                subject=acc.username,
            )
            self._emit(s, acc, Change(Trigger.ENABLED if active else Trigger.DISABLED))

    async def delete_account(self, ref: int | str, *, actor: Actor) -> None:
        """Delete an account and everything it owns (the audit log keeps its history)."""
        await self._db(self._delete, ref, actor)
        self._committed()

    def _delete(self, ref: int | str, actor: Actor) -> None:
        now = self.clock.now()
        with self.store.write() as s:
            acc = self._get(s, ref)
            audit.record(s, now, actor, "delete", account_id=acc.id, subject=acc.username)
            self._emit(s, acc, Change(Trigger.DELETED))
            s.delete(acc)

    async def audit_log(
        self, ref: int | str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The newest audit rows as dicts."""
        return await self._db(self._audit_rows, ref, limit)

    def _audit_rows(self, ref: int | str | None, limit: int) -> list[dict[str, Any]]:
        with self.store.read() as s:
            account_id = self._get(s, ref, lock=False).id if ref is not None else None
            return [
                {
                    "id": r.id,
                    "at": r.at.replace(tzinfo=r.at.tzinfo or UTC).isoformat(),
                    "actor": r.actor,
                    "action": r.action,
                    "account_id": r.account_id,
                    "subject": r.subject,
                    "outcome": r.outcome,
                    "reason": r.reason,
                    "via": r.via,
                    "client": r.client,
                    "details": r.details,
                }
                for r in audit.query(s, account_id=account_id, limit=limit)
            ]

    def close(self) -> None:
        """Release pools."""
        self._db_pool.shutdown(wait=False, cancel_futures=True)
