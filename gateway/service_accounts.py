"""Account CRUD and the audit query."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any

from sqlalchemy import or_, select

from gateway import audit, expiry, passwords
from gateway.audit import Actor
from gateway.changes import Change, Trigger
from gateway.clock import aware
from gateway.errors import (
    Conflict,
    PolicyViolation,
)
from gateway.service_base import identity_key
from gateway.service_passwords import PasswordOps
from gateway.store.models import Account
from gateway.views import AccountView


class AccountOps(PasswordOps):
    """create/get/list/update/enable/disable/delete accounts, and the audit log."""

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
