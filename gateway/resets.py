"""Password reset flows (core rules; web pages, API and CLI call these; recovery: recovery.py).

Links are one-time tokens bound to an account and a purpose (``tokens.Purpose``), valid for the
lifetimes in ``org.toml`` (1 h self-service, 24 h admin-initiated, 4 h recovery verification),
built only from ``settings.http.base_url`` and checked again, with the server clock, when the
password is finally written. A newer link, any password change, a lock or a disable revokes the
outstanding ones (the service does this).

Self-service request  ─▶ (uniform answer; work continues in the background)
    unknown / other kind / disabled / admin- or MFA-locked  ─▶ nothing is sent
    MFA enforced for the portal, user not enrolled, org does not allow it ─▶ "an admin must reset"
    otherwise ─▶ link to the work address (+ verified recovery address, MFA required there)
Completion: passwords match ─▶ ToS (admins) ─▶ password rules ─▶ TOTP (or push) when enrolled or
    required ─▶ password written, token used up, lock cleared, success mail: one transaction.
A password refused by the rules leaves the link usable; wrong TOTP codes count towards the
account's TOTP limit (admins: five) and the lock that follows revokes the link.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy.orm import Session

from gateway import audit, mail, passwords
from gateway.audit import Actor
from gateway.errors import AuthenticationFailed, NotFound, PolicyViolation
from gateway.mail.queue import enqueue
from gateway.org_overrides import recovery_enabled, set_recovery_enabled
from gateway.ratelimit import RateLimiter
from gateway.recovery import GONE, RecoveryFlows
from gateway.runtime import Runtime
from gateway.service import identity_key
from gateway.store.models import Account, Token
from gateway.tokens import Purpose
from gateway.views import AccountView

__all__ = [
    "PushMfa",
    "PushNotConfigured",
    "ResetFlows",
    "ResetPage",
    "recovery_enabled",
    "set_recovery_enabled",
]

log = logging.getLogger("gateway.resets")

RESET_PURPOSES = (Purpose.SELF_RESET.value, Purpose.ADMIN_RESET.value)
LINK_PATHS = {"user": "reset", "admin": "admin/reset"}
NEEDS_ADMIN = "MFA enforced but not enrolled"


@dataclass(frozen=True)
class ResetPage:
    """What a GET on a reset link needs to render the form."""

    kind: str
    purpose: str
    username: str
    email: str
    needs_tos: bool
    needs_totp: bool
    push_available: bool
    min_length: int
    max_length: int


class PushMfa(Protocol):
    """Push approval inside a reset (a later issue builds it; until then nothing is offered)."""

    def available(self, account_id: int) -> bool: ...

    async def approve(self, account_id: int, *, client: str) -> bool: ...


class PushNotConfigured:
    """The default: no push MFA; resets ask for a TOTP code instead."""

    def available(self, account_id: int) -> bool:
        """Never available."""
        return False

    async def approve(self, account_id: int, *, client: str) -> bool:
        """Never approves."""
        return False


@dataclass
class ResetLimits:
    """Rate limits of the flows, per runtime (kept apart from the lockout counter)."""

    request_account: RateLimiter
    request_client: RateLimiter
    complete_client: RateLimiter
    admin_target: RateLimiter
    recovery_account: RateLimiter
    verify_client: RateLimiter

    @classmethod
    def for_runtime(cls, rt: Runtime) -> ResetLimits:
        """The shared limits of ``rt`` (created on first use)."""
        found = rt.extras.get("reset_limits")
        if isinstance(found, ResetLimits):
            return found
        clock = rt.service.clock
        made = cls(
            request_account=RateLimiter(clock, capacity=5, per_seconds=3600),
            request_client=RateLimiter(clock, capacity=20, per_seconds=900),
            complete_client=RateLimiter(clock, capacity=40, per_seconds=900),
            admin_target=RateLimiter(clock, capacity=10, per_seconds=3600),
            recovery_account=RateLimiter(clock, capacity=5, per_seconds=3600),
            verify_client=RateLimiter(clock, capacity=20, per_seconds=900),
        )
        rt.extras["reset_limits"] = made
        return made


class ResetFlows(RecoveryFlows):
    """Reset requests, reset links, admin-initiated resets and the recovery e-mail."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.svc = rt.service
        self.limits = ResetLimits.for_runtime(rt)
        push = rt.extras.get("push_mfa")
        self.push: PushMfa = push if push is not None else PushNotConfigured()
        self._pending: set[asyncio.Task[None]] = rt.extras.setdefault("reset_tasks", set())

    # ------------------------------------------------------------ requesting a link
    async def request_reset(self, email: str, *, kind: str, client: str) -> None:
        """Reset Password: the same answer for every address; the work goes on afterwards.

        The caller sees nothing of what follows (lookup, rate limit per account, token, mail),
        so existing, unknown, locked and disabled accounts are indistinguishable, in timing too.
        """
        if kind not in LINK_PATHS:
            raise ValueError("kind must be user or admin")
        if not self.limits.request_client.allow(client or "-"):
            log.warning("reset requests rate-limited for a client")
            return
        task = asyncio.get_running_loop().create_task(self._process(email, kind, client))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def settled(self) -> None:
        """Wait until every request handed to the background is processed (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def _process(self, email: str, kind: str, client: str) -> None:
        try:
            try:
                view = await self.svc.get_account(email)
            except NotFound:
                return  # unknown accounts leave no record
            if view.kind != kind:
                return
            if not self.limits.request_account.allow(str(view.id)):  # any spelling, one bucket
                log.warning("reset requests rate-limited for one account")
                return
            if await asyncio.to_thread(self._request_txn, view, client):
                mail.wake(self.rt)
        except Exception:
            log.exception("processing a reset request failed")

    def _request_txn(self, view: AccountView, client: str) -> bool:
        org = self.rt.org_policy
        now = self.svc.clock.now()
        recovery_on = recovery_enabled(self.rt)
        actor = Actor(identity_key(view.username), via=f"{view.kind}-portal", client=client)
        with self.rt.store.write() as s:
            acc = s.get(Account, view.id, with_for_update=True)
            if acc is None:
                return False
            refusal = ""
            if acc.state != "active":
                refusal = "disabled"
            elif view.locked and view.lock_reason != "failures":
                refusal = f"locked ({view.lock_reason})"
            elif (
                acc.kind == "user"
                and org.mfa.enforce_for_portal
                and not view.mfa_enrolled
                and not org.mfa.allow_reset_before_enrolment
            ):
                refusal = NEEDS_ADMIN
                enqueue(
                    s,
                    sealer=self.rt.sealer,
                    now=now,
                    recipient=acc.email,
                    template="reset_needs_admin",
                    context={"username": acc.username},
                    account_id=acc.id,
                )
            if refusal:
                self._audit(s, actor, acc, "reset_request", outcome="refused", reason=refusal)
                return refusal == NEEDS_ADMIN  # only that refusal queued a mail
            self._send_links(
                s,
                acc,
                Purpose.SELF_RESET,
                org.reset.self_service_hours,
                actor,
                by_admin=False,
                mfa_enrolled=view.mfa_enrolled,
                recovery_on=recovery_on,
            )
            self._audit(s, actor, acc, "reset_request")
            return True

    def _send_links(
        self,
        s: Session,
        acc: Account,
        purpose: Purpose,
        hours: int,
        actor: Actor,
        *,
        by_admin: bool,
        mfa_enrolled: bool,
        recovery_on: bool,
    ) -> None:
        lifetime = timedelta(hours=hours)
        base = self.rt.settings.http.base_url
        targets = [(acc.email, "primary")]
        if (
            acc.kind == "user"
            and recovery_on
            and acc.recovery_email
            and acc.recovery_email_verified_at is not None
            and mfa_enrolled  # a reset from the recovery address requires MFA
        ):
            targets.append((acc.recovery_email, "recovery"))
        for number, (recipient, address) in enumerate(targets):
            token = self.svc.issue_token(
                acc.id,
                purpose,
                lifetime,
                actor=actor,
                data={"address": address, "mfa_required": address == "recovery"},
                session=s,
                revoke=RESET_PURPOSES if number == 0 else (),
            )
            enqueue(
                s,
                sealer=self.rt.sealer,
                now=self.svc.clock.now(),
                recipient=recipient,
                template="reset_link",
                context={
                    "username": acc.username,
                    "link": mail.link(base, LINK_PATHS[acc.kind], token),
                    "hours": hours,
                    "by_admin": by_admin,
                    "via_recovery": address == "recovery",
                    "role": "administrator" if acc.kind == "admin" else "user",
                },
                account_id=acc.id,
            )

    def _audit(self, s: Session, actor: Actor, acc: Account, action: str, **kw: Any) -> None:
        audit.record(
            s, self.svc.clock.now(), actor, action, account_id=acc.id, subject=acc.username, **kw
        )

    async def send_admin_reset(self, target: str, *, actor: Actor, kind: str | None = None) -> None:
        """Send Password Reset Email: a queued link valid 24 h (admin UI, API and CLI)."""
        view = await self.svc.get_account(target)
        if kind is not None and view.kind != kind:
            raise PolicyViolation("kind", f"{view.username} is not an account of kind {kind}.")
        if view.state != "active":
            raise PolicyViolation("state", "The account is disabled; enable it first.")
        self.limits.admin_target.check(str(view.id))
        await asyncio.to_thread(self._admin_txn, view, actor)
        mail.wake(self.rt)

    def _admin_txn(self, view: AccountView, actor: Actor) -> None:
        org = self.rt.org_policy
        recovery_on = recovery_enabled(self.rt)
        with self.rt.store.write() as s:
            acc = s.get(Account, view.id, with_for_update=True)
            if acc is None:
                raise NotFound(f"no account {view.username!r}")
            self._send_links(
                s,
                acc,
                Purpose.ADMIN_RESET,
                org.reset.admin_initiated_hours,
                actor,
                by_admin=True,
                mfa_enrolled=view.mfa_enrolled,
                recovery_on=recovery_on,
            )
            self._audit(s, actor, acc, "send_reset")

    # ------------------------------------------------------------ using a link
    def open_reset(self, token: str) -> ResetPage | None:
        """GET on a link: what the form needs, or None if the link is not valid; changes nothing."""
        row = self.svc.peek_token(token, RESET_PURPOSES)
        return None if row is None else self._page(row)

    def _page(self, row: Token) -> ResetPage | None:
        try:
            acc = self.svc.account_view(row.account_id)
        except NotFound:
            return None
        if acc.state != "active" or (acc.locked and acc.lock_reason != "failures"):
            return None
        rules = self.rt.org_policy.rules_for(acc.kind)
        needs_totp = acc.mfa_enrolled or bool((row.data or {}).get("mfa_required"))
        return ResetPage(
            kind=acc.kind,
            purpose=row.purpose,
            username=acc.username,
            email=acc.email,
            needs_tos=acc.kind == "admin",
            needs_totp=needs_totp,
            push_available=needs_totp and self.push.available(acc.id),
            min_length=rules.min_length,
            max_length=rules.max_length,
        )

    async def complete_reset(
        self,
        token: str,
        password: str,
        confirm: str,
        *,
        tos_accepted: bool,
        totp_code: str | None,
        client: str,
    ) -> None:
        """POST on a link: set the new password; raises PolicyViolation or AuthenticationFailed."""
        self.limits.complete_client.check(client or "-")
        row = await asyncio.to_thread(self.svc.peek_token, token, RESET_PURPOSES)
        page = None if row is None else await asyncio.to_thread(self._page, row)
        if row is None or page is None:
            raise PolicyViolation("token", GONE)
        if password != confirm:
            raise PolicyViolation("confirm", "The two passwords do not match.")
        if page.needs_tos and not tos_accepted:
            raise PolicyViolation("tos", "Accept the Terms of Service to continue.")
        rules = self.rt.org_policy.rules_for(page.kind)
        passwords.check(password, rules, page.username, page.email)  # before any code is used
        actor = Actor(identity_key(page.username), via=f"{page.kind}-reset", client=client)
        if page.needs_totp:
            code = (totp_code or "").strip()
            if code:
                await self.svc.verify_totp(row.account_id, code, actor=actor, in_reset=True)
            elif page.push_available:
                if not await self.push.approve(row.account_id, client=client):
                    raise AuthenticationFailed()
            else:
                raise PolicyViolation(
                    "totp", "Enter the six-digit code from your authenticator app."
                )
        await self.svc.change_password(
            row.account_id,
            password,
            actor=actor,
            consume_token=token,
            token_purposes=[row.purpose],
        )
        mail.wake(self.rt)
