"""Many accounts with a pending password each, written straight through the outbox listener.

Faster than the service (no argon2id per account) for tests and benchmarks that need hundreds
or thousands of pending rows; an existing account of the same name is reused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pydantic import SecretStr
from sqlalchemy import select

from gateway.changes import Change, Trigger
from gateway.outbox import OutboxListener
from gateway.runtime import Runtime
from gateway.store.models import Account


def pending_passwords(rt: Runtime, names: Iterable[str], password: Callable[[str], str]) -> None:
    """One transaction: each ``name`` gets an account and a pending ``password(name)``."""
    listener = OutboxListener(lambda: rt.policies, rt.sealer, rt.service.clock.now)
    now = rt.service.clock.now()
    with rt.store.write() as s:
        for name in names:
            acc = s.scalars(select(Account).where(Account.username_key == name)).first()
            if acc is None:
                mail = f"{name}@example.org"
                acc = Account(
                    kind="user",
                    username=name,
                    username_key=name,
                    email=mail,
                    email_key=mail,
                    groups=[],
                    attributes={},
                    created_at=now,
                    updated_at=now,
                )
                s.add(acc)
                s.flush()
            change = Change(Trigger.PASSWORD_CHANGE, SecretStr(password(name)))
            listener.on_change(s, acc, change)
