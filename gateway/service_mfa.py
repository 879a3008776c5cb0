"""TOTP enrolment and checks, and the recovery e-mail, each one transaction."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from gateway import audit, lockout, mfa, tokens
from gateway.audit import Actor
from gateway.changes import Change, Trigger
from gateway.errors import (
    AuthenticationFailed,
    PolicyViolation,
)
from gateway.service_base import SEED_PURPOSE, ServiceBase, identity_key
from gateway.store.models import Account, Token, TotpCredential
from gateway.views import lock_state, store_lock_state


class MfaOps(ServiceBase):
    """enrol_totp(), verify_totp() and the recovery e-mail primitives."""

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
