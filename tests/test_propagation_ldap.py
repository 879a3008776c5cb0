"""End to end: the service, the outbox, the dispatcher and the ldap connector against real slapd."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.audit import Actor
from gateway.backoff import Backoff
from gateway.dispatcher import Dispatcher
from gateway.propagation_models import DELIVERED, RETRYING, DesiredRow
from gateway.runtime import Runtime, build
from gateway.settings import Settings
from gateway.store.models import Account
from tests.support.bulk import pending_passwords
from tests.support.recording import write_policy
from tests.support.runtime import make_settings
from tests.support.slapd import Slapd, slapd  # noqa: F401

pytestmark = pytest.mark.slapd

ADMIN = Actor("test-admin")


def ldap_policy(server: Slapd, secret: Path, *, expired: str = "force_change") -> str:
    return f"""connector = "ldap"
enabled = true
concurrency = 8

[link]
filter = "(mail={{email}})"

[actions]
password_change = "set"
expired = "{expired}"
locked = "disable"
unlocked = "restore"

[connection]
url = "{server.url}"
tls = "starttls"
ca_file = "{server.tls.ca}"
bind_dn = "{server.service_dn}"
bind_password = "file:{secret}"
base_dn = "{server.base_dn}"
"""


@pytest.fixture
def env(tmp_path: Path, slapd: Slapd) -> Iterator[tuple[Settings, Runtime]]:  # noqa: F811
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'gateway.db'}")
    secret = tmp_path / "ldap.secret"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(slapd.service_password)
    write_policy(settings, "corp", ldap_policy(slapd, secret))
    rt = build(settings)
    try:
        yield settings, rt
    finally:
        rt.close()


def tag() -> str:
    return uuid.uuid4().hex[:10]


def person(server: Slapd, rt: Runtime) -> tuple[str, str, str]:
    """An entry in slapd and the same person in the gateway; returns uid, dn, old password."""
    uid = f"p{uuid.uuid4().hex[:8]}"
    old = f"Old-{tag()}-Secret1"
    dn = server.add_user(uid, f"{uid}@example.org", old)
    asyncio.run(
        rt.service.create_account(
            kind="user", username=uid, email=f"{uid}@example.org", actor=ADMIN
        )
    )
    return uid, dn, old


def dispatcher(rt: Runtime) -> Dispatcher:
    return Dispatcher(rt, poll_interval=0.2, backoff=Backoff(base=0.2, cap=0.5))


def run_until_idle(rt: Runtime, *ops: object) -> None:
    async def go() -> None:
        d = dispatcher(rt)
        await d.start()
        try:
            for op in ops:
                await op  # type: ignore[misc]
            await d.idle()
        finally:
            await d.stop()

    asyncio.run(go())


def row_of(rt: Runtime, uid: str) -> DesiredRow:
    with rt.store.read() as s:
        return s.scalars(select(DesiredRow).join(Account).where(Account.username == uid)).one()


def test_password_reaches_slapd(env: tuple[Settings, Runtime], slapd: Slapd) -> None:  # noqa: F811
    _, rt = env
    uid, dn, old = person(slapd, rt)
    new = f"New-{tag()}-Secret2"
    run_until_idle(rt, rt.service.change_password(uid, new, actor=ADMIN))
    assert slapd.whoami(dn, new).returncode == 0
    assert slapd.whoami(dn, old).returncode != 0
    assert not slapd.operational(dn)["pwdReset"]  # a normal change leaves no must-change flag
    row = row_of(rt, uid)
    assert row.status == DELIVERED and row.sealed_password is None and row.target_key == dn


def test_lock_unlock_expire(env: tuple[Settings, Runtime], slapd: Slapd) -> None:  # noqa: F811
    _, rt = env
    uid, dn, old = person(slapd, rt)
    run_until_idle(rt, rt.service.lock(uid, actor=ADMIN))
    assert slapd.whoami(dn, old).returncode != 0
    assert slapd.operational(dn)["pwdAccountLockedTime"]
    run_until_idle(rt, rt.service.unlock(uid, actor=ADMIN))
    assert slapd.whoami(dn, old).returncode == 0
    run_until_idle(rt, rt.service.expire(uid, actor=ADMIN))
    assert slapd.operational(dn)["pwdReset"] == ["TRUE"]  # expired = "force_change"


def test_down_p1_p2_up_delivers_p2_once(
    env: tuple[Settings, Runtime],
    slapd: Slapd,  # noqa: F811
) -> None:
    _, rt = env
    uid, dn, _old = person(slapd, rt)
    p1, p2 = f"First-{tag()}-Pw1", f"Second-{tag()}-Pw2"

    async def go() -> None:
        d = dispatcher(rt)
        await d.start()
        try:
            slapd.stop()
            await rt.service.change_password(uid, p1, actor=ADMIN)
            await d.idle()
            assert row_of(rt, uid).status == RETRYING
            await rt.service.change_password(uid, p2, actor=ADMIN)
            await d.idle()
            slapd.start()
            deadline = time.monotonic() + 20
            while row_of(rt, uid).status != DELIVERED:
                assert time.monotonic() < deadline, row_of(rt, uid).last_error
                await asyncio.sleep(0.1)
        finally:
            if not slapd.running:
                slapd.start()
            await d.stop()

    asyncio.run(go())
    assert slapd.whoami(dn, p2).returncode == 0
    assert slapd.whoami(dn, p1).returncode != 0
    # ppolicy records each replaced password: only the initial one, so P1 was never set
    assert len(slapd.operational(dn)["pwdHistory"]) == 1
    assert row_of(rt, uid).deliveries == 1


def test_kill_9_before_marking_done_redelivers(
    env: tuple[Settings, Runtime],
    slapd: Slapd,  # noqa: F811
) -> None:
    settings, rt = env
    uid, dn, old = person(slapd, rt)
    new = f"Killed-{tag()}-Pw3"
    asyncio.run(rt.service.change_password(uid, new, actor=ADMIN))
    child_env = dict(
        os.environ,
        GW_DB_URL=settings.database.url,
        GW_POLICIES=str(settings.policies_dir),
        GW_KEY=str(settings.secrets.key_file),
        GW_MODE="die",
    )
    child = subprocess.run(
        [sys.executable, "-m", "tests.support.dispatch_child"],
        env=child_env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -9, child.stderr.decode()[-2000:]
    # the target accepted, the row was not marked: still pending and leased by the dead process
    assert slapd.whoami(dn, new).returncode == 0
    row = row_of(rt, uid)
    assert row.status != DELIVERED and row.lease_owner is not None
    assert row.sealed_password is not None
    run_until_idle(rt)  # "restart": a new dispatcher on the same single-node database
    row = row_of(rt, uid)
    assert row.status == DELIVERED and row.deliveries == 1 and row.sealed_password is None
    assert slapd.whoami(dn, new).returncode == 0  # redelivered harmlessly
    assert slapd.whoami(dn, old).returncode != 0


def test_poison_row_and_1000_healthy(env: tuple[Settings, Runtime], slapd: Slapd) -> None:  # noqa: F811
    """slapd refuses one password (its own policy says so); 1,000 others are all delivered."""
    _, rt = env
    prefix = f"b{tag()[:5]}"
    names = [f"{prefix}{i:04d}" for i in range(1001)]
    conn = slapd.admin()
    try:
        strict = f"cn=strict-{prefix},ou=policies,{slapd.base_dn}"
        conn.add(
            strict,
            ["pwdPolicy", "device"],
            {
                "cn": f"strict-{prefix}",
                "pwdAttribute": "userPassword",
                "pwdMinLength": "60",
                "pwdCheckQuality": "2",
            },
        )
        for name in names:
            attrs = {
                "uid": name,
                "cn": name,
                "sn": name,
                "mail": f"{name}@example.org",
                "userPassword": "Initial-Pw-0",
            }
            if name == names[0]:
                attrs["pwdPolicySubentry"] = strict
            conn.add(slapd.user_dn(name), ["inetOrgPerson"], attrs)
    finally:
        conn.unbind()
    pending_passwords(rt, names, lambda n: f"Pw-{n}-Healthy")
    run_until_idle(rt)
    with rt.store.read() as s:
        rows = {a.username: r for r, a in s.execute(select(DesiredRow, Account).join(Account))}
    poison = rows[names[0]]
    assert poison.status == "dead" and poison.sealed_password is None
    assert poison.last_error.startswith("RejectedError: password refused by the directory")
    assert f"Pw-{names[0]}" not in poison.last_error
    assert {rows[n].status for n in names[1:]} == {DELIVERED}
    for n in (names[1], names[500], names[-1]):
        assert slapd.can_bind(slapd.user_dn(n), f"Pw-{n}-Healthy")
