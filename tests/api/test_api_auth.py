"""Admin API authentication: 401 everywhere, login with password + TOTP, lockout, API keys."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate
from sqlalchemy import select
from typer.testing import CliRunner

from gateway.apikeys import ApiKey, ApiSession, digest
from gateway.audit import Actor
from gateway.cli import app as cli_app
from gateway.clock import FrozenClock
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests.api import (
    ADMIN_PW,
    SETUP,
    USER_PW,
    audit_rows,
    bearer,
    client,
    login,
    make_admin,
    make_user,
    tick,
    totp_now,
)
from tests.support.runtime import make_runtime, make_settings

UNAUTH = {"detail": "authentication required"}


def _operations(doc: dict[str, object]) -> list[tuple[str, str]]:
    paths = doc["paths"]
    assert isinstance(paths, dict)
    return [
        (method.upper(), path.replace("{ref}", "someone"))
        for path, ops in paths.items()
        for method in ops
    ]


def _assert_unauthorized(r: httpx.Response) -> None:
    assert r.status_code == 401, (r.request.method, r.request.url, r.text)
    assert r.json() == UNAUTH
    assert r.headers["www-authenticate"] == 'Bearer realm="gateway"'
    assert "set-cookie" not in r.headers


def test_every_route_requires_auth(rt: Runtime) -> None:
    async def go() -> None:
        await make_admin(rt)
        async with client(rt) as c:
            doc = (await c.get("/api/v1/openapi.json")).json()
            ops = _operations(doc)
            assert len(ops) >= 18
            h = await bearer(c)
            key = (await c.post("/api/v1/api-keys", json={"name": "old"}, headers=h)).json()["key"]
            assert (await c.delete("/api/v1/api-keys/old", headers=h)).status_code == 200
            bad_headers = [
                {},
                {"Authorization": "Bearer "},
                {"Authorization": "Bearer gwk_0123456789ab_nope"},
                {"Authorization": "Bearer gwt_0123456789ab_nope"},
                {"Authorization": "Bearer " + key},  # revoked
                {"Authorization": "Bearer " + h["Authorization"][7:] + "x"},
                {"Authorization": "Basic cm9vdDpwYXNz"},
                {"Authorization": h["Authorization"].replace("Bearer", "Token")},
            ]
            for method, path in [*ops, ("GET", "/api/v1/no/such/thing"), ("PUT", "/api/v1")]:
                if path == "/api/v1/auth/login":
                    continue
                for headers in bad_headers:
                    # a malformed body must not change the answer: auth comes first
                    r = await c.request(method, path, headers=headers, content=b"{not json")
                    _assert_unauthorized(r)
            # the same token still works, so the failures above were about the credential
            assert (await c.get("/api/v1/auth/whoami", headers=h)).status_code == 200

    asyncio.run(go())


def test_login_with_password_and_totp(rt: Runtime) -> None:
    async def go() -> None:
        seed = await make_admin(rt, totp=True)
        assert seed is not None
        async with client(rt) as c:
            _assert_unauthorized(await login(c))  # TOTP enrolled: the code is required
            _assert_unauthorized(await login(c, code="000000"))
            code = totp_now(rt, seed)
            r = await login(c, code=code)
            assert r.status_code == 200, r.text
            body = r.json()
            token = body["access_token"]
            assert token.startswith("gwt_") and body["token_type"] == "bearer"
            assert body["expires_in"] == 15 * 60
            h = {"Authorization": f"Bearer {token}"}
            who = (await c.get("/api/v1/auth/whoami", headers=h)).json()
            assert who == {"kind": "admin", "name": "root", "client": "127.0.0.1"}
            # each code is accepted once
            _assert_unauthorized(await login(c, code=code))
            # the token is stored only as its SHA-256
            with rt.store.read() as s:
                rows = s.scalars(select(ApiSession)).all()
                assert len(rows) == 1
                assert rows[0].token_hash == digest(token)
                assert token not in json.dumps([str(v) for v in vars(rows[0]).values()])
            # short-lived: gone after 15 minutes
            tick(rt, 14 * 60)
            assert (await c.get("/api/v1/users", headers=h)).status_code == 200
            tick(rt, 61)
            _assert_unauthorized(await c.get("/api/v1/users", headers=h))
            # logout ends a token at once
            tick(rt)
            h2 = await bearer(c, code=totp_now(rt, seed))
            assert (await c.post("/api/v1/auth/logout", headers=h2)).status_code == 204
            _assert_unauthorized(await c.get("/api/v1/users", headers=h2))
            # rows of tokens expired for over a day are purged at the next login
            tick(rt, 2 * 24 * 3600)
            await bearer(c, code=totp_now(rt, seed))
            with rt.store.read() as s:
                assert len(s.scalars(select(ApiSession)).all()) == 1
        rows = await audit_rows(rt)
        logins = [r for r in rows if r["action"] == "api_login"]
        assert [r["outcome"] for r in logins].count("ok") == 3
        assert any(r["reason"] == "TOTP code missing" for r in logins)
        assert any(r["action"] == "api_logout" and r["actor"] == "admin:root" for r in rows)
        dump = json.dumps(rows)
        assert token not in dump and seed not in dump and ADMIN_PW not in dump

    asyncio.run(go())


def test_five_wrong_totp_codes_lock_the_admin(rt: Runtime) -> None:
    async def go() -> None:
        seed = await make_admin(rt, totp=True)
        assert seed is not None
        async with client(rt) as c:
            good = totp_now(rt, seed)
            wrong = f"{(int(good) + 1) % 1_000_000:06d}"
            for _ in range(5):
                _assert_unauthorized(await login(c, code=wrong))
            assert (await rt.service.get_account("root")).locked
            _assert_unauthorized(await login(c, code=good))  # right code, locked: same answer

    asyncio.run(go())


def test_login_failures_are_uniform_and_counted(rt: Runtime) -> None:
    async def go() -> None:
        await make_admin(rt)
        await make_admin(rt, "gone")
        await rt.service.set_state("gone", active=False, actor=SETUP)
        await make_user(rt, "alice")
        async with client(rt) as c:
            answers = [
                await login(c, "nobody", ADMIN_PW),
                await login(c, "alice", USER_PW),  # right password, but not an admin
                await login(c, "gone", ADMIN_PW),  # disabled
                await login(c, "root", "Wrong-Passphrase-000"),
            ]
            for r in answers:
                _assert_unauthorized(r)
            assert (
                len({(r.status_code, r.content, tuple(sorted(r.headers.items()))) for r in answers})
                == 1
            )
            for _ in range(4):  # threshold 5: the fifth wrong password locks
                _assert_unauthorized(await login(c, "root", "Wrong-Passphrase-000"))
            view = await rt.service.get_account("root")
            assert view.locked and view.lock_reason == "failures"
            _assert_unauthorized(await login(c, "root", ADMIN_PW))  # locked: refused like wrong
        rows = await audit_rows(rt)
        assert any(
            r["action"] == "api_login" and r["reason"] == "not an administrator" for r in rows
        )
        failed = [r for r in rows if r["action"] == "authenticate" and r["outcome"] == "failed"]
        assert all(r["via"] == "api" and r["client"] == "127.0.0.1" for r in failed)
        assert ADMIN_PW not in json.dumps(rows) and USER_PW not in json.dumps(rows)

    asyncio.run(go())


def test_token_dies_with_lock_disable_or_password_change(rt: Runtime) -> None:
    async def go() -> None:
        await make_admin(rt)
        async with client(rt) as c:
            h = await bearer(c)
            await rt.service.lock("root", actor=SETUP)
            _assert_unauthorized(await c.get("/api/v1/users", headers=h))
            await rt.service.unlock("root", actor=SETUP)
            h = await bearer(c)
            await rt.service.set_state("root", active=False, actor=SETUP)
            _assert_unauthorized(await c.get("/api/v1/users", headers=h))
            await rt.service.set_state("root", active=True, actor=SETUP)
            h = await bearer(c)
            tick(rt)
            await rt.service.change_password("root", "Another-Admin-Passphrase-7", actor=SETUP)
            _assert_unauthorized(await c.get("/api/v1/users", headers=h))

    asyncio.run(go())


def test_api_key_lifecycle(rt: Runtime) -> None:
    async def go() -> None:
        await make_admin(rt)
        async with client(rt) as c:
            h = await bearer(c)
            r = await c.post("/api/v1/api-keys", json={"name": "deploy"}, headers=h)
            assert r.status_code == 201, r.text
            key = r.json()["key"]
            assert key.startswith("gwk_") and r.json()["api_key"]["name"] == "deploy"
            listed = await c.get("/api/v1/api-keys", headers=h)
            assert key not in listed.text and digest(key) not in listed.text
            assert listed.json()[0]["last_used_at"] is None
            # duplicate names are refused
            dup = await c.post("/api/v1/api-keys", json={"name": "deploy"}, headers=h)
            assert dup.status_code == 409
            bad = await c.post("/api/v1/api-keys", json={"name": "no spaces"}, headers=h)
            assert bad.status_code == 422
        tick(rt, 5)
        async with client(rt, ip="192.0.2.10") as c:
            k = {"Authorization": f"Bearer {key}"}
            who = (await c.get("/api/v1/auth/whoami", headers=k)).json()
            assert who["kind"] == "apikey" and who["name"] == "deploy"
            r = await c.post(
                "/api/v1/users", json={"username": "bob", "email": "bob@example.org"}, headers=k
            )
            assert r.status_code == 201
            # a key can neither mint nor revoke keys
            assert (
                await c.post("/api/v1/api-keys", json={"name": "x"}, headers=k)
            ).status_code == 403
            assert (await c.delete("/api/v1/api-keys/deploy", headers=k)).status_code == 403
            assert (await c.post("/api/v1/auth/logout", headers=k)).status_code == 403
        with rt.store.read() as s:
            row = s.scalars(select(ApiKey)).one()
            assert row.key_hash == digest(key)
            assert row.last_used_from == "192.0.2.10"
            assert row.last_used_at is not None
            assert key not in json.dumps([str(v) for v in vars(row).values()])
        async with client(rt) as c:
            h = await bearer(c)
            r = await c.delete("/api/v1/api-keys/deploy", headers=h)
            assert r.status_code == 200 and r.json()["revoked_at"] is not None
            _assert_unauthorized(
                await c.get("/api/v1/users", headers={"Authorization": f"Bearer {key}"})
            )
            assert (await c.delete("/api/v1/api-keys/nope", headers=h)).status_code == 404
        rows = await audit_rows(rt)
        actions = {(r["action"], r["actor"]) for r in rows}
        assert ("apikey_create", "admin:root") in actions
        assert ("apikey_revoke", "admin:root") in actions
        assert ("user_add", "apikey:deploy") in actions
        refused = [r for r in rows if r["actor"] == "apikey:deploy" and r["outcome"] == "refused"]
        assert len(refused) == 3 and all(r["client"] == "192.0.2.10" for r in refused)
        assert key not in json.dumps(rows)

    asyncio.run(go())


def test_client_address_only_from_trusted_proxies(tmp_path: Path, sqlite_url: str) -> None:
    settings = make_settings(tmp_path, sqlite_url, http={"trusted_proxies": ["10.0.0.0/8"]})
    rt = make_runtime(settings, FrozenClock())

    async def go() -> None:
        await make_admin(rt)
        fwd = {"X-Forwarded-For": "198.51.100.7, 10.0.0.9"}
        async with client(rt, ip="10.1.2.3") as c:  # a trusted proxy
            h = await bearer(c) | fwd
            assert (
                await c.post(
                    "/api/v1/users", json={"username": "u1", "email": "u1@example.org"}, headers=h
                )
            ).status_code == 201
        async with client(rt, ip="203.0.113.5") as c:  # not a proxy: the header is ignored
            h = await bearer(c) | fwd
            assert (
                await c.post(
                    "/api/v1/users", json={"username": "u2", "email": "u2@example.org"}, headers=h
                )
            ).status_code == 201
        rows = {r["subject"]: r for r in await audit_rows(rt) if r["action"] == "user_add"}
        assert rows["u1"]["client"] == "198.51.100.7"
        assert rows["u2"]["client"] == "203.0.113.5"

    try:
        asyncio.run(go())
    finally:
        rt.close()


def test_openapi_document_is_valid_and_complete(tmp_path: Path, sqlite_url: str) -> None:
    rt = make_runtime(make_settings(tmp_path, sqlite_url), FrozenClock())

    async def go() -> dict[str, object]:
        async with client(rt) as c:
            r = await c.get("/api/v1/openapi.json")
            assert r.status_code == 200
            return dict(r.json())

    try:
        doc = asyncio.run(go())
    finally:
        rt.close()
    validate(doc)
    paths = doc["paths"]
    assert isinstance(paths, dict)
    expected = {
        ("post", "/api/v1/auth/login"),
        ("get", "/api/v1/users"),
        ("post", "/api/v1/users"),
        ("get", "/api/v1/users/{ref}"),
        ("patch", "/api/v1/users/{ref}"),
        ("delete", "/api/v1/users/{ref}"),
        ("post", "/api/v1/users/{ref}/lock"),
        ("post", "/api/v1/users/{ref}/unlock"),
        ("post", "/api/v1/users/{ref}/expire"),
        ("post", "/api/v1/users/{ref}/temporary-password"),
        ("put", "/api/v1/users/{ref}/recovery-email"),
        ("post", "/api/v1/users/{ref}/send-reset"),
        ("get", "/api/v1/admins"),
        ("post", "/api/v1/admins"),
        ("post", "/api/v1/admins/{ref}/send-reset"),
        ("get", "/api/v1/audit"),
        ("get", "/api/v1/api-keys"),
        ("post", "/api/v1/api-keys"),
        ("delete", "/api/v1/api-keys/{ref}"),
    }
    found = {(m, p) for p, ops in paths.items() for m in ops}
    assert expected <= found, expected - found
    assert all(p.startswith("/api/v1/") for p in paths)
    assert doc["security"] == [{"bearer": []}]
    assert paths["/api/v1/auth/login"]["post"]["security"] == []
    schemas = doc["components"]["schemas"]  # type: ignore[index]
    assert schemas["LoginIn"]["properties"]["password"]["format"] == "password"
    assert "password_hash" not in json.dumps(doc)


def test_cli_apikey_create_list_revoke(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings: Settings = make_settings(tmp_path, sqlite_url)
    config = tmp_path / "gateway.toml"
    monkeypatch.setenv("GATEWAY_CONFIG", str(config))  # restored after the test
    config.write_text(
        f'policies_dir = "{settings.policies_dir}"\n'
        f'[database]\nurl = "{sqlite_url}"\n'
        f'[secrets]\nkey_file = "{settings.secrets.key_file}"\n'
        f'[mail]\nmaildir = "{settings.mail.maildir}"\n',
        encoding="utf-8",
    )
    runner = CliRunner()
    base = ["--config", str(config), "apikey"]
    r = runner.invoke(cli_app, [*base, "create", "--name", "ci", "--json"])
    assert r.exit_code == 0, r.output
    created = json.loads(r.output)
    key = created["key"]
    assert key.startswith("gwk_") and created["name"] == "ci"
    r = runner.invoke(cli_app, [*base, "list", "--json"])
    assert r.exit_code == 0 and key not in r.output
    assert json.loads(r.output)[0]["revoked_at"] is None
    assert runner.invoke(cli_app, [*base, "create", "--name", "ci"]).exit_code == 1
    rt = make_runtime(settings, FrozenClock())

    async def use(expect: int) -> None:
        async with client(rt) as c:
            r = await c.get("/api/v1/users", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == expect

    try:
        asyncio.run(use(200))
        r = runner.invoke(cli_app, [*base, "revoke", "ci"])
        assert r.exit_code == 0, r.output
        asyncio.run(use(401))
        assert runner.invoke(cli_app, [*base, "revoke", "nope"]).exit_code == 1
        rows = asyncio.run(audit_rows(rt))
        assert {"apikey_create", "apikey_revoke"} <= {r["action"] for r in rows}
        assert all(r["actor"].startswith("cli:") for r in rows if r["action"].startswith("apikey"))
    finally:
        rt.close()


def test_actor_helper_names_key_and_admin() -> None:
    from gateway.apikeys import Principal

    assert Principal("apikey", "ci", 1).actor("1.2.3.4") == Actor("apikey:ci", "api", "1.2.3.4")
    assert Principal("admin", "root", 2, 7).actor("::1") == Actor("admin:root", "api", "::1")


def test_must_change_admin_and_client_rate_limit(tmp_path: Path, sqlite_url: str) -> None:
    rt = make_runtime(make_settings(tmp_path, sqlite_url), FrozenClock())

    async def go() -> None:
        _, temp = await rt.service.create_account(
            kind="admin", username="fresh", email="fresh@example.org", actor=SETUP, generate=True
        )
        assert temp is not None
        async with client(rt, ip="192.0.2.1") as c:
            # a temporary password is right but cannot open an API login
            r = await login(c, "fresh", temp)
            assert r.status_code == 403 and "access_token" not in r.text and temp not in r.text
            for _ in range(19):
                _assert_unauthorized(await login(c, "nobody", "Wrong-Passphrase-000"))
            r = await login(c, "nobody", "Wrong-Passphrase-000")
            assert r.status_code == 429 and r.headers["retry-after"]
        async with client(rt) as c:  # request bodies are small; a huge one is refused unread
            big = json.dumps({"username": "fresh", "password": "x" * 200_000})
            r = await c.post(
                "/api/v1/auth/login", content=big, headers={"content-type": "application/json"}
            )
            assert r.status_code == 413
        rows = await audit_rows(rt)
        assert any(r["reason"] == "password must change" for r in rows)
        assert temp not in json.dumps(rows)

    try:
        asyncio.run(go())
    finally:
        rt.close()
