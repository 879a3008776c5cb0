"""The dispatcher against a recording connector: delivery, coalescing, retries, dead letters."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.audit import Actor
from gateway.backoff import Backoff, Breaker
from gateway.clock import FrozenClock
from gateway.desired import AccountState, desired_state
from gateway.dispatcher import Dispatcher, classify
from gateway.errors import RejectedError, TransientError
from gateway.policies import Actions
from gateway.propagation_models import DEAD, DELIVERED, RETRYING, DesiredRow
from gateway.runtime import Runtime, build
from gateway.settings import Settings
from gateway.store.models import Account
from tests.support.bulk import pending_passwords
from tests.support.postgres import Cluster
from tests.support.recording import (
    RecordingConnector,
    Target,
    on_disk,
    policy_toml,
    registered,
    target,
    write_policy,
)
from tests.support.runtime import make_runtime, make_settings

ADMIN = Actor("test-admin")
P1 = "Canary-Pass-One-5521"
P2 = "Canary-Pass-Two-8843"


@pytest.fixture
def prt(settings: Settings, clock: FrozenClock) -> Iterator[Runtime]:
    with registered():
        write_policy(settings, "dir1", policy_toml())
        runtime = make_runtime(settings, clock)
        try:
            yield runtime
        finally:
            runtime.close()


def row_of(rt: Runtime, username: str, resource: str = "dir1") -> DesiredRow:
    with rt.store.read() as s:
        return s.scalars(
            select(DesiredRow)
            .join(Account, Account.id == DesiredRow.account_id)
            .where(Account.username == username, DesiredRow.resource == resource)
        ).one()


async def user(rt: Runtime, name: str, t: Target | None = None) -> None:
    (t or target()).add(name)
    await rt.service.create_account(
        kind="user", username=name, email=f"{name}@example.org", actor=ADMIN
    )


def fast(rt: Runtime, **kw: object) -> Dispatcher:
    kw.setdefault("poll_interval", 0.2)
    kw.setdefault("backoff", Backoff(base=1.0, cap=4.0))
    return Dispatcher(rt, **kw)  # type: ignore[arg-type]


def test_password_delivered_and_wiped(prt: Runtime) -> None:
    async def go() -> None:
        await user(prt, "ann")
        d = fast(prt, poll_interval=60.0)  # wakes on commit, not by polling
        await d.start()
        try:
            started = time.monotonic()
            await prt.service.change_password("ann", P1, actor=ADMIN)
            while target().accounts["ann"]["password"] != P1:
                assert time.monotonic() - started < 5, "not delivered on commit"
                await asyncio.sleep(0.01)
            await d.idle()
        finally:
            await d.stop()

    asyncio.run(go())
    row = row_of(prt, "ann")
    assert row.status == DELIVERED and row.delivered_version == row.version == 1
    assert row.sealed_password is None and row.deliveries == 1 and row.target_key == "ann"
    assert [a["password"] for a in target().applies_for("ann")] == [P1]


def test_lock_unlock_restore_only_what_gateway_changed(prt: Runtime) -> None:
    async def go() -> None:
        await user(prt, "bob")
        await user(prt, "cat")
        target().accounts["cat"]["disabled"] = True  # an admin disabled cat by hand
        d = fast(prt)
        await d.start()
        try:
            for name in ("bob", "cat"):
                await prt.service.lock(name, actor=ADMIN)
            await d.idle()
            assert target().accounts["bob"]["disabled"]
            assert row_of(prt, "bob").owned == ["disabled"]
            assert row_of(prt, "cat").owned == []  # already disabled: not ours
            for name in ("bob", "cat"):
                await prt.service.unlock(name, actor=ADMIN)
            await d.idle()
        finally:
            await d.stop()

    asyncio.run(go())
    assert not target().accounts["bob"]["disabled"]
    assert target().accounts["cat"]["disabled"]  # restore undid only what the gateway did
    assert row_of(prt, "bob").owned == []


def test_expire_follows_policy_action(prt: Runtime) -> None:
    async def go() -> None:
        await user(prt, "dee")
        d = fast(prt)
        await d.start()
        try:
            await prt.service.expire("dee", actor=ADMIN)
            await d.idle()
        finally:
            await d.stop()

    asyncio.run(go())
    assert target().accounts["dee"]["force"] and not target().accounts["dee"]["disabled"]


def test_down_then_p1_p2_delivers_only_p2_once(prt: Runtime, clock: FrozenClock) -> None:
    async def go() -> None:
        await user(prt, "eli")
        target().down = True
        d = fast(prt)
        await d.start()
        try:
            await prt.service.change_password("eli", P1, actor=ADMIN)
            await d.idle()
            row = row_of(prt, "eli")
            assert row.status == RETRYING and "TransientError" in row.last_error
            await prt.service.change_password("eli", P2, actor=ADMIN)
            await d.idle()
            target().down = False
            clock.advance(timedelta(seconds=10))
            d.wake()
            await d.idle()
        finally:
            await d.stop()

    asyncio.run(go())
    assert [a["password"] for a in target().applies_for("eli")] == [P2]
    row = row_of(prt, "eli")
    assert row.status == DELIVERED and row.deliveries == 1 and row.sealed_password is None


def test_retry_after_is_honoured(prt: Runtime, clock: FrozenClock) -> None:
    async def go() -> None:
        await user(prt, "fin")
        target().down, target().retry_after = True, 120.0
        d = fast(prt)
        await d.start()
        try:
            await prt.service.lock("fin", actor=ADMIN)
            await d.idle()
        finally:
            await d.stop()

    asyncio.run(go())
    row = row_of(prt, "fin")
    wait = row.next_try_at.replace(tzinfo=None) - clock.now().replace(tzinfo=None)
    assert row.status == RETRYING and wait >= timedelta(seconds=120)


def test_change_during_delivery_is_not_lost(settings: Settings, clock: FrozenClock) -> None:
    with registered():
        write_policy(settings, "dir1", policy_toml(delay=0.3))
        rt = make_runtime(settings, clock)
        try:

            async def go() -> None:
                await user(rt, "gus")
                d = fast(rt)
                await d.start()
                try:
                    await rt.service.change_password("gus", P1, actor=ADMIN)
                    await asyncio.sleep(0.1)  # the delivery of version 1 is in flight
                    await rt.service.lock("gus", actor=ADMIN)
                    await d.idle()
                finally:
                    await d.stop()

            asyncio.run(go())
            applies = target().applies_for("gus")
            assert [(a["version"], a["password"], a["disabled"]) for a in applies] == [
                (1, P1, False),
                (2, None, True),  # compare-and-set kept v2 pending; P1 was not sent twice
            ]
            row = row_of(rt, "gus")
            assert row.status == DELIVERED and row.delivered_version == 2
            assert row.sealed_password is None
        finally:
            rt.close()


def bulk(rt: Runtime, count: int, prefix: str) -> None:
    """Create ``count`` accounts (at the target too) with a pending password each."""
    names = [f"{prefix}{i:05d}" for i in range(count)]
    for name in names:
        target().add(name)
    pending_passwords(rt, names, lambda n: f"Pw-{n}")


def test_poison_row_does_not_block_healthy_rows(prt: Runtime) -> None:
    """300 healthy rows here on both backends; the 1,000-row case runs against slapd."""
    bulk(prt, 301, "h")
    target().poison.add("h00000")

    async def go() -> None:
        d = fast(prt)
        await d.start()
        try:
            await d.idle(timeout=60)
        finally:
            await d.stop()

    asyncio.run(go())
    with prt.store.read() as s:
        found = {r.status: 0 for r in s.scalars(select(DesiredRow))}
        for r in s.scalars(select(DesiredRow)):
            found[r.status] += 1
    assert found == {DELIVERED: 300, DEAD: 1}
    poison = row_of(prt, "h00000")
    assert poison.last_error == "RejectedError: the target refused the value"
    assert poison.sealed_password is None and "Pw-h00000" not in poison.last_error
    assert target().accounts["h00300"]["password"] == "Pw-h00300"


def test_missing_target_account_is_dead_lettered(prt: Runtime) -> None:
    async def go() -> None:
        await prt.service.create_account(
            kind="user", username="hal", email="hal@example.org", actor=ADMIN
        )
        d = fast(prt)
        await d.start()
        try:
            await prt.service.change_password("hal", P1, actor=ADMIN)
            await d.idle()
        finally:
            await d.stop()

    asyncio.run(go())
    row = row_of(prt, "hal")
    assert row.status == DEAD and row.sealed_password is None
    assert row.last_error == "NotFoundError: no linked account at the target"


def test_breaker_holds_back_a_failing_resource(prt: Runtime, clock: FrozenClock) -> None:
    async def go() -> None:
        for i in range(6):
            await user(prt, f"br{i}")
        target().down = True
        d = fast(prt, breaker=lambda: Breaker(threshold=2, cooldown=3600))
        await d.start()
        try:
            for i in range(6):
                await prt.service.lock(f"br{i}", actor=ADMIN)
            await d.idle()
            clock.advance(timedelta(seconds=30))  # every row is due again, the breaker is open
            d.wake()
            await asyncio.sleep(0.5)
            assert d.breakers["dir1"].is_open
        finally:
            await d.stop()

    asyncio.run(go())
    with prt.store.read() as s:
        attempts = sum(r.attempts for r in s.scalars(select(DesiredRow)))
    assert attempts < 12  # without the breaker every row would have failed twice


def test_config_error_pauses_the_resource_and_keeps_the_password(
    prt: Runtime, clock: FrozenClock
) -> None:
    """Bad credentials are the resource's fault, not the row's: rows wait, sealed, until fixed."""

    async def go() -> None:
        await user(prt, "cfg")
        target().misconfigured = True
        d = fast(prt)
        await d.start()
        try:
            await prt.service.change_password("cfg", P1, actor=ADMIN)
            await d.idle()
            assert d.breakers["dir1"].is_open
            row = row_of(prt, "cfg")
            assert row.status == RETRYING and row.sealed_password is not None
            assert "resource paused" in row.last_error and P1 not in row.last_error
            target().misconfigured = False  # the admin fixes the credentials
            clock.advance(timedelta(minutes=6))  # past the pause
            d.breakers["dir1"].now = lambda: time.monotonic() + 3600
            d.wake()
            started = time.monotonic()
            while target().accounts["cfg"]["password"] != P1:
                assert time.monotonic() - started < 5, "not delivered after the pause"
                await asyncio.sleep(0.05)
            await d.idle()
        finally:
            await d.stop()

    asyncio.run(go())
    row = row_of(prt, "cfg")
    assert row.status == DELIVERED and row.sealed_password is None


def test_stale_password_is_wiped(prt: Runtime, clock: FrozenClock) -> None:
    async def go() -> None:
        await user(prt, "ivy")
        target().down = True
        d = fast(prt, password_max_age=timedelta(hours=1))
        await d.start()
        try:
            await prt.service.change_password("ivy", P1, actor=ADMIN)
            await d.idle()
            clock.advance(timedelta(hours=2))
            assert await d.sweep() == 1
        finally:
            await d.stop()

    asyncio.run(go())
    row = row_of(prt, "ivy")
    assert row.status == DEAD and row.sealed_password is None and "1 h" in row.last_error


def test_no_password_left_in_the_sqlite_files(
    tmp_path: Path, sqlite_url: str, clock: FrozenClock
) -> None:
    settings = make_settings(tmp_path, sqlite_url)
    canaries = [f"Canary-{i}-Zebra-Quartz" for i in range(5)]
    with registered():
        write_policy(settings, "dir1", policy_toml())
        rt = make_runtime(settings, clock)
        try:

            async def go() -> list[bytes]:
                sealed: list[bytes] = []
                d = fast(rt)
                for i, pw in enumerate(canaries):
                    await user(rt, f"cn{i}")
                    await rt.service.change_password(f"cn{i}", pw, actor=ADMIN)
                    sealed.append(row_of(rt, f"cn{i}").sealed_password or b"")
                await d.start()
                try:
                    await d.idle()
                    await asyncio.sleep(0.5)  # the idle dispatcher checkpoints the WAL
                finally:
                    await d.stop()
                return sealed

            sealed = asyncio.run(go())
            delivered = [target().accounts[f"cn{i}"]["password"] for i in range(len(canaries))]
            assert delivered == canaries
        finally:
            rt.close()
    db = Path(sqlite_url.removeprefix("sqlite:///"))
    blobs = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*") if p.is_file())
    assert all(s for s in sealed)
    for pw, ct in zip(canaries, sealed, strict=True):
        assert pw.encode() not in blobs and pw.encode("utf-16-le") not in blobs
        assert ct[12:28] not in blobs  # not even the sealed copy survives


def test_classify_and_desired_state() -> None:
    retry = classify(TransientError("x", retry_after=50), 3, Backoff(base=1, cap=10))
    assert retry.kind == "retry" and retry.delay >= 50
    assert classify(RejectedError("no"), 0, Backoff()).reason == "RejectedError: no"
    assert classify(ValueError("secret?"), 0, Backoff()).reason == (
        "unexpected ValueError in the connector"
    )
    acts = Actions(expired="disable", locked="maintain", unlocked="maintain")
    assert desired_state(AccountState(expired=True), acts, version=1).disabled
    assert not desired_state(AccountState(locked=True), acts, version=1).disabled
    kept = desired_state(AccountState(), acts, version=2, owned=frozenset({"disabled"}))
    assert kept.disabled  # unlocked = maintain leaves what the gateway disabled
    temp = desired_state(AccountState(password_pending=True, temporary=True), acts, version=3)
    assert temp.temporary and temp.force_change
    for attempt in range(1, 12):
        assert 0 <= Backoff(base=1, cap=8).delay(attempt) <= 8


@pytest.mark.postgres
def test_two_dispatchers_share_postgres_and_survive_a_kill(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    """Each row is delivered by exactly one of two nodes; a node killed with leases is covered."""
    settings = make_settings(tmp_path, pg_cluster.new_database())
    state = str(tmp_path / "target.json")
    with registered():
        write_policy(settings, "dir1", policy_toml(state_file=state, concurrency=8))
        a, b = build(settings), build(settings)  # two nodes, the system clock
        try:
            names = [f"two{i:03d}" for i in range(120)]
            with on_disk(state) as t:
                for name in names:
                    t.add(name)
            pending_passwords(a, names, lambda n: f"Pw-{n}")

            async def both() -> None:
                da, db = fast(a, owner="node-a"), fast(b, owner="node-b")
                await da.start()
                await db.start()
                try:
                    await da.idle(timeout=60)
                    await db.idle(timeout=60)
                finally:
                    await da.stop()
                    await db.stop()
                assert da.delivered > 0 and db.delivered > 0
                assert da.delivered + db.delivered == len(names)

            asyncio.run(both())
            with on_disk(state) as t:
                counts = {n: len(t.applies_for(n)) for n in names}
            assert set(counts.values()) == {1}  # SKIP LOCKED: no row twice

            # node C hangs inside apply holding leases, and is killed with SIGKILL
            more = [f"kil{i:03d}" for i in range(20)]
            with on_disk(state) as t:
                for name in more:
                    t.add(name)
            pending_passwords(a, more, lambda n: f"Pw-{n}")
            child = subprocess.Popen(
                [sys.executable, "-m", "tests.support.dispatch_child"],
                env=dict(
                    os.environ,
                    GW_DB_URL=settings.database.url,
                    GW_POLICIES=str(settings.policies_dir),
                    GW_KEY=str(settings.secrets.key_file),
                    GW_LEASE="2",
                    GW_MODE="hang",
                    RECORDING_HANG="1",
                ),
                stdout=subprocess.DEVNULL,
            )
            try:
                deadline = time.monotonic() + 30
                while leased(a) == 0:
                    assert time.monotonic() < deadline, "the child never leased a row"
                    time.sleep(0.05)
            finally:
                child.send_signal(signal.SIGKILL)
                child.wait()
            assert leased(a) > 0

            async def survivor() -> None:
                d = fast(a, owner="node-a2")
                await d.start()
                try:
                    await asyncio.sleep(2.5)  # the dead node's leases expire
                    d.wake()
                    await d.idle(timeout=30)
                finally:
                    await d.stop()

            asyncio.run(survivor())
            with a.store.read() as s:
                statuses = {r.status for r in s.scalars(select(DesiredRow))}
            assert statuses == {DELIVERED}
            with on_disk(state) as t:
                assert all(len(t.applies_for(n)) == 1 for n in more)
        finally:
            a.close()
            b.close()


def leased(rt: Runtime) -> int:
    with rt.store.read() as s:
        return len(
            s.scalars(select(DesiredRow.id).where(DesiredRow.lease_owner.is_not(None))).all()
        )


@pytest.mark.postgres
def test_notify_wakes_another_node(tmp_path: Path, pg_cluster: Cluster) -> None:
    """A change committed on node B wakes node A's dispatcher (LISTEN/NOTIFY), no polling."""
    settings = make_settings(tmp_path, pg_cluster.new_database())
    with registered():
        write_policy(settings, "dir1", policy_toml())
        a, b = build(settings), build(settings)
        try:

            async def go() -> float:
                await user(b, "nod")
                d = fast(a, poll_interval=60.0)
                await d.start()
                try:
                    await asyncio.sleep(0.3)  # listening
                    started = time.monotonic()
                    await b.service.lock("nod", actor=ADMIN)
                    while not target().accounts["nod"]["disabled"]:
                        assert time.monotonic() - started < 5, "node A was not woken"
                        await asyncio.sleep(0.01)
                    return time.monotonic() - started
                finally:
                    await d.stop()

            assert asyncio.run(go()) < 2.0
        finally:
            a.close()
            b.close()


def test_reload_keeps_unchanged_connectors_and_retires_changed(
    settings: Settings, clock: FrozenClock
) -> None:
    from gateway.policies import reload_hook

    with registered():
        write_policy(settings, "keep", policy_toml())
        write_policy(settings, "swap", policy_toml())
        rt = make_runtime(settings, clock)
        try:

            async def go() -> None:
                await user(rt, "rel")
                d = fast(rt)
                await d.start()
                try:
                    await rt.service.lock("rel", actor=ADMIN)
                    await d.idle()
                    keep, swap = d.connectors["keep"], d.connectors["swap"]
                    assert isinstance(keep, RecordingConnector)
                    assert isinstance(swap, RecordingConnector)
                    write_policy(settings, "swap", policy_toml(locked="maintain"))
                    reload_hook(rt)
                    await rt.service.unlock("rel", actor=ADMIN)
                    await d.idle()
                    await asyncio.sleep(0.3)
                    assert d.connectors["keep"] is keep and not keep.closed
                    assert d.connectors["swap"] is not swap and swap.closed
                finally:
                    await d.stop()

            asyncio.run(go())
        finally:
            rt.close()


def test_breaker_states() -> None:
    now = [0.0]
    breaker = Breaker(threshold=2, cooldown=10, max_cooldown=25, now=lambda: now[0])
    assert breaker.allowance(8) == 8
    breaker.failure()
    assert breaker.allowance(8) == 8
    breaker.failure()  # open for 10 s
    assert breaker.is_open and breaker.allowance(8) == 0
    now[0] = 11
    assert breaker.allowance(8) == 1 and breaker.allowance(8) == 0  # half-open: one probe
    breaker.failure()  # the probe failed: open again, cooldown doubled
    now[0] = 30
    assert breaker.allowance(8) == 0
    now[0] = 32
    assert breaker.allowance(8) == 1
    breaker.success()
    assert not breaker.is_open and breaker.allowance(8) == 8
