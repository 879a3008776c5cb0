"""Reset flows end to end: real SMTP (aiosmtpd) fed by the daemon's mail sender, frozen clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.audit import Actor
from gateway.clock import FrozenClock
from gateway.errors import AuthenticationFailed, PolicyViolation
from gateway.mail.models import MailMessage
from gateway.mfa import code_at
from gateway.resets import ResetFlows, set_recovery_enabled
from gateway.runtime import Runtime
from gateway.store.models import AuditEntry
from tests.support.runtime import DEFAULT_ORG, make_runtime, make_settings
from tests.support.smtp import SmtpServer, links, sending, text_of, token_of

ADMIN = Actor("test-admin", via="test")
OLD = "Correct-Horse-77x"
NEW = "Battery-Staple-93q"
BASE = "https://gateway.example.org"
SECRETS = [OLD, NEW]


@dataclass
class Env:
    """One runtime wired to one SMTP server."""

    rt: Runtime
    server: SmtpServer
    clock: FrozenClock

    @property
    def flows(self) -> ResetFlows:
        return ResetFlows(self.rt)

    def run(self, fn: Callable[[], Awaitable[None]]) -> None:
        async def main() -> None:
            async with sending(self.rt):
                await fn()

        asyncio.run(main())
        for msg in self.server.messages:  # no mail ever carries a password
            raw = msg.as_string()
            assert not any(secret in raw for secret in SECRETS)

    async def mails(self, count: int) -> list[EmailMessage]:
        await self.flows.settled()
        return await asyncio.to_thread(self.server.wait_for, count)

    async def add(self, name: str, kind: str = "user", password: str = OLD) -> int:
        view, _ = await self.rt.service.create_account(
            kind=kind, username=name, email=f"{name}@example.org", actor=ADMIN, password=password
        )
        return view.id

    async def enrol(self, account_id: int) -> str:
        seed = await self.rt.service.enrol_totp(account_id, actor=ADMIN)
        await self.rt.service.verify_totp(
            account_id, code_at(seed, self.clock.now()), actor=ADMIN, confirm=True
        )
        return seed

    def code(self, seed: str) -> str:
        """A fresh code (the clock moves one step so each code is new)."""
        self.clock.advance(timedelta(seconds=30))
        return code_at(seed, self.clock.now())

    def queued(self) -> int:
        with self.rt.store.read() as s:
            return int(s.scalar(select(func.count()).select_from(MailMessage)) or 0)


def _env(tmp: Path, url: str, clock: FrozenClock, org: str = DEFAULT_ORG) -> Iterator[Env]:
    server = SmtpServer(tmp)
    server.start()
    settings = make_settings(tmp, url, org, http={"base_url": BASE})
    settings = settings.model_copy(update={"mail": server.mail_settings()})
    rt = make_runtime(settings, clock)
    try:
        yield Env(rt, server, clock)
    finally:
        rt.close()
        server.stop()


@pytest.fixture
def env(tmp_path: Path, sqlite_url: str, clock: FrozenClock) -> Iterator[Env]:
    """SQLite runtime + SMTP server."""
    yield from _env(tmp_path, sqlite_url, clock)


@pytest.fixture
def env_both(tmp_path: Path, db_url: str, clock: FrozenClock) -> Iterator[Env]:
    """Runtime on each backend + SMTP server."""
    yield from _env(tmp_path, db_url, clock)


def _wrong(code: str) -> str:
    return f"{(int(code) + 500_000) % 1_000_000:06d}"


async def _link(env: Env, count: int, to: str) -> str:
    msgs = await env.mails(count)
    mine = [m for m in msgs if m["To"] == to]
    return links(mine[-1])[0]


def test_admin_self_reset_with_tos_and_totp(env_both: Env) -> None:
    env = env_both

    async def go() -> None:
        admin = await env.add("root", kind="admin")
        seed = await env.enrol(admin)
        await env.flows.request_reset("Root@Example.org", kind="admin", client="10.0.0.1")
        msgs = await env.mails(2)
        reset = msgs[-1]
        assert reset["Subject"] == "Password Reset" and reset["To"] == "root@example.org"
        link = links(reset)[0]
        assert link.startswith(f"{BASE}/admin/reset/") and "1 hour" in text_of(reset)
        token = token_of(link)
        page = env.flows.open_reset(token)
        assert page is not None and page.kind == "admin" and page.purpose == "self_reset"
        assert page.needs_tos and page.needs_totp and not page.push_available
        assert (page.min_length, page.max_length) == (12, 64)
        with pytest.raises(PolicyViolation) as tos:
            await env.flows.complete_reset(
                token, NEW, NEW, tos_accepted=False, totp_code=env.code(seed), client="c"
            )
        assert tos.value.rule == "tos"
        with pytest.raises(PolicyViolation) as ident:
            bad = "my-root-password-1"
            await env.flows.complete_reset(
                token, bad, bad, tos_accepted=True, totp_code=env.code(seed), client="c"
            )
        assert ident.value.rule == "password"
        with pytest.raises(PolicyViolation):
            await env.flows.complete_reset(
                token, NEW, NEW + "x", tos_accepted=True, totp_code=None, client="c"
            )
        await env.flows.complete_reset(
            token, NEW, NEW, tos_accepted=True, totp_code=env.code(seed), client="c"
        )
        done = await env.mails(3)
        assert done[-1]["Subject"] == "Password reset was successful."
        assert "Password reset was successful." in text_of(done[-1])
        assert (await env.rt.service.authenticate("root", NEW, via="test")).kind == "admin"
        with pytest.raises(AuthenticationFailed):
            await env.rt.service.authenticate("root", OLD, via="test")
        assert env.flows.open_reset(token) is None  # single use
        with pytest.raises(PolicyViolation) as again:
            await env.flows.complete_reset(
                token, NEW + "z", NEW + "z", tos_accepted=True, totp_code=env.code(seed), client="c"
            )
        assert again.value.rule == "token"

    env.run(go)


def test_admin_totp_five_attempts_then_locked(env: Env) -> None:
    async def go() -> None:
        admin = await env.add("root", kind="admin")
        seed = await env.enrol(admin)
        await env.flows.request_reset("root@example.org", kind="admin", client="c")
        token = token_of(await _link(env, 2, "root@example.org"))
        for attempt in range(1, 6):
            with pytest.raises(AuthenticationFailed):
                await env.flows.complete_reset(
                    token, NEW, NEW, tos_accepted=True, totp_code=_wrong(env.code(seed)), client="c"
                )
            view = await env.rt.service.get_account(admin)
            assert view.locked is (attempt == 5)
        assert view.lock_reason == "mfa"
        assert env.flows.open_reset(token) is None  # the lock revoked the link
        with pytest.raises(PolicyViolation):
            await env.flows.complete_reset(
                token, NEW, NEW, tos_accepted=True, totp_code=env.code(seed), client="c"
            )

    env.run(go)


def test_admin_resets_another_admin_24h(env_both: Env) -> None:
    env = env_both

    async def go() -> None:
        await env.add("boss", kind="admin")
        await env.add("other", kind="admin")
        await env.flows.send_admin_reset("other", actor=Actor("boss", via="admin-ui"))
        msgs = await env.mails(3)
        assert msgs[-1]["To"] == "other@example.org" and msgs[-1]["Subject"] == "Password Reset"
        assert "administrator asked" in text_of(msgs[-1]) and "24 hours" in text_of(msgs[-1])
        link = links(msgs[-1])[0]
        assert link.startswith(f"{BASE}/admin/reset/")
        page = env.flows.open_reset(token_of(link))
        assert page is not None and page.purpose == "admin_reset" and not page.needs_totp
        env.clock.advance(timedelta(hours=24, seconds=-1))
        await env.flows.complete_reset(
            token_of(link), NEW, NEW, tos_accepted=True, totp_code=None, client="c"
        )
        await env.rt.service.authenticate("other", NEW, via="test")

    env.run(go)


def test_user_self_reset_with_totp_clears_failure_lock(env: Env) -> None:
    async def go() -> None:
        user = await env.add("alice")
        seed = await env.enrol(user)
        for _ in range(5):
            with pytest.raises(AuthenticationFailed):
                await env.rt.service.authenticate("alice", "wrong-password-x", via="test")
        assert (await env.rt.service.get_account(user)).locked
        await env.flows.request_reset("alice@example.org", kind="user", client="c")
        link = await _link(env, 2, "alice@example.org")
        assert link.startswith(f"{BASE}/reset/")
        page = env.flows.open_reset(token_of(link))
        assert page is not None and page.needs_totp and not page.needs_tos
        with pytest.raises(PolicyViolation) as missing:
            await env.flows.complete_reset(
                token_of(link), NEW, NEW, tos_accepted=False, totp_code=None, client="c"
            )
        assert missing.value.rule == "totp"
        used = code_at(seed, env.clock.now())  # accepted once already, at enrolment
        with pytest.raises(AuthenticationFailed):
            await env.flows.complete_reset(
                token_of(link), NEW, NEW, tos_accepted=False, totp_code=used, client="c"
            )
        await env.flows.complete_reset(
            token_of(link), NEW, NEW, tos_accepted=False, totp_code=env.code(seed), client="c"
        )
        view = await env.rt.service.get_account(user)
        assert not view.locked and view.failed_count == 0 and not view.must_change
        assert (await env.rt.service.authenticate("alice", NEW, via="test")).username == "alice"

    env.run(go)


def test_mfa_enforced_not_enrolled_needs_admin(tmp_path: Path, clock: FrozenClock) -> None:
    org = DEFAULT_ORG + "\n[mfa]\nenforce_for_portal = true\n"
    for env in _env(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", clock, org):

        async def go(env: Env = env) -> None:
            await env.add("alice")
            await env.flows.request_reset("alice@example.org", kind="user", client="c")
            msgs = await env.mails(2)
            assert msgs[-1]["Subject"] == "Password Reset"
            assert "An administrator must reset your password" in text_of(msgs[-1])
            assert links(msgs[-1]) == []

        env.run(go)


def test_mfa_enforced_but_org_allows_reset_before_enrolment(
    tmp_path: Path, clock: FrozenClock
) -> None:
    org = DEFAULT_ORG + "\n[mfa]\nenforce_for_portal = true\nallow_reset_before_enrolment = true\n"
    for env in _env(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", clock, org):

        async def go(env: Env = env) -> None:
            await env.add("alice")
            await env.flows.request_reset("alice@example.org", kind="user", client="c")
            token = token_of(await _link(env, 2, "alice@example.org"))
            page = env.flows.open_reset(token)
            assert page is not None and not page.needs_totp
            await env.flows.complete_reset(
                token, NEW, NEW, tos_accepted=False, totp_code=None, client="c"
            )

        env.run(go)


def test_user_totp_attempts_as_set_by_the_org(tmp_path: Path, clock: FrozenClock) -> None:
    org = DEFAULT_ORG + "\n[mfa]\nuser_totp_attempts = 3\n"
    for env in _env(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", clock, org):

        async def go(env: Env = env) -> None:
            user = await env.add("alice")
            seed = await env.enrol(user)
            await env.flows.request_reset("alice@example.org", kind="user", client="c")
            token = token_of(await _link(env, 2, "alice@example.org"))
            for attempt in range(1, 4):
                with pytest.raises(AuthenticationFailed):
                    await env.flows.complete_reset(
                        token,
                        NEW,
                        NEW,
                        tos_accepted=False,
                        totp_code=_wrong(env.code(seed)),
                        client="c",
                    )
                assert (await env.rt.service.get_account(user)).locked is (attempt == 3)
            assert env.flows.open_reset(token) is None

        env.run(go)


@pytest.mark.parametrize("kind", ["self", "admin"])
def test_expiry_boundaries(env: Env, kind: str) -> None:
    hours = 1 if kind == "self" else 24

    async def issue() -> str:
        before = len(env.server.messages)
        if kind == "self":
            await env.flows.request_reset("alice@example.org", kind="user", client="c")
        else:
            await env.flows.send_admin_reset("alice", actor=ADMIN)
        return token_of(await _link(env, before + 1, "alice@example.org"))

    async def go() -> None:
        await env.add("alice")
        await env.mails(1)
        first = await issue()
        env.clock.advance(timedelta(hours=hours, seconds=-1))
        assert env.flows.open_reset(first) is not None  # 1 s before: valid
        env.clock.advance(timedelta(seconds=1))
        assert env.flows.open_reset(first) is None  # at the limit: invalid
        with pytest.raises(PolicyViolation):  # and the final POST checks again
            await env.flows.complete_reset(
                first, NEW, NEW, tos_accepted=False, totp_code=None, client="c"
            )
        env.clock.advance(timedelta(seconds=1))
        assert env.flows.open_reset(first) is None
        second = await issue()
        env.clock.advance(timedelta(hours=hours, seconds=-1))
        await env.flows.complete_reset(
            second, NEW, NEW, tos_accepted=False, totp_code=None, client="c"
        )

    env.run(go)


def test_twenty_parallel_completions_one_wins(env_both: Env) -> None:
    env = env_both

    async def go() -> None:
        await env.add("alice")
        await env.flows.request_reset("alice@example.org", kind="user", client="c")
        token = token_of(await _link(env, 2, "alice@example.org"))
        candidates = [f"Parallel-Pass-{i:02d}-q" for i in range(20)]
        results = await asyncio.gather(
            *(
                env.flows.complete_reset(
                    token, pw, pw, tos_accepted=False, totp_code=None, client=f"10.0.0.{i}"
                )
                for i, pw in enumerate(candidates)
            ),
            return_exceptions=True,
        )
        winners = [pw for pw, r in zip(candidates, results, strict=True) if r is None]
        losers = [r for r in results if r is not None]
        assert len(winners) == 1
        assert all(isinstance(r, PolicyViolation) and r.rule == "token" for r in losers)
        await env.rt.service.authenticate("alice", winners[0], via="test")
        msgs = await env.mails(3)
        await asyncio.sleep(0.3)
        assert [m["Subject"] for m in env.server.messages].count(
            "Password reset was successful."
        ) == 1
        assert len(msgs) == 3

    SECRETS.extend(f"Parallel-Pass-{i:02d}-q" for i in range(20))
    try:
        env.run(go)
    finally:
        del SECRETS[2:]


def test_policy_rejection_does_not_consume_the_token(env: Env) -> None:
    async def go() -> None:
        await env.add("alice")
        await env.flows.request_reset("alice@example.org", kind="user", client="c")
        token = token_of(await _link(env, 2, "alice@example.org"))
        for bad in ("short", "alice-is-my-name-1", OLD):  # length, identity, history
            with pytest.raises(PolicyViolation) as refused:
                await env.flows.complete_reset(
                    token, bad, bad, tos_accepted=False, totp_code=None, client="c"
                )
            assert refused.value.rule in ("password", "history")
            assert env.flows.open_reset(token) is not None
        await env.flows.complete_reset(
            token, NEW, NEW, tos_accepted=False, totp_code=None, client="c"
        )

    env.run(go)


def test_no_enumeration(env_both: Env) -> None:
    env = env_both

    async def go() -> None:
        await env.add("alice")
        bob = await env.add("bob")
        carol = await env.add("carol")
        dave = await env.add("dave")
        await env.add("root", kind="admin")
        for _ in range(5):
            with pytest.raises(AuthenticationFailed):
                await env.rt.service.authenticate("bob", "wrong-password-x", via="test")
        await env.rt.service.set_state(carol, active=False, actor=ADMIN)
        await env.rt.service.lock(dave, actor=ADMIN)
        await env.mails(5)
        before = env.queued()
        answers, took = [], []
        for who in ("alice", "nobody", "bob", "carol", "dave", "root"):
            start = time.perf_counter()
            answers.append(
                await env.flows.request_reset(f"{who}@example.org", kind="user", client="c")
            )
            took.append(time.perf_counter() - start)
            assert env.queued() == before  # nothing the caller could observe
        assert answers == [None] * 6
        assert max(took) < 0.05
        await env.flows.settled()
        msgs = await env.mails(7)
        await asyncio.sleep(0.3)
        to = sorted(m["To"] for m in env.server.messages[5:])
        assert to == ["alice@example.org", "bob@example.org"]  # a reset clears a failure lock
        assert len(msgs) == 7
        with env.rt.store.read() as s:
            assert not s.scalars(select(AuditEntry).where(AuditEntry.subject.like("nobody%"))).all()
        assert (await env.rt.service.get_account(bob)).failed_count >= 5  # untouched

    env.run(go)


def test_rate_limits_per_account_and_client(env: Env) -> None:
    async def go() -> None:
        user = await env.add("alice")
        await env.add("bob")
        await env.mails(2)
        spellings = ["alice@example.org", "ALICE", "Alice@Example.ORG", "alice"]
        for i in range(7):  # every spelling of the account shares its bucket
            await env.flows.request_reset(spellings[i % 4], kind="user", client=f"10.1.0.{i}")
        await env.flows.settled()
        await asyncio.to_thread(env.server.wait_for, 7)
        await asyncio.sleep(0.3)
        assert len(env.server.to("alice@example.org")) == 1 + 5  # per account: 5 an hour
        for i in range(20):
            await env.flows.request_reset(f"x{i}@example.org", kind="user", client="10.9.9.9")
        await env.flows.request_reset("bob@example.org", kind="user", client="10.9.9.9")
        await env.flows.settled()
        await asyncio.sleep(0.3)
        assert len(env.server.to("bob@example.org")) == 1  # per client: 20 in 15 minutes
        await env.flows.request_reset("bob@example.org", kind="user", client="10.8.8.8")
        env.clock.advance(timedelta(hours=2))  # both buckets refill
        await env.flows.request_reset("alice@example.org", kind="user", client="10.9.9.9")
        await env.flows.settled()
        await asyncio.to_thread(env.server.wait_for, 9)
        assert len(env.server.to("bob@example.org")) == 2
        assert len(env.server.to("alice@example.org")) == 7
        assert (await env.rt.service.get_account(user)).failed_count == 0  # not the lockout

    env.run(go)


def test_tokens_revoked_by_newer_token_lock_disable_and_password_change(env: Env) -> None:
    async def go() -> None:
        user = await env.add("alice")
        n = 1

        async def fresh() -> str:
            nonlocal n
            await env.flows.request_reset("alice@example.org", kind="user", client="c")
            n += 1
            return token_of(await _link(env, n, "alice@example.org"))

        first = await fresh()
        second = await fresh()
        assert env.flows.open_reset(first) is None and env.flows.open_reset(second) is not None
        await env.rt.service.lock(user, actor=ADMIN)
        assert env.flows.open_reset(second) is None
        await env.rt.service.unlock(user, actor=ADMIN)
        assert env.flows.open_reset(second) is None  # unlocking does not revive it
        third = await fresh()
        await env.rt.service.set_state(user, active=False, actor=ADMIN)
        assert env.flows.open_reset(third) is None
        await env.rt.service.set_state(user, active=True, actor=ADMIN)
        fourth = await fresh()
        await env.rt.service.change_password(user, NEW, actor=ADMIN)
        n += 1
        assert env.flows.open_reset(fourth) is None
        # bound to purpose: a reset token does not verify a recovery address
        fifth = await fresh()
        set_recovery_enabled(env.rt, True, actor=ADMIN)
        with pytest.raises(PolicyViolation):
            await env.flows.verify_recovery_email(fifth, client="c")
        assert env.flows.open_reset(fifth) is not None

    env.run(go)


def test_cli_send_reset_queues_a_24h_link(tmp_path: Path, sqlite_url: str) -> None:
    from typer.testing import CliRunner

    from gateway.cli import app
    from gateway.store.models import Token

    settings = make_settings(tmp_path, sqlite_url, http={"base_url": BASE})
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'policies_dir = "{settings.policies_dir}"\n'
        f'[database]\nurl = "{sqlite_url}"\n'
        f'[secrets]\nkey_file = "{settings.secrets.key_file}"\n'
        f'[mail]\nmaildir = "{tmp_path / "mail"}"\n'
        f'[http]\nbase_url = "{BASE}"\n'
    )
    rt = make_runtime(settings)
    asyncio.run(
        rt.service.create_account(
            kind="user", username="alice", email="alice@example.org", actor=ADMIN, password=OLD
        )
    )
    rt.close()
    runner = CliRunner()
    env = {"GATEWAY_CONFIG": str(config)}
    ok = runner.invoke(app, ["user", "send-reset", "alice", "--json"], env=env)
    assert ok.exit_code == 0, ok.output
    assert '"valid_hours": 24' in ok.output and "/reset/" not in ok.output
    wrong_kind = runner.invoke(app, ["admin", "send-reset", "alice"], env=env)
    assert wrong_kind.exit_code == 1
    missing = runner.invoke(app, ["user", "send-reset", "nobody"], env=env)
    assert missing.exit_code == 1
    rt = make_runtime(settings)
    try:
        with rt.store.read() as s:
            token = s.scalars(select(Token).where(Token.purpose == "admin_reset")).one()
            assert token.expires_at - token.created_at == timedelta(hours=24)
            rows = s.scalars(select(MailMessage).where(MailMessage.template == "reset_link")).all()
            assert [r.status for r in rows] == ["pending"]  # the daemon's sender delivers it
    finally:
        rt.close()
