"""A real SMTP server for tests (aiosmtpd over a TCP socket), optionally with TLS and AUTH.

``smtp_server`` (fixture): plain SMTP on 127.0.0.1 with ``.host``, ``.port``, ``.messages``
(parsed ``email.message.EmailMessage``s) and ``.mail_settings()`` for the gateway. Helpers:
``links(msg)`` lists the http(s) links of a message, ``text_of``/``html_of`` give its parts,
``server.wait_for(n)`` waits until ``n`` messages arrived. ``fail_next`` queues SMTP replies
(e.g. "451 4.3.0 try later") that the next DATA commands get instead of "250".
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import re
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from gateway.mail import MailSender
from gateway.runtime import Runtime
from gateway.settings import MailSettings
from tests.support.postgres import free_port
from tests.support.tlsca import TlsFiles, make_tls_files

LINK = re.compile(r"https?://[^\s\"'<>]+")


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        with self.server.lock:
            if self.server.fail_next:
                return self.server.fail_next.pop(0)
            raw = envelope.original_content or envelope.content
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            self.server.messages.append(msg)
            self.server.envelopes.append(list(envelope.rcpt_tos))
        return "250 2.0.0 OK"


class SmtpServer:
    """aiosmtpd in its own thread; ``tls`` is "none", "starttls" or "tls" (implicit)."""

    def __init__(
        self,
        directory: Path,
        *,
        tls: str = "none",
        username: str = "",
        password: str = "",
    ) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.tls = tls
        self.username = username
        self.password = password
        self.messages: list[EmailMessage] = []
        self.envelopes: list[list[str]] = []
        self.fail_next: list[str] = []
        self.auth_attempts = 0
        self.lock = threading.Lock()
        self.files: TlsFiles | None = None
        kwargs: dict[str, Any] = {}
        if tls != "none":
            self.files = make_tls_files(directory / "smtp-tls")
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(self.files.cert, self.files.key)
            if tls == "starttls":
                kwargs.update(tls_context=ctx, require_starttls=True)
            else:
                kwargs.update(ssl_context=ctx)
        if username:
            # implicit TLS: the whole session is encrypted, but aiosmtpd only tracks STARTTLS,
            # so there AUTH is offered without being required (a wrong login still fails)
            starttls = tls == "starttls"
            kwargs.update(
                authenticator=self._authenticate,
                auth_required=starttls,
                auth_require_tls=starttls,
            )
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port, **kwargs)

    def _authenticate(
        self, _server: Any, _session: Any, _envelope: Any, _mechanism: str, data: Any
    ) -> AuthResult:
        self.auth_attempts += 1
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == self.username
            and data.password.decode() == self.password
        )
        return AuthResult(success=ok, handled=False)

    def start(self) -> None:
        """Listen on the socket."""
        self._controller.start()

    def stop(self) -> None:
        """Close the socket and the server thread."""
        self._controller.stop()

    def mail_settings(self, **overrides: Any) -> MailSettings:
        """Gateway mail settings pointing at this server."""
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "tls": self.tls,
            "sender": "gateway@example.org",
        }
        values.update(overrides)
        return MailSettings(**values)

    def client_context(self) -> ssl.SSLContext:
        """A client SSL context trusting this server's test CA."""
        assert self.files is not None
        return ssl.create_default_context(cafile=str(self.files.ca))

    def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        """Wait until ``count`` messages arrived; returns all of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.02)
        raise AssertionError(f"expected {count} messages, got {len(self.messages)}")

    def to(self, address: str) -> list[EmailMessage]:
        """Messages addressed to ``address``."""
        return [m for m in self.messages if str(m["To"]).lower() == address.lower()]


def text_of(msg: EmailMessage) -> str:
    """The plain-text part."""
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def html_of(msg: EmailMessage) -> str:
    """The HTML part."""
    part = msg.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def links(msg: EmailMessage) -> list[str]:
    """The http(s) links in the plain-text part, in order."""
    return LINK.findall(text_of(msg))


def token_of(link: str) -> str:
    """The token at the end of a reset or verification link."""
    return link.rstrip("/").rsplit("/", 1)[1]


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[SmtpServer]:
    """A plain SMTP server on a free port (``tls="none"``, no AUTH)."""
    server = SmtpServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def sending(rt: Runtime, poll_seconds: float = 0.1) -> AsyncIterator[MailSender]:
    """Run the daemon's mail sender component for the duration of the block."""
    sender = MailSender(rt, poll_seconds=poll_seconds)
    await sender.start()
    try:
        yield sender
    finally:
        flows = rt.extras.get("reset_tasks")
        if flows:
            await asyncio.gather(*list(flows), return_exceptions=True)
        await sender.stop()
