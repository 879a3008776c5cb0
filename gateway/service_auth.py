"""Authentication under the lockout rules: reserve, verify, record (see gateway/lockout.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from gateway import audit, expiry, lockout, passwords
from gateway.audit import Actor
from gateway.errors import (
    AuthenticationFailed,
)
from gateway.service_base import AuthResult, Grace, ServiceBase, identity_key
from gateway.store import authpath
from gateway.views import lock_state, store_lock_state


class AuthOps(ServiceBase):
    """authenticate() and its transactions."""

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
            inactive = row.state != "active" or row.password_hash is None
            if inactive:
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
            subject = identity_key(identity)
            reason = "disabled" if inactive else "locked"
            self._refusal(now, Actor(subject, via, client), account_id, subject, reason)
            if newly_locked:
                self._committed()
        return account_id, encoded, may

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
            self._refusal(now, actor, account_id, subject, reason)
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
