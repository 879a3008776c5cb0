"""Recovery e-mail flows and "admin resets a user" (part of ``ResetFlows``; core rules).

The feature is off until enabled (``org.toml`` or the admin override, ``recovery_enabled``).
An address must differ from the work address; it starts unverified, and a "Verify Now!" link
valid ``[recovery_email] verify_hours`` (4 h) marks it verified with the time, followed by a
confirmation mail. Entering an address again sends a new link and revokes the old one.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING

from gateway import mail
from gateway.audit import Actor
from gateway.errors import PolicyViolation
from gateway.mail.queue import enqueue, fmt_time
from gateway.org_overrides import recovery_enabled
from gateway.service import CredentialService, identity_key
from gateway.tokens import Purpose

if TYPE_CHECKING:
    from gateway.resets import ResetLimits
    from gateway.runtime import Runtime

VERIFY_PATH = "verify-recovery"
GONE = "This link is no longer valid."


class RecoveryFlows:
    """The recovery e-mail half of ``ResetFlows``."""

    rt: Runtime
    svc: CredentialService
    limits: ResetLimits

    async def set_recovery_email(self, account_id: int, address: str, *, actor: Actor) -> None:
        """Profile → Recovery Email: store it unverified and send the "Verify Now!" link (4 h)."""
        if address.strip() and not await asyncio.to_thread(recovery_enabled, self.rt):
            raise PolicyViolation(
                "recovery_email", "Recovery e-mail is not enabled for your organisation."
            )
        self.limits.recovery_account.check(str(account_id))
        await asyncio.to_thread(self._recovery_txn, account_id, address, actor)
        mail.wake(self.rt)

    def _recovery_txn(self, account_id: int, address: str, actor: Actor) -> None:
        hours = self.rt.org_policy.recovery_email.verify_hours
        with self.rt.store.write() as s:
            acc = self.svc.set_recovery_email_in(s, account_id, address, actor=actor)
            if acc.recovery_email is None:
                return
            token = self.svc.issue_token(
                acc.id,
                Purpose.VERIFY_RECOVERY,
                timedelta(hours=hours),
                actor=actor,
                data={"address": identity_key(acc.recovery_email)},
                session=s,
            )
            enqueue(
                s,
                sealer=self.rt.sealer,
                now=self.svc.clock.now(),
                recipient=acc.recovery_email,
                template="verify_recovery",
                context={
                    "username": acc.username,
                    "link": mail.link(self.rt.settings.http.base_url, VERIFY_PATH, token),
                    "hours": hours,
                },
                account_id=acc.id,
            )

    async def verify_recovery_email(self, token: str, *, client: str) -> None:
        """Verify Now!: mark the recovery e-mail verified (with time) and confirm by mail."""
        self.limits.verify_client.check(client or "-")
        if not await asyncio.to_thread(recovery_enabled, self.rt):
            raise PolicyViolation("token", GONE)
        await asyncio.to_thread(self._verify_txn, token, client)
        mail.wake(self.rt)

    def _verify_txn(self, token: str, client: str) -> None:
        with self.rt.store.write() as s:
            acc = self.svc.verify_recovery_email_in(
                s, token, actor=Actor("recovery-link", via="user-portal", client=client)
            )
            assert acc.recovery_email is not None
            enqueue(
                s,
                sealer=self.rt.sealer,
                now=self.svc.clock.now(),
                recipient=acc.recovery_email,
                template="recovery_verified",
                context={"username": acc.username, "when": fmt_time(self.svc.clock.now())},
                account_id=acc.id,
            )

    # ------------------------------------------------------------ admin resets a user
    async def admin_reset_user(
        self,
        target: str,
        *,
        actor: Actor,
        temporary_password: str | None,
        generate: bool,
        recovery_email: str | None,
    ) -> str | None:
        """Save User: a must-change temporary password and/or a recovery e-mail.

        Returns the generated temporary password (shown once), else None.
        """
        typed = temporary_password or None
        if generate and typed is not None:
            raise PolicyViolation(
                "password", "Either generate a temporary password or type one, not both."
            )
        view = await self.svc.get_account(target)
        new_recovery = None
        if recovery_email is not None and identity_key(recovery_email) != identity_key(
            view.recovery_email or ""
        ):
            new_recovery = recovery_email
            if recovery_email.strip():
                if not await asyncio.to_thread(recovery_enabled, self.rt):
                    raise PolicyViolation(
                        "recovery_email", "Recovery e-mail is not enabled for the organisation."
                    )
                if identity_key(recovery_email) == identity_key(view.email):
                    raise PolicyViolation(
                        "recovery_email", "The recovery e-mail must differ from the work address."
                    )
        generated = None
        if generate or typed is not None:
            generated = await self.svc.set_temporary_password(view.id, typed, actor=actor)
        if new_recovery is not None:
            await asyncio.to_thread(self._recovery_txn, view.id, new_recovery, actor)
            mail.wake(self.rt)
        return generated
