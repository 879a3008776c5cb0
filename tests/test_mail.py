"""Mail queue, notification listener and sender against a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import mailbox
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.audit import Actor
from gateway.clock import FrozenClock
from gateway.errors import PolicyViolation
from gateway.mail import MailSender
from gateway.mail.models import MailMessage
from gateway.mail.queue import enqueue, open_body
from gateway.mail.transport import SmtpTransport, transport_for
from gateway.runtime import Runtime
from gateway.settings import MailSettings
from tests.support.postgres import Cluster, free_port
from tests.support.runtime import make_runtime, make_settings
from tests.support.smtp import SmtpServer, html_of, text_of

ADMIN = Actor("test-admin")
PASSWORD = "Correct-Horse-77x"
NEW_PASSWORD = "Battery-Staple-93q"


def _runtime(tmp: Path, mail: MailSettings | None, clock: FrozenClock) -> Runtime:
    settings = make_settings(tmp, f"sqlite:///{tmp / 'gateway.db'}")
    if mail is not None:
        settings = settings.model_copy(update={"mail": mail})
    return make_runtime(settings, clock)


@pytest.fixture
def plain_server(tmp_path: Path) -> Iterator[SmtpServer]:
    """Plain SMTP (no TLS, no AUTH)."""
    server = SmtpServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def starttls_server(tmp_path: Path) -> Iterator[SmtpServer]:
    """SMTP with mandatory STARTTLS and AUTH."""
    server = SmtpServer(tmp_path, tls="starttls", username="gateway", password="s3cret-smtp")
    server.start()
    yield server
    server.stop()


def _password_file(tmp: Path, secret: str) -> Path:
    path = tmp / "smtp-password"
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return path


def _rows(rt: Runtime) -> list[MailMessage]:
    with rt.store.read() as s:
        return list(s.scalars(select(MailMessage).order_by(MailMessage.id)))


async def _add(rt: Runtime, name: str = "alice") -> int:
    view, _ = await rt.service.create_account(
        kind="user", username=name, email=f"{name}@example.org", actor=ADMIN, password=PASSWORD
    )
    return view.id


def test_starttls_auth_delivery_by_the_sender_component(
    tmp_path: Path, starttls_server: SmtpServer, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the production path: default SSL context, trusting the test CA through SSL_CERT_FILE
    assert starttls_server.files is not None
    monkeypatch.setenv("SSL_CERT_FILE", str(starttls_server.files.ca))
    mail = starttls_server.mail_settings(
        username="gateway", password_file=_password_file(tmp_path, "s3cret-smtp")
    )
    rt = _runtime(tmp_path, mail, clock)

    async def go() -> None:
        sender = MailSender(rt, poll_seconds=0.2)
        await sender.start()
        try:
            account_id = await _add(rt)
            await rt.service.change_password(account_id, NEW_PASSWORD, actor=ADMIN)
            await asyncio.to_thread(starttls_server.wait_for, 2)
        finally:
            await sender.stop()

    try:
        asyncio.run(go())
        subjects = [m["Subject"] for m in starttls_server.messages]
        assert subjects == ["Your password was changed", "Your password was changed"]
        assert starttls_server.auth_attempts == 2  # one SMTP session per message
        for msg in starttls_server.messages:
            raw = msg.as_string()
            assert PASSWORD not in raw and NEW_PASSWORD not in raw
            assert "was changed" in text_of(msg) and "<p>" in html_of(msg)
            assert msg["To"] == "alice@example.org" and msg["From"] == "gateway@example.org"
        rows = _rows(rt)
        assert [r.status for r in rows] == ["sent", "sent"]
        assert all(r.sealed_body is None for r in rows)  # wiped after delivery
    finally:
        rt.close()


def test_implicit_tls_and_wrong_credentials_retry(tmp_path: Path, clock: FrozenClock) -> None:
    server = SmtpServer(tmp_path, tls="tls", username="gateway", password="right-one")
    server.start()
    wrong = server.mail_settings(
        username="gateway", password_file=_password_file(tmp_path, "wrong-one")
    )
    rt = _runtime(tmp_path, wrong, clock)

    async def go() -> None:
        await _add(rt)
        bad = MailSender(rt, transport=SmtpTransport(wrong, server.client_context()))
        assert await bad.run_once() == 1
        row = _rows(rt)[0]
        assert row.status == "pending" and row.attempts == 1
        assert "authentication" in row.last_error and "wrong-one" not in row.last_error
        assert await bad.run_once() == 0  # not due before its backoff
        clock.advance(timedelta(minutes=2))
        right = wrong.model_copy(update={"password_file": _password_file(tmp_path, "right-one")})
        good = MailSender(rt, transport=SmtpTransport(right, server.client_context()))
        assert await good.run_once() == 1

    try:
        asyncio.run(go())
        assert len(server.messages) == 1
        assert _rows(rt)[0].status == "sent"
    finally:
        server.stop()
        rt.close()


def test_transient_4xx_retries_and_5xx_gives_up(
    tmp_path: Path, plain_server: SmtpServer, clock: FrozenClock
) -> None:
    rt = _runtime(tmp_path, plain_server.mail_settings(), clock)

    async def go() -> None:
        sender = MailSender(rt, max_attempts=3)
        await _add(rt)
        plain_server.fail_next.append("451 4.3.0 try again later")
        assert await sender.run_once() == 1
        assert _rows(rt)[0].status == "pending"
        clock.advance(timedelta(seconds=31))
        assert await sender.run_once() == 1
        assert _rows(rt)[0].status == "sent"
        await _add(rt, "bob")
        plain_server.fail_next.append("554 5.7.1 rejected")
        assert await sender.run_once() == 1
        bob = _rows(rt)[1]
        assert bob.status == "failed" and bob.sealed_body is None and "554" in bob.last_error

    try:
        asyncio.run(go())
        assert [m["To"] for m in plain_server.messages] == ["alice@example.org"]
    finally:
        rt.close()


def test_max_attempts_then_failed(tmp_path: Path, clock: FrozenClock) -> None:
    dead = MailSettings(host="127.0.0.1", port=free_port(), tls="none")  # nobody listens
    rt = _runtime(tmp_path, dead, clock)

    async def go() -> None:
        sender = MailSender(rt, max_attempts=2)
        await _add(rt)
        assert await sender.run_once() == 1
        clock.advance(timedelta(hours=1))
        assert await sender.run_once() == 1
        clock.advance(timedelta(hours=1))
        assert await sender.run_once() == 0

    try:
        asyncio.run(go())
        row = _rows(rt)[0]
        assert row.status == "failed" and row.attempts == 2 and row.sealed_body is None
    finally:
        rt.close()


def test_maildir_without_smtp_host(tmp_path: Path, clock: FrozenClock) -> None:
    rt = _runtime(tmp_path, None, clock)
    assert not rt.settings.mail.host

    async def go() -> None:
        await _add(rt)
        await MailSender(rt).run_once()

    try:
        asyncio.run(go())
        box = mailbox.Maildir(str(rt.settings.mail.maildir), create=False)
        msgs = list(box)
        assert len(msgs) == 1 and msgs[0]["Subject"] == "Your password was changed"
        assert PASSWORD not in msgs[0].as_string()
        assert type(transport_for(rt.settings.mail)).__name__ == "MaildirTransport"
    finally:
        rt.close()


def test_queued_in_the_change_transaction_and_sealed(tmp_path: Path, clock: FrozenClock) -> None:
    rt = _runtime(tmp_path, None, clock)

    async def go() -> None:
        account_id = await _add(rt)
        assert len(_rows(rt)) == 1
        with pytest.raises(PolicyViolation):  # refused change: no change, no mail
            await rt.service.change_password(account_id, "short", actor=ADMIN)
        assert len(_rows(rt)) == 1
        generated = await rt.service.set_temporary_password(account_id, actor=ADMIN)
        assert generated
        rows = _rows(rt)
        assert len(rows) == 2 and rows[1].subject.startswith("A temporary password")
        assert rows[1].sealed_body is not None
        assert b"temporary" not in rows[1].sealed_body  # sealed at rest
        body = open_body(rt.sealer, rows[1].sealed_body)
        assert generated not in body.text and generated not in body.html

    try:
        asyncio.run(go())
    finally:
        rt.close()


def test_lease_keeps_a_claimed_row_from_a_second_sender(tmp_path: Path, clock: FrozenClock) -> None:
    rt = _runtime(tmp_path, None, clock)

    async def go() -> None:
        await _add(rt)
        first = MailSender(rt, lease_seconds=60)
        claims = await asyncio.to_thread(first._claim)  # a node died after claiming
        assert len(claims) == 1
        second = MailSender(rt)
        assert await second.run_once() == 0
        clock.advance(timedelta(seconds=61))
        assert await second.run_once() == 1

    try:
        asyncio.run(go())
        assert _rows(rt)[0].status == "sent"
    finally:
        rt.close()


def test_wired_into_runtime_and_daemon(tmp_path: Path, clock: FrozenClock) -> None:
    from gateway import daemon, mail

    rt = _runtime(tmp_path, None, clock)
    try:
        assert any(isinstance(x, mail.MailListener) for x in rt.service.listeners)
        assert mail.sender_component in daemon.COMPONENTS
        assert isinstance(mail.sender_component(rt), MailSender)
    finally:
        rt.close()


@pytest.mark.postgres
def test_two_nodes_share_the_queue_on_postgres(
    tmp_path: Path, pg_cluster: Cluster, plain_server: SmtpServer, clock: FrozenClock
) -> None:
    url = pg_cluster.new_database()
    settings = make_settings(tmp_path, url).model_copy(
        update={"mail": plain_server.mail_settings()}
    )
    node_a, node_b = make_runtime(settings, clock), make_runtime(settings, clock)
    with node_a.store.write() as s:
        for i in range(12):
            enqueue(
                s,
                sealer=node_a.sealer,
                now=clock.now(),
                recipient=f"user{i}@example.org",
                template="recovery_verified",
                context={"username": f"user{i}", "when": "now"},
            )

    async def drain(sender: MailSender) -> int:
        total = 0
        while handled := await sender.run_once():
            total += handled
        return total

    async def go() -> list[int]:
        a, b = MailSender(node_a, batch=2), MailSender(node_b, batch=2)
        return list(await asyncio.gather(drain(a), drain(b)))

    try:
        counts = asyncio.run(go())
        assert sum(counts) == 12
        recipients = sorted(str(m["To"]) for m in plain_server.messages)
        assert recipients == sorted(f"user{i}@example.org" for i in range(12))  # each once
        assert {r.status for r in _rows(node_a)} == {"sent"}
    finally:
        node_a.close()
        node_b.close()


def test_the_running_daemon_delivers(
    tmp_path: Path, plain_server: SmtpServer, clock: FrozenClock
) -> None:
    from gateway import daemon

    port = free_port()
    settings = make_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'gateway.db'}",
        http={"listen": f"127.0.0.1:{port}", "base_url": f"http://127.0.0.1:{port}"},
    ).model_copy(update={"mail": plain_server.mail_settings()})
    rt = make_runtime(settings, clock)

    async def go() -> None:
        stop = asyncio.Event()
        served = asyncio.create_task(daemon.serve(rt, stop=stop))
        try:
            await _add(rt)
            msgs = await asyncio.to_thread(plain_server.wait_for, 1)
            assert msgs[0]["Subject"] == "Your password was changed"
        finally:
            stop.set()
            await asyncio.wait_for(served, timeout=30)

    asyncio.run(go())  # serve() closes the runtime
    assert plain_server.messages[0]["To"] == "alice@example.org"
