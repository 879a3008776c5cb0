"""Password changes, temporary passwords and one-time tokens, each one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import SecretStr
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from gateway import audit, expiry, lockout, passwords, tokens
from gateway.audit import Actor
from gateway.changes import Change, Trigger
from gateway.clock import aware
from gateway.errors import (
    AuthenticationFailed,
    PolicyViolation,
)
from gateway.service_auth import AuthOps
from gateway.store import authpath
from gateway.store.models import Account, PasswordHistory, Token
from gateway.views import lock_state, store_lock_state


class PasswordOps(AuthOps):
    """change_password(), set_temporary_password() and link tokens."""

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
            self._refusal(now, actor, account_id, subject, reason)
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
