"""The desired-state table: one row per (account, resource), overwritten by each change.

``version`` counts changes; ``delivered_version`` is the last version a dispatcher brought the
target to (compare-and-set). ``sealed_password`` holds the pending password, AES-GCM sealed and
bound to the row, and is wiped after delivery, a permanent failure or the maximum age.
States: pending -> (retrying ->)* delivered | dead; any change makes the row pending again.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from gateway.store.models import Base

PENDING = "pending"
RETRYING = "retrying"
DELIVERED = "delivered"
DEAD = "dead"
DUE_STATUSES = (PENDING, RETRYING)


class DesiredRow(Base):
    """What one account should look like at one resource, and how delivery is going."""

    __tablename__ = "propagation_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    resource: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    delivered_version: Mapped[int] = mapped_column(Integer, default=0)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    expired: Mapped[bool] = mapped_column(Boolean, default=False)
    account_disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    sealed_password: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    password_version: Mapped[int] = mapped_column(Integer, default=0)
    password_set_at: Mapped[datetime | None] = mapped_column(nullable=True)
    temporary: Mapped[bool] = mapped_column(Boolean, default=False)
    owned: Mapped[list[str]] = mapped_column(JSON, default=list)
    target_key: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    deliveries: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[datetime] = mapped_column()
    last_error: Mapped[str] = mapped_column(Text, default="")
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(nullable=True)
    changed_at: Mapped[datetime] = mapped_column()
    delivered_at: Mapped[datetime | None] = mapped_column(nullable=True)

    __table_args__ = (
        UniqueConstraint("account_id", "resource", name="uq_propagation_state_account_resource"),
        Index("ix_propagation_state_due", "status", "next_try_at"),
        Index("ix_propagation_state_resource", "resource"),
    )


def seal_purpose(account_id: int, resource: str) -> str:
    """The AES-GCM associated data for a pending password: bound to its row."""
    return f"pending-password:{account_id}:{resource}"
