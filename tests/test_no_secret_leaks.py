"""No password, token, TOTP seed or code reaches a log line, an audit row or the DB in clear.

One run goes through the paths that handle secrets: account creation with a password, wrong and
right logins, a self-service change, a generated temporary password, TOTP enrolment and checks, a
reset token, and propagation to a target that first fails and then accepts. Logging is captured
at DEBUG for every logger; every canary is then searched for in the log text, in every audit row
and in the raw SQLite files (database and WAL).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from datetime import timedelta
from pathlib import Path

import pytest

from gateway import mfa
from gateway.audit import Actor
from gateway.clock import FrozenClock
from gateway.dispatcher import Dispatcher
from gateway.errors import AuthenticationFailed
from gateway.settings import Settings
from gateway.tokens import Purpose
from tests.support.recording import policy_toml, registered, target, write_policy
from tests.support.runtime import make_runtime, make_settings

ADMIN = Actor("admin:test", via="test", client="192.0.2.7")
FIRST = "Canary-First-Pass-4417"
SECOND = "Canary-Second-Pass-9023"
WRONG = "Canary-Wrong-Guess-6650"


def test_no_secret_in_logs_audit_or_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings: Settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'gateway.db'}")
    clock = FrozenClock()
    canaries = [FIRST, SECOND, WRONG]
    words: list[str] = []
    caplog.set_level(logging.DEBUG)
    with registered():
        write_policy(settings, "dir1", policy_toml())
        rt = make_runtime(settings, clock)
        try:
            target().add("leak")
            target().down = True  # the first delivery fails: error paths log too

            async def go() -> None:
                svc = rt.service
                await svc.create_account(
                    kind="user",
                    username="leak",
                    email="leak@example.org",
                    actor=ADMIN,
                    password=FIRST,
                )
                with pytest.raises(AuthenticationFailed):
                    await svc.authenticate("leak", WRONG, via="test", client="192.0.2.9")
                await svc.authenticate("leak", FIRST, via="test")
                await svc.change_password("leak", SECOND, actor=ADMIN, current_password=FIRST)
                generated = await svc.set_temporary_password("leak", actor=ADMIN)
                assert generated is not None
                canaries.append(generated)
                seed = await svc.enrol_totp("leak", actor=ADMIN)
                canaries.append(seed)
                code = mfa.code_at(seed, clock.now())
                await svc.verify_totp("leak", code, actor=ADMIN, confirm=True)
                words.append(code)  # six digits: too short to search for in binary files
                view = await svc.get_account("leak")
                token = svc.issue_token(
                    view.id, Purpose.SELF_RESET, timedelta(hours=1), actor=ADMIN
                )
                canaries.append(token)
                dispatcher = Dispatcher(rt, poll_interval=0.1)  # type: ignore[arg-type]
                await dispatcher.start()
                try:
                    await asyncio.sleep(0.3)  # at least one failed delivery
                    target().down = False
                    clock.advance(timedelta(minutes=10))  # past any backoff
                    started = time.monotonic()
                    while target().accounts["leak"]["password"] != generated:
                        assert time.monotonic() - started < 10, "not delivered"
                        await asyncio.sleep(0.05)
                    await dispatcher.idle()
                finally:
                    await dispatcher.stop()

            asyncio.run(go())
            audit_rows = asyncio.run(rt.service.audit_log(limit=1000))
        finally:
            rt.close()

    logged = caplog.text
    audited = json.dumps(audit_rows)
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("gateway.db*") if p.is_file())
    assert len(audit_rows) > 8 and logged  # the run really logged and audited
    for canary in canaries:
        assert canary not in logged, "a secret reached a log line"
        assert canary not in audited, "a secret reached an audit row"
        assert canary.encode() not in stored, "a secret is stored in clear"
    for word in words:
        assert not re.search(rf"\b{word}\b", logged + audited), "a TOTP code was logged"
