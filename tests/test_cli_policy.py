"""``gateway policy`` and ``gateway sync`` through the real typer app."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.audit import Actor
from gateway.cli import app
from gateway.dispatcher import Dispatcher
from gateway.runtime import Runtime, build
from gateway.settings import Settings
from tests.support.recording import policy_toml, registered, target, write_policy
from tests.support.runtime import make_settings

ADMIN = Actor("test-admin")
CANARY = "Canary-Cli-Secret-4417"


@pytest.fixture
def env(tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    settings = make_settings(tmp_path, sqlite_url)
    monkeypatch.setenv("GATEWAY_DATABASE__URL", sqlite_url)
    monkeypatch.setenv("GATEWAY_SECRETS__KEY_FILE", str(settings.secrets.key_file))
    monkeypatch.setenv("GATEWAY_POLICIES_DIR", str(settings.policies_dir))
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    with registered():
        write_policy(settings, "dir1", policy_toml())
        write_policy(settings, "staffonly", policy_toml(groups=("staff",), locked="maintain"))
        yield settings


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def seed(settings: Settings) -> Runtime:
    rt = build(settings)  # the system clock, as the CLI uses

    async def go() -> None:
        await rt.service.create_account(
            kind="user", username="ann", email="ann@example.org", actor=ADMIN
        )
        target().add("ann")
        await rt.service.change_password("ann", CANARY, actor=ADMIN)

    asyncio.run(go())
    return rt


def test_check_ok_and_errors(env: Settings) -> None:
    code, out = cli("policy", "check")
    assert code == 0 and "all policy files are valid" in out
    bad = policy_toml().replace('locked = "disable"', 'locked = "melt"')
    write_policy(env, "broken", bad.replace("concurrency = 4", "concurrency = -1"))
    code, out = cli("policy", "check")
    assert code == 1
    assert "broken.toml:line 3, field concurrency:" in out
    code, out = cli("policy", "check", "--json")
    assert {e["location"] for e in json.loads(out)} == {"line 3, field concurrency"}


def test_schema(tmp_path: Path, env: Settings) -> None:
    code, _ = cli("policy", "schema", "-o", str(tmp_path / "schema.json"))
    assert code == 0
    schema = json.loads((tmp_path / "schema.json").read_text())
    assert schema["properties"]["actions"]


def test_plan(env: Settings) -> None:
    seed(env).close()
    code, out = cli("policy", "plan", "ann")
    assert code == 0, out
    assert "dir1 (recording): covers yes" in out
    assert "on locked           disable: disable the account" in out
    assert "on unlocked         restore: re-enable the account" in out
    assert "on expired          force_change: require a password change" in out
    assert "on password_change  set: set the new password" in out
    assert "staffonly (recording): covers no" in out
    assert "current row      pending: set the new password" in out
    assert CANARY not in out
    assert cli("policy", "plan", "nobody")[0] == 1


def test_sync_status_retry_discard_audited(env: Settings) -> None:
    rt = seed(env)
    try:
        code, out = cli("sync", "status", "--json")
        rows = json.loads(out)
        assert code == 0 and [(r["account"], r["status"]) for r in rows] == [("ann", "pending")]
        assert rows[0]["password_pending"] and CANARY not in out
        target().poison.add("ann")

        async def deliver() -> None:
            d = Dispatcher(rt, poll_interval=0.2)
            await d.start()
            try:
                await d.idle()
            finally:
                await d.stop()

        asyncio.run(deliver())
        code, out = cli("sync", "status", "ann")
        assert "dead" in out and "RejectedError" in out and CANARY not in out
        assert cli("sync", "retry")[0] == 2  # needs a selector
        code, out = cli("sync", "retry", "ann")
        assert code == 0 and "1 row(s) queued" in out
        target().poison.clear()
        asyncio.run(deliver())
        code, out = cli("sync", "status", "--json")
        assert json.loads(out)[0]["status"] == "delivered"
        assert json.loads(out)[0]["password_pending"] is False  # wiped when dead-lettered
        asyncio.run(rt.service.lock("ann", actor=ADMIN))
        code, out = cli("sync", "discard", "--all")
        assert code == 0 and "1 row(s) discarded" in out
        actions = [r["action"] for r in asyncio.run(rt.service.audit_log(None, 50))]
        assert {"sync_status", "sync_retry", "sync_discard"} <= set(actions)
    finally:
        rt.close()


def test_check_missing_directory(tmp_path: Path, env: Settings) -> None:
    code, out = cli("policy", "check", "--dir", str(tmp_path / "nope"))
    assert code == 2 and "is not a directory" in out
