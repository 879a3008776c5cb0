"""Live RADIUS sessions per account and NAS, recorded from accounting (Start, Interim, Stop).

A session is keyed by the NAS source address and its Acct-Session-Id. ``account_key`` is the
account's username key (resolved at Start from User-Name, which may be the e-mail), so the
connector can find every live session of an account when it must be disconnected.
The listener binds the store once (``bind``); the connector reads it through ``bound``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import DateTime, Index, Integer, String, UniqueConstraint, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from gateway.errors import TransientError
from gateway.store.engine import Store
from gateway.store.models import Account, Base

_bound: list[Store] = []


class RadiusSession(Base):
    """One accounting session reported by a NAS."""

    __tablename__ = "radius_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource: Mapped[str] = mapped_column(String(64))
    nas_address: Mapped[str] = mapped_column(String(64))
    acct_session_id: Mapped[str] = mapped_column(String(253))
    account_key: Mapped[str] = mapped_column(String(320))
    username: Mapped[str] = mapped_column(String(253))
    nas_ip: Mapped[str] = mapped_column(String(64), default="")
    nas_identifier: Mapped[str] = mapped_column(String(253), default="")
    framed_ip: Mapped[str] = mapped_column(String(64), default="")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    end_reason: Mapped[str] = mapped_column(String(32), default="")

    __table_args__ = (
        UniqueConstraint("nas_address", "acct_session_id", name="uq_radius_sessions_nas_address"),
        Index("ix_radius_sessions_account_key", "account_key", "ended_at"),
    )


@dataclass(frozen=True)
class LiveSession:
    """What the disconnect sender needs of a live session."""

    id: int
    nas_address: str
    acct_session_id: str
    username: str
    nas_ip: str
    nas_identifier: str


@dataclass(frozen=True)
class Report:
    """One accounting record as the listener decoded it."""

    resource: str
    nas_address: str
    status: str  # start | interim | stop | on | off
    acct_session_id: str
    username: str
    nas_ip: str = ""
    nas_identifier: str = ""
    framed_ip: str = ""


def bind(store: Store) -> None:
    """Make ``store`` the one the connector uses (called when the runtime is wired)."""
    _bound[:] = [store]


def bound() -> Store:
    """The bound store; a transient error until the runtime has wired one."""
    if not _bound:
        raise TransientError("the RADIUS session store is not ready")
    return _bound[0]


def _account_key(store_session: Session, username: str) -> str:
    from gateway.service import identity_key

    key = identity_key(username)
    found = store_session.scalars(
        select(Account.username_key).where(
            or_(Account.username_key == key, Account.email_key == key)
        )
    ).first()
    return str(found) if found else key


def record(store: Store, report: Report, now: datetime) -> None:
    """Apply one accounting record (durable for Start/Stop/On/Off, relaxed for Interim)."""
    with store.write(relaxed=report.status == "interim") as s:
        if report.status in ("on", "off"):
            s.execute(
                update(RadiusSession)
                .where(
                    RadiusSession.nas_address == report.nas_address,
                    RadiusSession.ended_at.is_(None),
                )
                .values(ended_at=now, end_reason=f"accounting-{report.status}")
            )
            return
        row = s.scalars(
            select(RadiusSession)
            .where(
                RadiusSession.nas_address == report.nas_address,
                RadiusSession.acct_session_id == report.acct_session_id,
            )
            .with_for_update()
        ).first()
        if row is None:
            row = RadiusSession(
                resource=report.resource,
                nas_address=report.nas_address,
                acct_session_id=report.acct_session_id,
                account_key=_account_key(s, report.username),
                username=report.username,
                started_at=now,
                end_reason="",
            )
            s.add(row)
        row.nas_ip = report.nas_ip or row.nas_ip or ""
        row.nas_identifier = report.nas_identifier or row.nas_identifier or ""
        row.framed_ip = report.framed_ip or row.framed_ip or ""
        row.updated_at = now
        if report.status == "stop":
            row.ended_at = now
            row.end_reason = "stop"
        elif row.end_reason != "disconnect-ack":
            row.ended_at = None


def live(store: Store, resource: str, account_key: str) -> list[LiveSession]:
    """Every live session of an account at ``resource``."""
    with store.read() as s:
        rows = s.scalars(
            select(RadiusSession).where(
                RadiusSession.resource == resource,
                RadiusSession.account_key == account_key,
                RadiusSession.ended_at.is_(None),
            )
        ).all()
        return [
            LiveSession(
                r.id, r.nas_address, r.acct_session_id, r.username, r.nas_ip, r.nas_identifier
            )
            for r in rows
        ]


def end(store: Store, session_id: int, reason: str, now: datetime) -> None:
    """Mark a session ended (the NAS acknowledged a Disconnect-Request, or knew no such session)."""
    with store.write() as s:
        s.execute(
            update(RadiusSession)
            .where(RadiusSession.id == session_id, RadiusSession.ended_at.is_(None))
            .values(ended_at=now, end_reason=reason)
        )
