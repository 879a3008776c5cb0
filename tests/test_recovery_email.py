"""Recovery e-mail (add, verify in 4 h, confirmation), resets through it, admin resets a user."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.errors import PolicyViolation
from gateway.resets import recovery_enabled, set_recovery_enabled
from gateway.runtime import Runtime
from tests.support.runtime import DEFAULT_ORG
from tests.support.smtp import links, text_of, token_of
from tests.test_resets import ADMIN, BASE, NEW, SECRETS, Env, _env

HOME = "alice.home@example.net"


@pytest.fixture
def env(tmp_path: Path, sqlite_url: str, clock: object) -> Iterator[Env]:
    """SQLite runtime + SMTP server, recovery e-mail enabled in org.toml."""
    org = DEFAULT_ORG + "\n[recovery_email]\nenabled = true\n"
    yield from _env(tmp_path, sqlite_url, clock, org)  # type: ignore[arg-type]


@pytest.fixture
def env_off(tmp_path: Path, sqlite_url: str, clock: object) -> Iterator[Env]:
    """SQLite runtime + SMTP server, recovery e-mail left off."""
    yield from _env(tmp_path, sqlite_url, clock)  # type: ignore[arg-type]


async def _verified(env: Env, account_id: int, mails_before: int) -> None:
    await env.flows.set_recovery_email(account_id, HOME, actor=ADMIN)
    msgs = await env.mails(mails_before + 1)
    await env.flows.verify_recovery_email(token_of(links(msgs[-1])[0]), client="c")
    await env.mails(mails_before + 2)


def test_off_until_enabled_and_admin_override(env_off: Env) -> None:
    env = env_off
    rt: Runtime = env.rt

    async def go() -> None:
        user = await env.add("alice")
        assert not recovery_enabled(rt)
        with pytest.raises(PolicyViolation) as off:
            await env.flows.set_recovery_email(user, HOME, actor=ADMIN)
        assert off.value.rule == "recovery_email"
        set_recovery_enabled(rt, True, actor=ADMIN)  # the admin UI switch
        assert recovery_enabled(rt)
        await env.flows.set_recovery_email(user, HOME, actor=ADMIN)
        set_recovery_enabled(rt, None, actor=ADMIN)  # back to org.toml (off)
        assert not recovery_enabled(rt)
        audit = await rt.service.audit_log(limit=50)
        assert [r["action"] for r in audit].count("org_setting") == 2

    env.run(go)


def test_add_verify_expiry_and_confirmation(env: Env) -> None:
    async def go() -> None:
        user = await env.add("alice")
        with pytest.raises(PolicyViolation) as same:
            await env.flows.set_recovery_email(user, "ALICE@example.org", actor=ADMIN)
        assert "differ" in same.value.message
        with pytest.raises(PolicyViolation):
            await env.flows.set_recovery_email(user, "not-an-address", actor=ADMIN)
        await env.flows.set_recovery_email(user, HOME, actor=ADMIN)
        msgs = await env.mails(2)
        verify = msgs[-1]
        assert verify["To"] == HOME and "Verify Now!" in text_of(verify)
        link = links(verify)[0]
        assert link.startswith(f"{BASE}/verify-recovery/") and "4 hours" in text_of(verify)
        view = await env.rt.service.get_account(user)
        assert view.recovery_email == HOME and view.recovery_email_verified_at is None
        env.clock.advance(timedelta(hours=4))  # exactly at the limit: too late
        with pytest.raises(PolicyViolation):
            await env.flows.verify_recovery_email(token_of(link), client="c")
        env.clock.advance(timedelta(seconds=1))  # and after it
        with pytest.raises(PolicyViolation):
            await env.flows.verify_recovery_email(token_of(link), client="c")
        assert (await env.rt.service.get_account(user)).recovery_email_verified_at is None
        await env.flows.set_recovery_email(user, HOME, actor=ADMIN)  # enter it again
        second = links((await env.mails(3))[-1])[0]
        env.clock.advance(timedelta(hours=4, seconds=-1))
        await env.flows.verify_recovery_email(token_of(second), client="c")
        view = await env.rt.service.get_account(user)
        assert view.recovery_email_verified_at == env.clock.now()  # admins see the time
        confirm = (await env.mails(4))[-1]
        assert confirm["To"] == HOME and "verified" in text_of(confirm)
        with pytest.raises(PolicyViolation):  # single use
            await env.flows.verify_recovery_email(token_of(second), client="c")
        await env.flows.set_recovery_email(user, "other@example.net", actor=ADMIN)
        third = links((await env.mails(5))[-1])[0]
        view = await env.rt.service.get_account(user)
        assert view.recovery_email_verified_at is None  # a new address starts unverified
        await env.flows.set_recovery_email(user, HOME, actor=ADMIN)
        with pytest.raises(PolicyViolation):  # the link was for the previous address
            await env.flows.verify_recovery_email(token_of(third), client="c")

    env.run(go)


def test_reset_from_recovery_address_requires_mfa(env: Env) -> None:
    async def go() -> None:
        user = await env.add("alice")
        seed = await env.enrol(user)
        await _verified(env, user, 1)
        await env.flows.request_reset("alice@example.org", kind="user", client="c")
        msgs = await env.mails(5)
        to = sorted(m["To"] for m in msgs[-2:])
        assert to == sorted(["alice@example.org", HOME])
        home = next(m for m in msgs[-2:] if m["To"] == HOME)
        work = next(m for m in msgs[-2:] if m["To"] == "alice@example.org")
        assert "recovery address" in text_of(home)
        home_token, work_token = token_of(links(home)[0]), token_of(links(work)[0])
        page = env.flows.open_reset(home_token)
        assert page is not None and page.needs_totp
        assert env.flows.open_reset(work_token) is not None  # both links are live
        with pytest.raises(PolicyViolation) as missing:
            await env.flows.complete_reset(
                home_token, NEW, NEW, tos_accepted=False, totp_code=None, client="c"
            )
        assert missing.value.rule == "totp"
        await env.flows.complete_reset(
            home_token, NEW, NEW, tos_accepted=False, totp_code=env.code(seed), client="c"
        )
        assert env.flows.open_reset(work_token) is None  # the change revoked the other link
        await env.rt.service.authenticate("alice", NEW, via="test")

    env.run(go)


def test_recovery_link_only_with_mfa_and_while_enabled(env: Env) -> None:
    async def go() -> None:
        user = await env.add("alice")
        await _verified(env, user, 1)
        await env.flows.request_reset("alice@example.org", kind="user", client="c")
        await env.mails(4)
        await asyncio.sleep(0.3)
        assert [m["To"] for m in env.server.messages[3:]] == ["alice@example.org"]  # no MFA
        await env.enrol(user)
        set_recovery_enabled(env.rt, False, actor=ADMIN)  # admin switched it off again
        await env.flows.request_reset("alice@example.org", kind="user", client="c")
        await env.mails(5)
        await asyncio.sleep(0.3)
        assert [m["To"] for m in env.server.messages[4:]] == ["alice@example.org"]

    env.run(go)


def test_admin_resets_a_user(env: Env) -> None:
    typed = "Typed-Temporary-42z"
    SECRETS.append(typed)

    async def go() -> None:
        user = await env.add("alice")
        with pytest.raises(PolicyViolation):
            await env.flows.admin_reset_user(
                "alice", actor=ADMIN, temporary_password=typed, generate=True, recovery_email=None
            )
        with pytest.raises(PolicyViolation):  # a typed password passes the full rules
            await env.flows.admin_reset_user(
                "alice",
                actor=ADMIN,
                temporary_password="short",
                generate=False,
                recovery_email=None,
            )
        generated = await env.flows.admin_reset_user(
            "alice", actor=ADMIN, temporary_password=None, generate=True, recovery_email=HOME
        )
        assert generated
        SECRETS.append(generated)
        view = await env.rt.service.get_account(user)
        assert view.must_change and view.temporary and view.recovery_email == HOME
        auth = await env.rt.service.authenticate("alice", generated, via="test")
        assert auth.must_change
        msgs = await env.mails(3)
        subjects = {m["To"]: m["Subject"] for m in msgs[1:]}
        assert subjects["alice@example.org"] == "A temporary password was set for your account"
        assert subjects[HOME] == "Verify your recovery e-mail address"
        again = await env.flows.admin_reset_user(
            "alice", actor=ADMIN, temporary_password=typed, generate=False, recovery_email=HOME
        )
        assert again is None  # typed: nothing to show; same address: no new verify mail
        await env.mails(4)
        await asyncio.sleep(0.3)
        assert len(env.server.messages) == 4
        assert (await env.rt.service.authenticate("alice", typed, via="test")).must_change

    try:
        env.run(go)
    finally:
        del SECRETS[2:]
