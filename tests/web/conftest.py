"""Web test fixtures: a live app on a free port over the test's runtime (SQLite, frozen clock)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Coroutine, Iterator
from email.message import Message
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from gateway.clock import FrozenClock
from gateway.runtime import Runtime
from tests.support.browser import LiveApp
from tests.support.postgres import free_port
from tests.support.runtime import DEFAULT_ORG, make_runtime, make_settings
from tests.support.smtp import SmtpServer, smtp_server

__all__ = ["smtp_server"]

T = TypeVar("T")
PASSWORD = "Correct-Horse-77x"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine of the core from a synchronous test."""
    return asyncio.run(coro)


def csrf_of(html: str) -> str:
    """The CSRF token of the first form in ``html``."""
    found = CSRF.search(html)
    assert found, "no CSRF field in the page"
    return found.group(1)


class Web:
    """A started live app, its runtime and an HTTP client bound to it."""

    def __init__(self, app: LiveApp, clock: FrozenClock, inbox: Inbox) -> None:
        self.app = app
        self.inbox = inbox
        self.rt: Runtime = app.rt
        self.url = app.url
        self.clock = clock
        self.client = httpx.Client(base_url=app.url, follow_redirects=False, timeout=30)
        self.clients = [self.client]

    def new_client(self, **kw: Any) -> httpx.Client:
        """Another independent browser-like client (closed with the app)."""
        c = httpx.Client(base_url=self.url, follow_redirects=False, timeout=30, **kw)
        self.clients.append(c)
        return c

    def close(self) -> None:
        """Close every client and stop the app."""
        for c in self.clients:
            c.close()
        self.app.stop()

    def form_post(
        self, path: str, data: dict[str, str], client: httpx.Client | None = None, **kw: Any
    ) -> httpx.Response:
        """GET ``path`` for its CSRF token, then POST ``data`` with it."""
        c = client or self.client
        page = c.get(path)
        return c.post(path, data={"csrf": csrf_of(page.text), **data}, **kw)

    def login(
        self,
        username: str,
        password: str = PASSWORD,
        *,
        portal: str = "",
        client: httpx.Client | None = None,
    ) -> httpx.Response:
        """Sign in through the login form (``portal`` '' or '/admin')."""
        return self.form_post(
            f"{portal}/login", {"username": username, "password": password}, client
        )


def _sender(rt: Runtime) -> Any:
    from gateway.mail import MailSender

    return MailSender(rt, poll_seconds=0.2)


@pytest.fixture
def make_web(
    tmp_path: Path, clock: FrozenClock, smtp_server: SmtpServer
) -> Iterator[Callable[..., Web]]:
    """Factory: a live app (mail to a real SMTP server) with trusted proxies, base_url, org.toml."""
    started: list[tuple[Web, Runtime]] = []

    def make(
        *,
        trusted_proxies: list[str] | None = None,
        base_url: str | None = None,
        org_toml: str = DEFAULT_ORG,
    ) -> Web:
        port = free_port()
        sub = tmp_path / f"web{len(started)}"
        http = {
            "listen": f"127.0.0.1:{port}",
            "base_url": base_url or f"http://127.0.0.1:{port}",
            "trusted_proxies": trusted_proxies or [],
        }
        settings = make_settings(sub, f"sqlite:///{sub / 'gateway.db'}", org_toml, http=http)
        mail = smtp_server.mail_settings(maildir=settings.mail.maildir)
        settings = settings.model_copy(update={"mail": mail})
        rt = make_runtime(settings, clock)
        inbox = Inbox(lambda: list(smtp_server.messages))
        web = Web(LiveApp(rt, port, (_sender,)).start(), clock, inbox)
        started.append((web, rt))
        return web

    yield make
    for web, rt in started:
        web.close()
        rt.close()


LINK = re.compile(r"https?://[^\s\"'<>]+")


class Inbox:
    """Mail delivered by the gateway's sender, read back from a real mail sink."""

    def __init__(self, fetch: Callable[[], list[Message]]) -> None:
        self._fetch = fetch

    def all(self) -> list[Message]:
        """Every message so far."""
        return self._fetch()

    def wait(
        self, to: str, subject: str = "", *, count: int = 1, timeout: float = 15
    ) -> list[Message]:
        """Wait until ``count`` messages for ``to`` (whose subject contains ``subject``) arrived."""
        deadline = time.monotonic() + timeout
        while True:
            found = [
                m
                for m in self.all()
                if to.lower() in str(m["To"]).lower() and subject in str(m["Subject"])
            ]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                seen = [(str(m["To"]), str(m["Subject"])) for m in self.all()]
                raise AssertionError(f"no mail {subject!r} to {to} within {timeout}s; saw {seen}")
            time.sleep(0.05)


def text_of(msg: Message) -> str:
    """The text/plain part of ``msg``."""
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    raise AssertionError("no text part")


def links_of(msg: Message) -> list[str]:
    """Every http(s) link in the text part of ``msg``."""
    return LINK.findall(text_of(msg))
