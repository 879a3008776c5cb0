"""The propagation outbox: writes desired-state rows in the transaction that makes a change.

For every enabled resource that covers the account, the row for (account, resource) is
overwritten and its version bumped, so the newest change wins and bursts coalesce into one
delivery. A profile update (``UPDATED``, e.g. new groups) only adds rows for resources that now
cover the account, carrying its current state. A new password is sealed (AES-GCM, bound to
the row) only for resources that take passwords. Deleting an account deletes its rows. The
service's ``after_commit`` callbacks wake the dispatcher once the transaction is durable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from connectors.base import PasswordLimit
from connectors.registry import connector_class
from gateway.changes import Change, Trigger
from gateway.desired import sends_password
from gateway.errors import PolicyFileError
from gateway.pgnotify import notify
from gateway.policies import PolicySet, ResourcePolicy
from gateway.propagation_models import PENDING, DesiredRow, seal_purpose
from gateway.sealing import Sealer
from gateway.store.models import Account

if TYPE_CHECKING:
    from gateway.runtime import Runtime

IGNORED = frozenset({Trigger.CREATED})


def covering(policies: PolicySet, account: Account) -> list[ResourcePolicy]:
    """The enabled resources that cover ``account``."""
    groups = tuple(account.groups or ())
    attributes: dict[str, Any] = dict(account.attributes or {})
    return [r for r in policies.enabled() if r.covers_account(account.kind, groups, attributes)]


class OutboxListener:
    """A ChangeListener that keeps one desired-state row per (account, covering resource)."""

    def __init__(
        self,
        policies: Callable[[], PolicySet],
        sealer: Sealer,
        now: Callable[[], datetime],
    ) -> None:
        self._policies = policies
        self._sealer = sealer
        self._now = now

    def on_change(self, session: Session, account: Account, change: Change) -> None:
        """Record ``change`` for every covering resource, inside the caller's transaction."""
        if change.trigger in IGNORED:
            return
        if change.trigger is Trigger.DELETED:
            session.execute(delete(DesiredRow).where(DesiredRow.account_id == account.id))
            return
        resources = covering(self._policies(), account)
        if not resources:
            return
        session.flush()
        now = self._now()
        existing = {
            row.resource: row
            for row in session.scalars(
                select(DesiredRow)
                .where(
                    DesiredRow.account_id == account.id,
                    DesiredRow.resource.in_([r.name for r in resources]),
                )
                .with_for_update()  # a dispatcher completing meanwhile must see the new version
            )
        }
        for resource in resources:
            row = existing.get(resource.name)
            if row is not None and change.trigger is Trigger.UPDATED:
                continue  # nothing the target holds changed; only newly covered resources
            if row is None:
                row = DesiredRow(
                    account_id=account.id,
                    resource=resource.name,
                    version=0,
                    delivered_version=0,
                    expired=bool(account.must_change and not account.temporary),
                    password_version=0,
                    temporary=False,
                    owned=[],
                    attempts=0,
                    deliveries=0,
                    last_error="",
                )
                session.add(row)
            self._apply(row, account, change, resource, now)
        notify(session)

    def _apply(
        self,
        row: DesiredRow,
        account: Account,
        change: Change,
        resource: ResourcePolicy,
        now: datetime,
    ) -> None:
        row.version = (row.version or 0) + 1
        row.locked = account.locked_at is not None
        row.account_disabled = account.state != "active"
        if change.trigger is Trigger.EXPIRED:
            row.expired = True
        elif change.trigger is Trigger.PASSWORD_CHANGE:
            row.expired = False
            if change.password is not None and sends_password(resource.actions):
                row.sealed_password = self._sealer.seal(
                    change.password.get_secret_value(), seal_purpose(account.id, resource.name)
                )
                row.password_version = row.version
                row.password_set_at = now
                row.temporary = change.temporary
        row.status = PENDING
        row.attempts = 0
        row.next_try_at = now
        row.last_error = ""
        row.changed_at = now


class ResourceLimits:
    """A LimitsProvider: the password limits of every enabled resource covering an account."""

    def __init__(self, policies: Callable[[], PolicySet]) -> None:
        self._policies = policies

    def password_limits(self, account: Account) -> Sequence[PasswordLimit]:
        """Limits declared by the connector class of each covering resource."""
        limits: list[PasswordLimit] = []
        for resource in covering(self._policies(), account):
            if not sends_password(resource.actions):
                continue
            try:
                cls = connector_class(resource.connector)
            except PolicyFileError:
                continue
            per_resource = getattr(cls, "limits_for", None)
            if per_resource is not None:
                limits.extend(per_resource(resource.connection, resource.name))
            else:
                limits.extend(getattr(cls, "password_limits", ()))
        return limits


def attach(rt: Runtime) -> None:
    """Wire the outbox listener and the resource password limits into the service."""
    listener = OutboxListener(lambda: rt.policies, rt.sealer, rt.service.clock.now)
    rt.service.listeners.append(listener)
    rt.service.limits = ResourceLimits(lambda: rt.policies)
