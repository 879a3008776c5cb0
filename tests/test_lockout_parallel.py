"""50 parallel wrong attempts from separate processes against threshold 5, on both backends.

Each attempt runs in its own process with its own runtime (engine, pools, hasher) on the same
database and key file, so the count can only be right if check-and-increment is atomic in the
database. The right password is sent from one more process while the burst is in flight.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import sys
import time
from datetime import UTC, datetime
from multiprocessing.synchronize import Barrier

from sqlalchemy import select

from gateway.audit import Actor
from gateway.clock import FrozenClock
from gateway.errors import AuthenticationFailed
from gateway.runtime import build
from gateway.settings import Settings
from gateway.store.models import Account, AuditEntry

WRONG = 50
THRESHOLD = 5
PASSWORD = "Correct-Horse-77x"
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

OK, REFUSED, ERROR = 0, 10, 11


def preload() -> list[str]:
    """Modules the fork server imports once, so that each child only builds its runtime."""
    loaded = [m for m in sys.modules if m.split(".")[0] in ("gateway", "connectors")]
    return sorted({*loaded, "tests.test_crash", "tests.test_lockout_parallel"})


def _attempt(settings: Settings, barrier: Barrier, password: str, wait_for_burst: bool) -> None:
    """Child process: own runtime, wait at the barrier, one authentication; result as exit code."""
    rt = build(settings, clock=FrozenClock(AT))
    code = ERROR
    try:
        barrier.wait(timeout=120)
        if wait_for_burst:
            # send the right password once the burst has reached the threshold, while the
            # other attempts are still in flight
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # past it, try anyway (and the test fails)
                with rt.store.read() as s:
                    count = s.scalar(select(Account.failed_count).where(Account.username == "eve"))
                if count is not None and count >= THRESHOLD:
                    break
                time.sleep(0.001)
        try:
            asyncio.run(rt.service.authenticate("eve", password, via="radius", client="10.0.0.9"))
            code = OK
        except AuthenticationFailed:
            code = REFUSED
    finally:
        rt.close()
    raise SystemExit(code)


def test_parallel_processes_are_all_counted(settings: Settings) -> None:
    setup = build(settings, clock=FrozenClock(AT))
    try:
        asyncio.run(
            setup.service.create_account(
                kind="user",
                username="eve",
                email="eve@example.org",
                actor=Actor("admin"),
                password=PASSWORD,
            )
        )
        assert setup.org_policy.lockout.threshold == THRESHOLD
    finally:
        setup.close()

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(preload())
    barrier = ctx.Barrier(WRONG + 1)
    procs = [
        ctx.Process(target=_attempt, args=(settings, barrier, f"wrong-guess-{i:03d}", False))
        for i in range(WRONG)
    ]
    right = ctx.Process(target=_attempt, args=(settings, barrier, PASSWORD, True))
    procs.insert(WRONG // 2, right)
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    assert all(p.exitcode is not None for p in procs), "an attempt hung"
    codes = [p.exitcode for p in procs]
    assert right.exitcode == REFUSED, f"right password: exit {right.exitcode}"
    assert codes.count(REFUSED) == WRONG + 1, codes

    check = build(settings, clock=FrozenClock(AT))
    try:
        with check.store.read() as s:
            acc = s.scalars(select(Account).where(Account.username == "eve")).one()
            rows = list(
                s.scalars(
                    select(AuditEntry).where(
                        AuditEntry.account_id == acc.id, AuditEntry.action == "authenticate"
                    )
                )
            )
            locks = s.scalars(
                select(AuditEntry).where(
                    AuditEntry.account_id == acc.id, AuditEntry.action == "lock"
                )
            ).all()
        # every attempt counted and recorded, the right one included
        assert acc.failed_count == WRONG + 1
        assert len(rows) == WRONG + 1 and all(r.outcome == "failed" for r in rows)
        assert all(r.via == "radius" and r.client == "10.0.0.9" for r in rows)
        # at most `threshold` attempts were evaluated; the rest were refused unevaluated
        reasons = [r.reason for r in rows]
        assert reasons.count("wrong password") == THRESHOLD, reasons
        assert reasons.count("locked") == WRONG + 1 - THRESHOLD, reasons
        assert acc.locked_at is not None and acc.lock_reason == "failures"
        assert len(locks) == 1  # locked once, not once per process
        # and the right password stays refused afterwards
        try:
            asyncio.run(check.service.authenticate("eve", PASSWORD, via="portal"))
            raise AssertionError("a locked account accepted its password")
        except AuthenticationFailed:
            pass
    finally:
        check.close()
