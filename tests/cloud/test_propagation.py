"""End to end: service change -> outbox row -> dispatcher -> m365 / google connector -> fakes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from gateway.audit import Actor
from gateway.backoff import Backoff
from gateway.cli import app
from gateway.clock import FrozenClock
from gateway.dispatcher import Dispatcher
from gateway.errors import PolicyViolation
from gateway.propagation_models import DEAD, DELIVERED, RETRYING, DesiredRow
from gateway.propagation_status import Selection, status
from gateway.runtime import Runtime
from gateway.store.models import Account
from tests.cloud.conftest import ADMIN as GOOGLE_ADMIN
from tests.cloud.policies import write_cloud_policies
from tests.fakes import Fault
from tests.fakes.certs import TlsFiles
from tests.fakes.entra_graph import FakeGraph
from tests.fakes.google_directory import FakeDirectory
from tests.support.runtime import make_runtime, make_settings

ACTOR = Actor("cloud-test")
P1 = "Cloud-Pass-One-5521"
P2 = "Cloud-Pass-Two-8843"


@pytest.fixture
def crt(
    tmp_path: Path,
    sqlite_url: str,
    clock: FrozenClock,
    tls: TlsFiles,
    graph: FakeGraph,
    directory: FakeDirectory,
) -> Iterator[Runtime]:
    """A runtime with two resources: ``office`` (m365) and ``workspace`` (google)."""
    settings = make_settings(tmp_path, sqlite_url)
    key_path = directory.key_path
    assert key_path is not None
    policies = Path(settings.policies_dir)
    write_cloud_policies(policies, tmp_path, tls, graph, directory, key_path, GOOGLE_ADMIN)
    runtime = make_runtime(settings, clock)
    try:
        yield runtime
    finally:
        runtime.close()


async def people(rt: Runtime, graph: FakeGraph, directory: FakeDirectory, *names: str) -> None:
    for name in names:
        mail = f"{name}@example.org"
        graph.add_user(mail, mail=mail)
        directory.add_user(mail)
        await rt.service.create_account(kind="user", username=name, email=mail, actor=ACTOR)


def dispatcher(rt: Runtime) -> Dispatcher:
    return Dispatcher(rt, poll_interval=0.2, backoff=Backoff(base=1.0, cap=30.0))


def row(rt: Runtime, name: str, resource: str) -> DesiredRow:
    with rt.store.read() as s:
        return s.scalars(
            select(DesiredRow)
            .join(Account, Account.id == DesiredRow.account_id)
            .where(Account.username == name, DesiredRow.resource == resource)
        ).one()


def test_changes_reach_both_clouds_as_the_policy_says(
    crt: Runtime, graph: FakeGraph, directory: FakeDirectory
) -> None:
    async def go() -> None:
        await people(crt, graph, directory, "ann", "bob")
        graph.user("bob@example.org").accountEnabled = False  # type: ignore[union-attr]
        directory.user("bob@example.org").suspended = True  # type: ignore[union-attr]
        d = dispatcher(crt)
        await d.start()
        try:
            await crt.service.change_password("ann", P1, actor=ACTOR)
            await d.idle()
            for name in ("ann", "bob"):
                await crt.service.lock(name, actor=ACTOR)
            await d.idle()
            assert not graph.user("ann@example.org").accountEnabled  # type: ignore[union-attr]
            assert directory.user("ann@example.org").suspended  # type: ignore[union-attr]
            assert row(crt, "ann", "office").owned == ["disabled"]
            assert row(crt, "bob", "workspace").owned == []
            for name in ("ann", "bob"):
                await crt.service.unlock(name, actor=ACTOR)
            await d.idle()
            await crt.service.expire("ann", actor=ACTOR)
            await d.idle()
        finally:
            await d.stop()

    asyncio.run(go())
    ann_m, ann_g = graph.user("ann@example.org"), directory.user("ann@example.org")
    bob_m, bob_g = graph.user("bob@example.org"), directory.user("bob@example.org")
    assert ann_m and ann_g and bob_m and bob_g
    assert ann_m.password == P1 and ann_m.forceChangePasswordNextSignIn is False
    assert ann_g.password == P1
    assert not bob_m.accountEnabled and bob_g.suspended  # hand-suspended: left alone
    assert not ann_m.accountEnabled  # office: expired -> suspend
    assert not ann_g.suspended and ann_g.changePasswordAtNextLogin  # workspace: force_change
    for resource in ("office", "workspace"):
        assert row(crt, "ann", resource).status == DELIVERED


def test_temporary_password_is_must_change_at_both(
    crt: Runtime, graph: FakeGraph, directory: FakeDirectory
) -> None:
    async def go() -> None:
        await people(crt, graph, directory, "cat")
        d = dispatcher(crt)
        await d.start()
        try:
            await crt.service.set_temporary_password("cat", P2, actor=ACTOR)
            await d.idle()
        finally:
            await d.stop()

    asyncio.run(go())
    cat_m, cat_g = graph.user("cat@example.org"), directory.user("cat@example.org")
    assert cat_m and cat_m.password == P2 and cat_m.forceChangePasswordNextSignIn
    assert cat_g and cat_g.password == P2 and cat_g.changePasswordAtNextLogin


def test_retry_after_and_google_rate_limit_are_retried(
    crt: Runtime, graph: FakeGraph, directory: FakeDirectory, clock: FrozenClock
) -> None:
    graph.add_fault(Fault(path="^/users/", status=429, headers={"Retry-After": "3"}))
    body = {"error": {"code": 403, "message": "Rate", "errors": [{"reason": "rateLimitExceeded"}]}}
    directory.add_fault(Fault(path="^/admin/directory/v1/users/", status=403, body=body))

    async def go() -> None:
        await people(crt, graph, directory, "dan")
        d = dispatcher(crt)
        await d.start()
        try:
            await crt.service.change_password("dan", P1, actor=ACTOR)
            await d.idle()
            office, workspace = row(crt, "dan", "office"), row(crt, "dan", "workspace")
            assert office.status == RETRYING and workspace.status == RETRYING
            assert office.next_try_at is not None
            wait = office.next_try_at.replace(tzinfo=None) - clock.now().replace(tzinfo=None)
            assert wait >= timedelta(seconds=3)
            assert "throttled" in office.last_error and "rateLimitExceeded" in workspace.last_error
            clock.advance(timedelta(seconds=31))
            d.wake()
            await d.idle()
        finally:
            await d.stop()

    asyncio.run(go())
    assert row(crt, "dan", "office").status == DELIVERED
    assert row(crt, "dan", "workspace").status == DELIVERED
    assert graph.user("dan@example.org").password == P1  # type: ignore[union-attr]
    assert directory.user("dan@example.org").password == P1  # type: ignore[union-attr]


def test_policy_rejection_is_dead_lettered_with_the_reason(
    crt: Runtime, graph: FakeGraph, directory: FakeDirectory, clock: FrozenClock, tmp_path: Path
) -> None:
    graph.banned[P1] = "The password is on the organisation's banned password list."

    async def go() -> None:
        await people(crt, graph, directory, "eve")
        d = dispatcher(crt)
        await d.start()
        try:
            await crt.service.change_password("eve", P1, actor=ACTOR)
            await d.idle()
        finally:
            await d.stop()

    asyncio.run(go())
    office = row(crt, "eve", "office")
    assert office.status == DEAD and office.deliveries == 0
    assert row(crt, "eve", "workspace").status == DELIVERED
    (shown,) = status(crt.store, Selection("eve", "office"), ACTOR, clock.now())
    assert shown["status"] == DEAD and "banned password list" in shown["last_error"]
    assert "Microsoft 365" in shown["last_error"] and P1 not in shown["last_error"]
    cfg = tmp_path / "gateway.toml"
    s = crt.settings
    cfg.write_text(
        f'policies_dir = "{s.policies_dir}"\n'
        f'[database]\nurl = "{s.database.url}"\n'
        f'[secrets]\nkey_file = "{s.secrets.key_file}"\n'
        f'[mail]\nmaildir = "{s.mail.maildir}"\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        app, ["--config", str(cfg), "sync", "status", "eve"], env={"GATEWAY_CONFIG": str(cfg)}
    )
    assert result.exit_code == 0, result.output
    (line,) = [x for x in result.output.splitlines() if "office" in x]
    assert "dead" in line and "banned password list" in line and P1 not in result.output


def test_password_microsoft_would_refuse_is_refused_by_the_gateway(
    crt: Runtime, graph: FakeGraph, directory: FakeDirectory
) -> None:
    async def go() -> None:
        await people(crt, graph, directory, "fay")
        with pytest.raises(PolicyViolation) as info:
            await crt.service.change_password("fay", "lowercase and digits 2931", actor=ACTOR)
        assert "Microsoft 365" in info.value.message

    asyncio.run(go())
    assert graph.calls == 0 and directory.calls == 0
