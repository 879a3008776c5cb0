"""The outbox: desired-state rows written in the change's transaction, sealed, coalesced."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.audit import Actor
from gateway.changes import Change
from gateway.clock import FrozenClock
from gateway.errors import ConfigError
from gateway.propagation_models import PENDING, DesiredRow, seal_purpose
from gateway.runtime import Runtime
from gateway.settings import Settings
from gateway.store.models import Account
from tests.support.recording import policy_toml, registered, write_policy
from tests.support.runtime import make_runtime

ADMIN = Actor("test-admin")
P1 = "Canary-Alpha-7431-xyz"
P2 = "Canary-Bravo-9902-xyz"


@pytest.fixture
def prt(settings: Settings, clock: FrozenClock) -> Iterator[Runtime]:
    with registered():
        write_policy(settings, "dir1", policy_toml())
        write_policy(settings, "staff", policy_toml(groups=("staff",), password_change="maintain"))
        runtime = make_runtime(settings, clock)
        try:
            yield runtime
        finally:
            runtime.close()


def rows(rt: Runtime, username: str) -> dict[str, DesiredRow]:
    with rt.store.read() as s:
        acc = s.scalars(select(Account).where(Account.username == username)).one()
        found = s.scalars(select(DesiredRow).where(DesiredRow.account_id == acc.id))
        return {r.resource: r for r in found}


def create(rt: Runtime, username: str, groups: tuple[str, ...] = ()) -> None:
    asyncio.run(
        rt.service.create_account(
            kind="user",
            username=username,
            email=f"{username}@example.org",
            actor=ADMIN,
            groups=groups,
        )
    )


def test_password_change_writes_sealed_row(prt: Runtime) -> None:
    create(prt, "ann")
    assert rows(prt, "ann") == {}  # creating without a password: nothing to deliver
    asyncio.run(prt.service.change_password("ann", P1, actor=ADMIN))
    row = rows(prt, "ann")["dir1"]
    assert row.status == PENDING and row.version == 1 and row.delivered_version == 0
    assert row.sealed_password is not None and P1.encode() not in row.sealed_password
    assert prt.sealer.open(row.sealed_password, seal_purpose(row.account_id, "dir1")) == P1
    with pytest.raises(ConfigError):  # bound to its row: another purpose does not open it
        prt.sealer.open(row.sealed_password, seal_purpose(row.account_id + 1, "dir1"))
    assert row.password_version == 1 and not row.temporary


def test_newest_change_wins_and_bursts_coalesce(prt: Runtime) -> None:
    create(prt, "bob")
    asyncio.run(prt.service.change_password("bob", P1, actor=ADMIN))
    asyncio.run(prt.service.lock("bob", actor=ADMIN))
    asyncio.run(prt.service.set_temporary_password("bob", P2, actor=ADMIN))
    found = rows(prt, "bob")
    assert list(found) == ["dir1"]
    row = found["dir1"]
    # change, lock, temp password (which also unlocks): one row, newest state, newest password
    assert row.version >= 4 and not row.locked and row.temporary
    assert row.sealed_password is not None
    assert prt.sealer.open(row.sealed_password, seal_purpose(row.account_id, "dir1")) == P2


def test_lock_and_expire_flags(prt: Runtime) -> None:
    create(prt, "cid")
    asyncio.run(prt.service.lock("cid", actor=ADMIN))
    row = rows(prt, "cid")["dir1"]
    assert row.locked and not row.expired and row.sealed_password is None
    asyncio.run(prt.service.expire("cid", actor=ADMIN))
    row = rows(prt, "cid")["dir1"]
    assert row.locked and row.expired and row.version == 2


def test_covers_and_maintain(prt: Runtime) -> None:
    create(prt, "dan", groups=("staff",))
    asyncio.run(prt.service.change_password("dan", P1, actor=ADMIN))
    found = rows(prt, "dan")
    assert set(found) == {"dir1", "staff"}
    assert found["staff"].sealed_password is None  # password_change = "maintain": never stored
    assert found["dir1"].sealed_password is not None


def test_delete_removes_rows(prt: Runtime) -> None:
    create(prt, "eve")
    asyncio.run(prt.service.lock("eve", actor=ADMIN))
    asyncio.run(prt.service.delete_account("eve", actor=ADMIN))
    with prt.store.read() as s:
        assert s.scalars(select(DesiredRow)).all() == []


def test_row_commits_with_the_change_or_not_at_all(prt: Runtime) -> None:
    create(prt, "fay")

    class Boom:
        def on_change(self, session: Session, account: Account, change: Change) -> None:
            raise RuntimeError("later listener fails")

    prt.service.listeners.append(Boom())
    with pytest.raises(RuntimeError):
        asyncio.run(prt.service.lock("fay", actor=ADMIN))
    prt.service.listeners.pop()
    assert rows(prt, "fay") == {}
    with prt.store.read() as s:
        acc = s.scalars(select(Account).where(Account.username == "fay")).one()
        assert acc.locked_at is None


def test_group_change_adds_rows_for_newly_covering_resources(prt: Runtime) -> None:
    """Joining a covered group adds a row with the current state; a plain edit adds no delivery."""
    create(prt, "gina")
    asyncio.run(prt.service.lock("gina", actor=ADMIN))
    before = rows(prt, "gina")
    assert list(before) == ["dir1"] and "staff" not in before
    asyncio.run(prt.service.update_account("gina", actor=ADMIN, groups=["staff"]))
    after = rows(prt, "gina")
    assert after["staff"].locked and after["staff"].version == 1
    assert after["dir1"].version == before["dir1"].version  # already there: untouched
    asyncio.run(prt.service.update_account("gina", actor=ADMIN, display_name="Gina"))
    assert {k: r.version for k, r in rows(prt, "gina").items()} == {
        k: r.version for k, r in after.items()
    }


def test_reconcile_adds_rows_for_a_new_resource(prt: Runtime, settings: Settings) -> None:
    """A resource added after the fact gets rows for existing accounts via reconcile."""
    create(prt, "hal")
    asyncio.run(prt.service.lock("hal", actor=ADMIN))
    assert list(rows(prt, "hal")) == ["dir1"]
    write_policy(settings, "late", policy_toml())
    from gateway.policies import load_policy_set

    prt.policies = load_policy_set(settings.policies_dir)
    assert asyncio.run(prt.service.reconcile(actor=ADMIN)) == 1
    found = rows(prt, "hal")
    assert found["late"].locked and found["late"].sealed_password is None
    assert found["dir1"].version == 1  # the existing row is untouched
    audit = asyncio.run(prt.service.audit_log(limit=5))
    assert audit[0]["action"] == "sync_reconcile" and audit[0]["details"] == {"accounts": 1}
