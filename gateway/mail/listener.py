"""Queues the password notification inside the transaction of every password change.

One mail per change, never with the password: "Password reset was successful." when the change
used up a reset link in the same transaction, otherwise a change (or temporary password) notice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.changes import Change, Trigger
from gateway.mail.queue import enqueue, fmt_time
from gateway.store.models import Account, Token
from gateway.tokens import Purpose

if TYPE_CHECKING:
    from gateway.runtime import Runtime

RESET_PURPOSES = (Purpose.SELF_RESET.value, Purpose.ADMIN_RESET.value)


class MailListener:
    """ChangeListener that queues notification mails."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def on_change(self, session: Session, account: Account, change: Change) -> None:
        """Queue the notification for a password change."""
        if change.trigger is not Trigger.PASSWORD_CHANGE:
            return
        when = account.password_changed_at or self.rt.service.clock.now()
        by_reset = (
            session.scalars(
                select(Token.id).where(
                    Token.account_id == account.id,
                    Token.purpose.in_(RESET_PURPOSES),
                    Token.used_at == when,
                )
            ).first()
            is not None
        )
        enqueue(
            session,
            sealer=self.rt.sealer,
            now=self.rt.service.clock.now(),
            recipient=account.email,
            template="reset_success" if by_reset else "password_changed",
            context={
                "username": account.username,
                "when": fmt_time(when),
                "temporary": change.temporary,
            },
            account_id=account.id,
        )
