"""The mail sender component: delivers queued messages after commit, with retries.

Loop: claim due rows under a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several nodes
share one queue), deliver each outside the transaction, then mark it sent (body wiped) or
schedule a retry with capped exponential backoff and jitter; after ``max_attempts`` the row is
marked failed (body wiped). A lease that runs out (a node died mid-send) lets another node take
the row: delivery is at least once. Commits of the service wake the loop; it also polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING

from sqlalchemy import or_, select

from gateway.mail.models import MailMessage
from gateway.mail.queue import open_body
from gateway.mail.transport import PermanentMailError, TransientMailError, Transport, transport_for

if TYPE_CHECKING:
    from gateway.runtime import Runtime

log = logging.getLogger("gateway.mail")

BASE_BACKOFF = 30.0
MAX_BACKOFF = 1800.0


def backoff(attempts: int) -> timedelta:
    """Delay before the next try after ``attempts`` failed tries (capped, with jitter)."""
    delay = min(MAX_BACKOFF, BASE_BACKOFF * 2 ** max(0, attempts - 1))
    return timedelta(seconds=delay * random.uniform(0.8, 1.0))


@dataclass(frozen=True)
class _Claim:
    id: int
    recipient: str
    subject: str
    sealed_body: bytes | None
    attempts: int
    created_at: datetime


class MailSender:
    """Component that drains the mail queue."""

    name = "mail"

    def __init__(
        self,
        rt: Runtime,
        *,
        transport: Transport | None = None,
        poll_seconds: float = 5.0,
        lease_seconds: float = 120.0,
        max_attempts: int = 8,
        batch: int = 20,
    ) -> None:
        self.rt = rt
        self.transport = transport or transport_for(rt.settings.mail)
        self.poll_seconds = poll_seconds
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts = max_attempts
        self.batch = batch
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False

    # ------------------------------------------------------------ component
    async def start(self) -> None:
        """Start the delivery loop and listen for commits."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        self.rt.service.after_commit.append(self.poke)
        self._task = asyncio.create_task(self._run(), name="mail-sender")

    async def stop(self) -> None:
        """Finish the message in hand and stop."""
        self._stopping = True
        if self.poke in self.rt.service.after_commit:
            self.rt.service.after_commit.remove(self.poke)
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=35)
            except TimeoutError:
                self._task.cancel()
            self._task = None

    def poke(self) -> None:
        """Wake the loop (safe from any thread)."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop shut down meanwhile
            loop.call_soon_threadsafe(wake.set)

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            self._wake.clear()
            try:
                handled = await self.run_once()
            except Exception:
                log.exception("mail queue pass failed")
                handled = 0
            if handled or self._stopping:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)

    # ------------------------------------------------------------ one pass
    async def run_once(self) -> int:
        """Claim and deliver the due messages once; returns how many were tried."""
        claims = await asyncio.to_thread(self._claim)
        for claim in claims:
            error: Exception | None = None
            try:
                message = self._message(claim)
                await asyncio.to_thread(self.transport.send, message)
            except (TransientMailError, PermanentMailError) as exc:
                error = exc
            except Exception as exc:  # a broken row must not stop the queue
                log.exception("mail %d could not be built", claim.id)
                error = PermanentMailError(type(exc).__name__)
            await asyncio.to_thread(self._finish, claim, error)
        return len(claims)

    def _claim(self) -> list[_Claim]:
        now = self.rt.service.clock.now()
        with self.rt.store.write() as s:
            rows = s.scalars(
                select(MailMessage)
                .where(
                    MailMessage.status == "pending",
                    MailMessage.next_attempt_at <= now,
                    or_(MailMessage.lease_until.is_(None), MailMessage.lease_until <= now),
                )
                .order_by(MailMessage.id)
                .limit(self.batch)
                .with_for_update(skip_locked=True)
            ).all()
            claims = []
            for row in rows:
                row.lease_until = now + self.lease
                row.attempts += 1
                claims.append(
                    _Claim(
                        row.id,
                        row.recipient,
                        row.subject,
                        row.sealed_body,
                        row.attempts,
                        row.created_at,
                    )
                )
            return claims

    def _message(self, claim: _Claim) -> EmailMessage:
        if claim.sealed_body is None:
            raise PermanentMailError("body missing")
        body = open_body(self.rt.sealer, claim.sealed_body)
        msg = EmailMessage()
        msg["From"] = self.rt.settings.mail.sender
        msg["To"] = claim.recipient
        msg["Subject"] = claim.subject
        msg["Date"] = format_datetime(claim.created_at)
        domain = self.rt.settings.mail.sender.rpartition("@")[2] or "localhost"
        msg["Message-ID"] = make_msgid(domain=domain)
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(body.text)
        msg.add_alternative(body.html, subtype="html")
        return msg

    def _finish(self, claim: _Claim, error: Exception | None) -> None:
        now = self.rt.service.clock.now()
        with self.rt.store.write() as s:
            row = s.get(MailMessage, claim.id, with_for_update=True)
            if row is None:
                return
            row.lease_until = None
            if error is None:
                row.status, row.sent_at, row.sealed_body, row.last_error = "sent", now, None, ""
                log.info("mail %d sent", claim.id)
                return
            row.last_error = str(error)[:500]
            if isinstance(error, PermanentMailError) or claim.attempts >= self.max_attempts:
                row.status, row.sealed_body = "failed", None
                log.error("mail %d given up: %s", claim.id, row.last_error)
            else:
                row.next_attempt_at = now + backoff(claim.attempts)
                log.warning("mail %d deferred: %s", claim.id, row.last_error)
