"""Admin API administrators: list, create under the admin rules, send a password reset e-mail."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gateway.mail.sender import MailSender
from gateway.runtime import Runtime
from gateway.web.flows import load_flows
from tests.api import ADMIN_PW, audit_rows, bearer, client, make_admin, make_user
from tests.support.runtime import make_runtime, make_settings
from tests.support.smtp import SmtpServer, links, smtp_server, token_of  # noqa: F401


def test_list_get_and_create_admins(rt: Runtime) -> None:
    async def go() -> None:
        await make_admin(rt)
        await make_user(rt, "alice")
        async with client(rt) as c:
            h = await bearer(c)
            listed = (await c.get("/api/v1/admins", headers=h)).json()
            assert [a["username"] for a in listed] == ["root"]
            # admin rules: 12-64 code points, no username or e-mail
            for weak in ("Short-1", "ops2-is-the-admin-here"):
                r = await c.post(
                    "/api/v1/admins",
                    json={"username": "ops2", "email": "ops2@example.org", "password": weak},
                    headers=h,
                )
                assert r.status_code == 422 and r.json()["rule"] == "password"
            r = await c.post(
                "/api/v1/admins",
                json={"username": "ops2", "email": "ops2@example.org", "password": ADMIN_PW},
                headers=h,
            )
            assert r.status_code == 201, r.text
            assert r.json()["account"]["kind"] == "admin"
            assert r.json()["temporary_password"] is None
            assert (await rt.service.authenticate("ops2", ADMIN_PW, via="test")).kind == "admin"
            # without a password: waits for a reset link
            r = await c.post(
                "/api/v1/admins",
                json={"username": "ops3", "email": "ops3@example.org"},
                headers=h,
            )
            assert r.status_code == 201 and not r.json()["account"]["password_set"]
            got = await c.get("/api/v1/admins/ops2@example.org", headers=h)
            assert got.status_code == 200 and got.json()["username"] == "ops2"
            assert (await c.get("/api/v1/admins/alice", headers=h)).status_code == 404
            assert (await c.delete("/api/v1/users/ops2", headers=h)).status_code == 404
            assert (await rt.service.get_account("ops2")).kind == "admin"
            listed = (await c.get("/api/v1/admins", headers=h)).json()
            assert [a["username"] for a in listed] == ["ops2", "ops3", "root"]
            assert ADMIN_PW not in json.dumps(listed)
        rows = await audit_rows(rt)
        adds = [r for r in rows if r["action"] == "admin_add" and r["actor"] == "admin:root"]
        assert {r["subject"] for r in adds} == {"ops2", "ops3"}
        assert all(r["via"] == "api" and r["client"] == "127.0.0.1" for r in adds)
        assert ADMIN_PW not in json.dumps(rows)

    asyncio.run(go())


def test_send_password_reset_email_to_an_admin(
    tmp_path: Path,
    db_url: str,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    settings = make_settings(tmp_path, db_url)
    settings = settings.model_copy(
        update={"mail": smtp_server.mail_settings(maildir=settings.mail.maildir)}
    )
    rt = make_runtime(settings)

    async def go() -> None:
        await make_admin(rt)
        await make_admin(rt, "ops2")
        await make_user(rt, "alice")
        sender = MailSender(rt)
        async with client(rt) as c:
            h = await bearer(c)
            key = (await c.post("/api/v1/api-keys", json={"name": "robot"}, headers=h)).json()[
                "key"
            ]
            k = {"Authorization": f"Bearer {key}"}
            # a key cannot make itself an administrator
            r = await c.post(
                "/api/v1/admins",
                json={"username": "evil", "email": "evil@example.org", "password": ADMIN_PW},
                headers=k,
            )
            assert r.status_code == 403
            r = await c.post("/api/v1/admins/ops2/send-reset", headers=k)
            assert r.status_code == 202, r.text
            assert (await c.post("/api/v1/admins/alice/send-reset", headers=k)).status_code == 404
            assert (await c.post("/api/v1/admins/ghost/send-reset", headers=k)).status_code == 404
        while await sender.run_once():
            pass
        resets = [m for m in smtp_server.to("ops2@example.org") if m["Subject"] == "Password Reset"]
        assert len(resets) == 1
        (link,) = [u for u in links(resets[0]) if "/reset/" in u]
        assert link.startswith(rt.settings.http.base_url + "/admin/reset/")
        page = load_flows(rt).open_reset(token_of(link))
        assert page is not None and page.kind == "admin" and page.username == "ops2"
        assert page.needs_tos
        assert not smtp_server.to("alice@example.org") or all(
            m["Subject"] != "Password Reset" for m in smtp_server.to("alice@example.org")
        )
        rows = await audit_rows(rt)
        sent = [r for r in rows if r["action"] == "send_reset"]
        assert [(r["actor"], r["subject"], r["via"]) for r in sent] == [
            ("apikey:robot", "ops2", "api")
        ]
        assert token_of(link) not in json.dumps(rows)

    try:
        asyncio.run(go())
    finally:
        rt.close()
