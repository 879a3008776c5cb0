"""kill -9 in the middle of a stream of password changes and lockouts, then restart.

A child process changes one account's password over and over and locks (five wrong passwords)
and unlocks another, acknowledging each operation on a pipe after it returned (committed).
It is killed with SIGKILL at a random moment. After the restart the database passes its
integrity check, every acknowledged change is there, and no change is there without its audit
row (at most one unacknowledged operation, the one in flight, may have committed as a whole).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import signal
import sqlite3
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from gateway.audit import Actor
from gateway.errors import AuthenticationFailed
from gateway.runtime import Runtime, build
from gateway.settings import Settings
from gateway.store.engine import make_engine
from gateway.store.models import Account, AuditEntry
from tests.support.runtime import make_settings

ORG = """
[passwords]
history = 1
[lockout]
threshold = 5
window_minutes = 15
duration_minutes = 0
"""
ADMIN = Actor("admin", via="cli")


def stream_password(i: int) -> str:
    return f"Stream-Password-{i:05d}-x"


def preload() -> list[str]:
    """Modules the fork server imports once, so that each child only builds its runtime."""
    loaded = [m for m in sys.modules if m.split(".")[0] in ("gateway", "connectors")]
    return sorted({*loaded, "tests.test_crash", "tests.test_lockout_parallel"})


def _stream(settings: Settings, conn: Connection, start: int) -> None:
    """Child: changes and lockouts forever, acknowledging each committed operation."""
    rt = build(settings)

    async def go() -> None:
        i = start
        while True:
            await rt.service.change_password("writer", stream_password(i), actor=ADMIN)
            conn.send(("pw", i))
            for _ in range(5):
                with contextlib.suppress(AuthenticationFailed):
                    await rt.service.authenticate("target", "wrong-password-0", via="test")
            conn.send(("locked", i))
            await rt.service.unlock("target", actor=ADMIN)
            conn.send(("unlocked", i))
            i += 1

    asyncio.run(go())


def _count(rt: Runtime, account_id: int, action: str, reason: str | None = None) -> int:
    with rt.store.read() as s:
        stmt = select(func.count()).where(
            AuditEntry.account_id == account_id, AuditEntry.action == action
        )
        if reason is not None:
            stmt = stmt.where(AuditEntry.reason == reason)
        return int(s.scalar(stmt) or 0)


def _run_and_kill(settings: Settings, seed: int, start: int) -> list[tuple[str, int]]:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(preload())
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_stream, args=(settings, child, start))
    proc.start()
    child.close()
    acks: list[tuple[str, int]] = []
    rnd = random.Random(seed)
    wanted = rnd.randint(6, 18)
    deadline = time.monotonic() + 60
    while len(acks) < wanted and time.monotonic() < deadline:
        if parent.poll(0.5):
            acks.append(parent.recv())
        assert proc.is_alive(), f"stream died early: {proc.exitcode}"
    time.sleep(rnd.uniform(0, 0.12))  # land anywhere in the next operation
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    while parent.poll(0):  # acknowledgements already in the pipe count too
        try:
            acks.append(parent.recv())
        except EOFError:
            break
    return acks


def _baseline(settings: Settings) -> dict[str, int]:
    rt = build(settings)
    try:
        with rt.store.read() as s:
            writer = s.scalars(select(Account.id).where(Account.username == "writer")).one()
            target = s.scalars(select(Account.id).where(Account.username == "target")).one()
        return {
            "changes": _count(rt, writer, "change_password"),
            "locks": _count(rt, target, "lock", "too many failures"),
            "unlocks": _count(rt, target, "unlock", "admin"),
            "failures": _count(rt, target, "authenticate", "wrong password"),
        }
    finally:
        rt.close()


def _wait_for_orphans(url: str) -> None:
    """PostgreSQL: let the server finish (commit or roll back) what the killed client sent."""
    engine = make_engine(url)
    try:
        deadline = time.monotonic() + 30
        while True:
            with engine.connect() as conn:
                others = conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND pid <> pg_backend_pid()"
                    )
                ).scalar()
            if not others:
                return
            assert time.monotonic() < deadline, "the killed client's sessions never ended"
            time.sleep(0.05)
    finally:
        engine.dispose()


def _check(
    settings: Settings, acks: list[tuple[str, int]], base: dict[str, int], start: int
) -> None:
    url = make_url(settings.database.url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        raw = sqlite3.connect(url.database)
        try:
            assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
        finally:
            raw.close()
    else:
        _wait_for_orphans(settings.database.url)
    rt = build(settings)  # the restart
    try:
        with rt.store.read() as s:
            writer = s.scalars(select(Account).where(Account.username == "writer")).one()
            target = s.scalars(select(Account).where(Account.username == "target")).one()
        # ---- password changes: the password in force is the n-th, n = its audit rows
        acked_pw = max((i - start for kind, i in acks if kind == "pw"), default=-1)
        changes = _count(rt, writer.id, "change_password") - base["changes"]
        assert acked_pw + 1 <= changes <= acked_pw + 2, (acked_pw, changes)
        assert writer.password_hash is not None
        current = stream_password(start + changes - 1)
        assert rt.hasher.verify_sync(writer.password_hash, current)
        assert not rt.hasher.verify_sync(writer.password_hash, stream_password(start + changes))
        # ---- lockouts: each lock and unlock present with its audit row
        acked_locks = sum(1 for kind, _ in acks if kind == "locked")
        acked_unlocks = sum(1 for kind, _ in acks if kind == "unlocked")
        locks = _count(rt, target.id, "lock", "too many failures") - base["locks"]
        unlocks = _count(rt, target.id, "unlock", "admin") - base["unlocks"]
        assert acked_locks <= locks <= acked_locks + 1, (acked_locks, locks)
        assert acked_unlocks <= unlocks <= acked_unlocks + 1, (acked_unlocks, unlocks)
        assert locks - unlocks in (0, 1)
        assert (target.locked_at is not None) == (locks > unlocks)
        # every counted failure has its audit row, except possibly the one whose password
        # was being verified at the kill (its reservation is committed before verification)
        failures = _count(rt, target.id, "authenticate", "wrong password") - base["failures"]
        in_cycle = failures - 5 * unlocks
        assert in_cycle >= 0
        assert target.failed_count in (in_cycle, in_cycle + 1), (target.failed_count, in_cycle)
        # ---- the restarted gateway works on the recovered data
        result = asyncio.run(rt.service.authenticate("writer", current, via="test"))
        assert result.username == "writer"
        asyncio.run(rt.service.change_password("writer", f"After-The-Crash-{start}", actor=ADMIN))
        asyncio.run(rt.service.unlock("target", actor=ADMIN))
    finally:
        rt.close()


def test_kill_9_loses_nothing_acknowledged(settings: Settings, tmp_path: Path) -> None:
    crash = make_settings(tmp_path / "crash", settings.database.url, org_toml=ORG)
    setup = build(crash)
    try:
        for name in ("writer", "target"):
            asyncio.run(
                setup.service.create_account(
                    kind="user",
                    username=name,
                    email=f"{name}@example.org",
                    actor=ADMIN,
                    password="Initial-Password-1",
                )
            )
    finally:
        setup.close()
    for round_ in range(2):  # kill, restart, kill again on the recovered database
        base = _baseline(crash)
        start = round_ * 100_000  # each round changes to passwords never used before
        acks = _run_and_kill(crash, seed=round_ + os.getpid(), start=start)
        assert any(kind == "pw" for kind, _ in acks)
        _check(crash, acks, base, start)
