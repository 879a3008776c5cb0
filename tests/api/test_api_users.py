"""Admin API users: each endpoint's effect seen through the core, audited, no secrets out."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import update

from gateway.clock import FrozenClock
from gateway.errors import AuthenticationFailed
from gateway.mail.sender import MailSender
from gateway.propagation_models import DEAD, DesiredRow
from gateway.runtime import Runtime
from gateway.web.flows import load_flows
from tests.api import SETUP, USER_PW, audit_rows, bearer, client, make_admin, make_user, tick
from tests.support.recording import policy_toml, registered, write_policy
from tests.support.runtime import make_runtime, make_settings
from tests.support.smtp import SmtpServer, links, smtp_server, token_of  # noqa: F401

RECOVERY_ON = """
[lockout]
threshold = 5
window_minutes = 15
duration_minutes = 30

[recovery_email]
enabled = true
"""


def test_user_lifecycle_through_the_api(rt: Runtime) -> None:
    async def go() -> None:
        await make_admin(rt)
        svc = rt.service
        async with client(rt) as c:
            h = await bearer(c)
            r = await c.post(
                "/api/v1/users",
                json={
                    "username": "bob",
                    "email": "bob@example.org",
                    "display_name": "Bob",
                    "groups": ["staff"],
                    "generate_password": True,
                },
                headers=h,
            )
            assert r.status_code == 201, r.text
            temp = r.json()["temporary_password"]
            bob = r.json()["account"]
            assert bob["must_change"] and bob["temporary"] and bob["groups"] == ["staff"]
            auth = await svc.authenticate("bob", temp, via="test")
            assert auth.must_change
            # get by id, username and e-mail; list
            for ref in (str(bob["id"]), "bob", "BOB@example.org"):
                got = await c.get(f"/api/v1/users/{ref}", headers=h)
                assert got.status_code == 200 and got.json()["id"] == bob["id"]
            listed = (await c.get("/api/v1/users", headers=h)).json()
            assert [u["username"] for u in listed] == ["bob"]  # admins are not users
            # update profile, disable, enable
            r = await c.patch(
                "/api/v1/users/bob",
                json={"display_name": "Robert", "groups": ["ops"], "never_expires": True},
                headers=h,
            )
            assert r.status_code == 200 and r.json()["display_name"] == "Robert"
            view = await svc.get_account("bob")
            assert view.groups == ("ops",) and view.never_expires
            r = await c.patch("/api/v1/users/bob", json={"enabled": False}, headers=h)
            assert r.json()["state"] == "disabled"
            with pytest.raises(AuthenticationFailed):
                await svc.authenticate("bob", temp, via="test")
            await c.patch("/api/v1/users/bob", json={"enabled": True}, headers=h)
            assert (await svc.get_account("bob")).state == "active"
            # lock for ten minutes, unlock
            r = await c.post("/api/v1/users/bob/lock", json={"minutes": 10}, headers=h)
            assert r.status_code == 200 and r.json()["locked"] and r.json()["locked_until"]
            view = await svc.get_account("bob")
            assert view.locked and view.lock_reason == "admin"
            with pytest.raises(AuthenticationFailed):
                await svc.authenticate("bob", temp, via="test")
            r = await c.post("/api/v1/users/bob/unlock", headers=h)
            assert r.status_code == 200 and not r.json()["locked"]
            assert not (await svc.get_account("bob")).locked
            # a lock without a body lasts until an admin unlocks
            r = await c.post("/api/v1/users/bob/lock", headers=h)
            assert r.json()["locked"] and r.json()["locked_until"] is None
            await c.post("/api/v1/users/bob/unlock", headers=h)
            # typed temporary password: full rules; then generated
            r = await c.post(
                "/api/v1/users/bob/temporary-password", json={"password": USER_PW}, headers=h
            )
            assert r.status_code == 200 and r.json()["temporary_password"] is None
            assert (await svc.authenticate("bob", USER_PW, via="test")).must_change
            r = await c.post("/api/v1/users/bob/temporary-password", headers=h)
            temp2 = r.json()["temporary_password"]
            assert temp2 and temp2 != temp
            await svc.authenticate("bob", temp2, via="test")
            # expire
            await svc.change_password("bob", "Fresh-Long-Passphrase-99", actor=SETUP)
            r = await c.post("/api/v1/users/bob/expire", headers=h)
            assert r.status_code == 200 and r.json()["must_change"]
            with pytest.raises(AuthenticationFailed):
                await svc.authenticate("bob", "Fresh-Long-Passphrase-99", via="test")
            # delete
            r = await c.delete("/api/v1/users/bob", headers=h)
            assert r.status_code == 204
            assert (await c.get("/api/v1/users/bob", headers=h)).status_code == 404
            # the one place a generated password appears is its own answer
            everything = (await c.get("/api/v1/audit?limit=1000", headers=h)).text
            assert temp not in everything and temp2 not in everything
        rows = await audit_rows(rt)
        mine = [r for r in rows if r["actor"] == "admin:root"]
        assert {
            "user_add",
            "set_password",
            "update",
            "disable",
            "enable",
            "lock",
            "unlock",
            "set_temporary_password",
            "expire",
            "delete",
        } <= {r["action"] for r in mine}
        assert all(r["via"] == "api" and r["client"] == "127.0.0.1" for r in mine)
        dump = json.dumps(rows)
        for secret in (temp, temp2, USER_PW, "$argon2"):
            assert secret not in dump

    asyncio.run(go())


def test_errors_are_mapped_and_refusals_audited(rt: Runtime) -> None:
    async def go() -> None:
        await make_admin(rt)
        await make_user(rt, "alice")
        async with client(rt) as c:
            h = await bearer(c)
            dup = await c.post(
                "/api/v1/users", json={"username": "ALICE", "email": "x@example.org"}, headers=h
            )
            assert dup.status_code == 409
            assert (await c.get("/api/v1/users/nobody", headers=h)).status_code == 404
            assert (await c.get("/api/v1/users/root", headers=h)).status_code == 404  # an admin
            assert (await c.post("/api/v1/users/root/lock", headers=h)).status_code == 404
            assert not (await rt.service.get_account("root")).locked
            weak = "alice-and-more-words"  # contains the username
            r = await c.post(
                "/api/v1/users/alice/temporary-password", json={"password": weak}, headers=h
            )
            assert r.status_code == 422
            assert r.json() == {
                "detail": "The password must not contain your username or e-mail address.",
                "rule": "password",
            }
            await rt.service.authenticate("alice", USER_PW, via="test")  # unchanged
            # validation errors never echo the input
            secret = "S3cret-Value-" + "z" * 2000
            r = await c.post(
                "/api/v1/users",
                json={"username": "carl", "email": "carl@example.org", "password": secret},
                headers=h,
            )
            assert r.status_code == 422 and "S3cret" not in r.text
            r = await c.post(
                "/api/v1/users",
                json={"username": "carl", "email": "carl@example.org", "bogus": "S3cret-x"},
                headers=h,
            )
            assert r.status_code == 422 and "S3cret" not in r.text
            r = await c.post(
                "/api/v1/users",
                json={
                    "username": "carl",
                    "email": "carl@example.org",
                    "password": "S3cret-Value-long-enough",
                    "generate_password": True,
                },
                headers=h,
            )
            assert r.status_code == 422 and "S3cret" not in r.text
        rows = await audit_rows(rt)
        refused = {r["action"]: r for r in rows if r["outcome"] in ("refused", "failed")}
        assert refused["api_create_user"]["reason"].startswith("an account with that")
        assert refused["api_temporary_password"]["subject"] == "alice"
        assert refused["api_temporary_password"]["actor"] == "admin:root"
        assert refused["api_temporary_password"]["client"] == "127.0.0.1"
        assert refused["api_lock_user"]["reason"] == "not found"
        assert weak not in json.dumps(rows)

    asyncio.run(go())


def test_audit_query_filters(rt: Runtime) -> None:
    async def go() -> None:
        await make_admin(rt)
        alice = await make_user(rt, "alice")
        await make_user(rt, "bert")
        async with client(rt) as c:
            h = await bearer(c)
            await c.post("/api/v1/users/alice/lock", headers=h)
            tick(rt, 3600)
            h = await bearer(c)  # the first token has expired meanwhile
            await c.post("/api/v1/users/alice/unlock", headers=h)
            await c.post("/api/v1/users/bert/expire", headers=h)
            rows = (await c.get(f"/api/v1/audit?account={alice}", headers=h)).json()
            assert rows and all(r["account_id"] == alice for r in rows)
            assert rows[0]["action"] == "unlock"  # newest first
            by_name = (await c.get("/api/v1/audit?account=alice", headers=h)).json()
            assert by_name == rows
            mine = (await c.get("/api/v1/audit?actor=admin:root", headers=h)).json()
            assert {r["action"] for r in mine} == {"lock", "unlock", "expire", "api_login"}
            locks = (await c.get("/api/v1/audit?action=lock", headers=h)).json()
            assert [r["subject"] for r in locks] == ["alice"]
            late = (
                await c.get("/api/v1/audit", params={"since": "2026-01-01T00:30:00Z"}, headers=h)
            ).json()
            assert {r["action"] for r in late} == {"authenticate", "api_login", "unlock", "expire"}
            page1 = (await c.get("/api/v1/audit?limit=2", headers=h)).json()
            page2 = (
                await c.get(f"/api/v1/audit?limit=2&before_id={page1[-1]['id']}", headers=h)
            ).json()
            assert len(page1) == 2 and page2[0]["id"] < page1[-1]["id"]
            assert (await c.get("/api/v1/audit?limit=0", headers=h)).status_code == 422
            assert (await c.get("/api/v1/audit?account=ghost", headers=h)).status_code == 404

    asyncio.run(go())


def _smtp_runtime(tmp_path: Path, url: str, smtp: SmtpServer, org: str | None = None) -> Runtime:
    settings = make_settings(tmp_path, url, **({"org_toml": org} if org else {}))
    mail = smtp.mail_settings(maildir=settings.mail.maildir)
    settings = settings.model_copy(update={"mail": mail})
    return make_runtime(settings)


def test_reset_endpoints_send_mail(
    tmp_path: Path,
    db_url: str,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    rt = _smtp_runtime(tmp_path, db_url, smtp_server, RECOVERY_ON)

    async def go() -> None:
        await make_admin(rt)
        await make_user(rt, "alice")
        sender = MailSender(rt)
        base = rt.settings.http.base_url
        async with client(rt) as c:
            h = await bearer(c)
            r = await c.post("/api/v1/users/alice/send-reset", headers=h)
            assert r.status_code == 202, r.text
            while await sender.run_once():
                pass
            (link,) = [
                u for m in smtp_server.to("alice@example.org") for u in links(m) if "/reset/" in u
            ]
            assert link.startswith(base + "/reset/")
            page = load_flows(rt).open_reset(token_of(link))
            assert page is not None and page.username == "alice" and page.kind == "user"
            # recovery e-mail: must differ from the work address; a "Verify Now!" mail goes out
            r = await c.put(
                "/api/v1/users/alice/recovery-email",
                json={"address": "alice@example.org"},
                headers=h,
            )
            assert r.status_code == 422
            r = await c.put(
                "/api/v1/users/alice/recovery-email",
                json={"address": "alice.home@example.net"},
                headers=h,
            )
            assert r.status_code == 200, r.text
            assert r.json()["recovery_email"] == "alice.home@example.net"
            assert r.json()["recovery_email_verified_at"] is None
            while await sender.run_once():
                pass
            (verify,) = smtp_server.to("alice.home@example.net")
            assert any("/verify-recovery/" in u for u in links(verify))
            # admin reset: generated temporary password and a new recovery address in one call
            r = await c.post(
                "/api/v1/users/alice/admin-reset",
                json={"generate_password": True, "recovery_email": "alice.two@example.net"},
                headers=h,
            )
            assert r.status_code == 200, r.text
            temp = r.json()["temporary_password"]
            assert r.json()["account"]["recovery_email"] == "alice.two@example.net"
            assert (await rt.service.authenticate("alice", temp, via="test")).must_change
            r = await c.post(
                "/api/v1/users/alice/admin-reset", json={"temporary_password": "short"}, headers=h
            )
            assert r.status_code == 422
            assert (
                await c.post("/api/v1/users/alice/admin-reset", json={}, headers=h)
            ).status_code == 422
            await sender.run_once()
        for m in smtp_server.messages:
            assert temp not in str(m)
        rows = await audit_rows(rt)
        assert any(r["action"] == "send_reset" and r["actor"] == "admin:root" for r in rows)
        assert temp not in json.dumps(rows)

    try:
        asyncio.run(go())
    finally:
        rt.close()


def test_sync_status_retry_and_discard(tmp_path: Path, db_url: str) -> None:
    with registered():
        settings = make_settings(tmp_path, db_url)
        write_policy(settings, "dir1", policy_toml())
        rt = make_runtime(settings, FrozenClock())

        async def go() -> None:
            await make_admin(rt)
            await make_user(rt, "alice")
            async with client(rt) as c:
                h = await bearer(c)
                rows = (await c.get("/api/v1/sync?account=alice", headers=h)).json()
                assert [(r["account"], r["resource"]) for r in rows] == [("alice", "dir1")]
                assert rows[0]["password_pending"] is True and rows[0]["status"] == "pending"
                assert USER_PW not in json.dumps(rows)
                with rt.store.write() as s:
                    s.execute(update(DesiredRow).values(status=DEAD, last_error="rejected"))
                r = await c.post("/api/v1/sync/retry", json={"account": "alice"}, headers=h)
                assert r.json() == {"count": 1}
                assert (await c.get("/api/v1/sync?account=alice", headers=h)).json()[0][
                    "status"
                ] == "pending"
                r = await c.post("/api/v1/sync/discard", json={"resource": "dir1"}, headers=h)
                assert r.json()["count"] >= 1
                after = (await c.get("/api/v1/sync?account=alice", headers=h)).json()
                assert after[0]["status"] == "discarded" and not after[0]["password_pending"]
            audited = {(r["action"], r["actor"]) for r in await audit_rows(rt)}
            for action in ("sync_status", "sync_retry", "sync_discard"):
                assert (action, "admin:root") in audited

        try:
            asyncio.run(go())
        finally:
            rt.close()
