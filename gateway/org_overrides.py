"""Organisation settings an admin changes at run time (UI/API), overriding ``org.toml``.

Only a few switches live here; each change is audited in the same transaction. Today:
``recovery_email.enabled`` (read through ``recovery_enabled``).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from gateway import audit
from gateway.audit import Actor
from gateway.store.models import Base

if TYPE_CHECKING:
    from gateway.runtime import Runtime

RECOVERY_ENABLED = "recovery_email.enabled"


class OrgOverride(Base):
    """One overridden organisation setting."""

    __tablename__ = "org_overrides"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column()
    updated_by: Mapped[str] = mapped_column(String(255))


def get_override(rt: Runtime, key: str) -> Any:
    """The overriding value for ``key``, or None when ``org.toml`` decides."""
    with rt.store.read() as s:
        row = s.get(OrgOverride, key)
        return None if row is None else row.value


def set_override(rt: Runtime, key: str, value: Any, *, actor: Actor) -> None:
    """Override ``key`` with ``value`` (None: back to ``org.toml``), with its audit row."""
    now = rt.service.clock.now()
    with rt.store.write() as s:
        row = s.get(OrgOverride, key)
        if value is None:
            if row is not None:
                s.delete(row)
        elif row is None:
            s.add(OrgOverride(key=key, value=value, updated_at=now, updated_by=actor.name))
        else:
            row.value, row.updated_at, row.updated_by = value, now, actor.name
        audit.record(
            s, now, actor, "org_setting", subject=key, details={"key": key, "value": value}
        )


def recovery_enabled(rt: Runtime) -> bool:
    """Whether users may use a recovery e-mail: the admin override, else ``org.toml``."""
    value = get_override(rt, RECOVERY_ENABLED)
    return bool(value) if value is not None else rt.org_policy.recovery_email.enabled


def set_recovery_enabled(rt: Runtime, enabled: bool | None, *, actor: Actor) -> None:
    """Turn the recovery e-mail feature on or off (None: follow ``org.toml`` again)."""
    set_override(rt, RECOVERY_ENABLED, enabled, actor=actor)
