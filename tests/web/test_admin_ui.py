"""Admin portal over real HTTP: sign-in, self reset with ToS, users, administrators, settings."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select

from gateway import org_overrides
from gateway.audit import SYSTEM
from gateway.store.models import Account, Token
from tests.web.conftest import Web, csrf_of, links_of, run
from tests.web.test_portal import enrol, next_code
from tests.web.test_security import add_user, session_rows

NEW = "Quiet-Harbour-Signal-63"


def admin_login(web: Web, name: str = "boss") -> None:
    r = web.login(name, portal="/admin")
    assert r.status_code == 303 and r.headers["location"] == "/admin/users", r.text


def audit_rows(web: Web, action: str) -> list[dict[str, object]]:
    return [r for r in run(web.rt.service.audit_log(limit=200)) if r["action"] == action]


def test_admin_login_page_and_portal_separation(make_web: Callable[..., Web]) -> None:
    web = make_web()
    add_user(web)
    add_user(web, "boss", kind="admin")
    page = web.client.get("/admin/login")
    assert '<a href="/admin/reset">Reset Administrator Password</a>' in page.text
    assert '<a href="/login">User Portal Login</a>' in page.text
    r = web.login("alice", portal="/admin")  # a user cannot enter the admin portal
    assert r.status_code == 401
    assert web.client.get("/admin/users").headers["location"] == "/admin/login"
    admin_login(web)
    assert web.client.get("/admin/users").status_code == 200
    assert web.client.get("/profile").status_code == 303  # the user portal session is separate


def test_admin_self_reset_with_terms_and_totp(make_web: Callable[..., Web]) -> None:
    web = make_web()
    uid = add_user(web, "boss", kind="admin")
    seed = enrol(web, uid)
    r = web.form_post("/admin/reset", {"email": "boss@example.org"})
    assert r.status_code == 200
    (msg,) = web.inbox.wait("boss@example.org", "Password Reset")
    assert msg["Subject"] == "Password Reset"
    (link,) = [u for u in links_of(msg) if "/admin/reset/" in u]
    assert link.startswith(web.url + "/admin/reset/")
    with web.rt.store.read() as s:
        tok = s.scalars(select(Token).where(Token.account_id == uid)).one()
        assert tok.expires_at.replace(tzinfo=None) == (
            web.clock.now() + timedelta(hours=1)
        ).replace(tzinfo=None)
    path = link.removeprefix(web.url)
    assert web.client.get(path.replace("/admin", "", 1)).status_code == 404  # wrong portal
    form = web.client.get(path)
    assert 'name="tos"' in form.text and 'name="totp"' in form.text
    assert "Set Administrator Password" in form.text
    data = {"csrf": csrf_of(form.text), "password": NEW, "confirm": NEW}
    r = web.client.post(path, data={**data, "totp": next_code(web, seed)})
    assert r.status_code == 400 and "Terms of Service" in r.text
    r = web.client.post(path, data={**data, "tos": "yes", "totp": next_code(web, seed)})
    assert r.status_code == 200 and "Password reset was successful." in r.text
    assert web.inbox.wait("boss@example.org", "successful")
    assert run(web.rt.service.authenticate("boss", NEW, via="test")).kind == "admin"


def test_admin_totp_limit_is_five(make_web: Callable[..., Web]) -> None:
    web = make_web(org_toml="[mfa]\nuser_totp_attempts = 2\n")
    uid = add_user(web, "boss", kind="admin")
    enrol(web, uid)
    assert web.form_post("/admin/reset", {"email": "boss@example.org"}).status_code == 200
    (msg,) = web.inbox.wait("boss@example.org", "Password Reset")
    path = links_of(msg)[0].removeprefix(web.url)
    form = web.client.get(path)
    data = {"csrf": csrf_of(form.text), "password": NEW, "confirm": NEW, "tos": "yes"}
    statuses = [
        web.client.post(path, data={**data, "totp": "000000"}).status_code for _ in range(5)
    ]
    assert statuses[:4] == [400] * 4
    assert run(web.rt.service.get_account(uid)).locked
    assert web.client.get(path).status_code == 404  # the lock revoked the link


def test_users_temporary_password_lock_and_recovery(make_web: Callable[..., Web]) -> None:
    web = make_web()
    uid = add_user(web)
    add_user(web, "boss", kind="admin")
    org_overrides.set_recovery_enabled(web.rt, True, actor=SYSTEM)
    admin_login(web)
    users = web.client.get("/admin/users")
    assert f'href="/admin/users/{uid}">alice</a>' in users.text
    page = web.client.get(f"/admin/users/{uid}")
    assert "Password Recovery Email" in page.text and "Save User" in page.text
    token = csrf_of(page.text)
    r = web.client.post(
        f"/admin/users/{uid}", data={"csrf": token, "temp": "typed", "temp_password": "short"}
    )
    assert r.status_code == 400
    r = web.client.post(
        f"/admin/users/{uid}",
        data={"csrf": token, "temp": "generate", "recovery": "alice@home.example"},
    )
    assert r.status_code == 200
    shown = re.search(r'id="generated" type="text" readonly value="([^"]+)"', r.text)
    assert shown
    acc = run(web.rt.service.get_account(uid))
    assert acc.must_change and acc.recovery_email == "alice@home.example"
    assert web.inbox.wait("alice@home.example", "Verify your recovery")
    other = web.new_client()
    r = web.login("alice", shown.group(1), client=other)
    assert r.headers["location"] == "/password"
    # lock and unlock, audited with the admin's name, the UI and the client address
    r = web.client.post(f"/admin/users/{uid}/lock", data={"csrf": token})
    assert r.status_code == 200 and run(web.rt.service.get_account(uid)).locked
    assert session_rows(web, uid) == []
    r = web.client.post(f"/admin/users/{uid}/unlock", data={"csrf": token})
    assert not run(web.rt.service.get_account(uid)).locked
    row = audit_rows(web, "unlock")[0]
    assert (row["actor"], row["via"], row["client"]) == ("boss", "admin-ui", "127.0.0.1")
    # a stale or foreign token changes nothing
    r = web.client.post(f"/admin/users/{uid}/lock", data={"csrf": "forged"})
    assert r.status_code == 403 and not run(web.rt.service.get_account(uid)).locked


def test_recovery_verified_mark_with_time(make_web: Callable[..., Web]) -> None:
    web = make_web()
    uid = add_user(web)
    add_user(web, "boss", kind="admin")
    when = web.clock.now()
    with web.rt.store.write() as s:
        acc = s.get(Account, uid)
        assert acc is not None
        acc.recovery_email, acc.recovery_email_verified_at = "alice@home.example", when
    org_overrides.set_recovery_enabled(web.rt, True, actor=SYSTEM)
    admin_login(web)
    page = web.client.get(f"/admin/users/{uid}").text
    stamp = when.strftime("%Y-%m-%d %H:%M UTC")
    assert f'id="verified" title="Verified {stamp}">✓ verified' in page


def test_send_reset_to_another_admin(make_web: Callable[..., Web]) -> None:
    web = make_web()
    add_user(web, "boss", kind="admin")
    other = add_user(web, "deputy", kind="admin")
    admin_login(web)
    listing = web.client.get("/admin/admins")
    assert f'href="/admin/admins/{other}">deputy</a>' in listing.text
    detail = web.client.get(f"/admin/admins/{other}")
    assert f'href="/admin/admins/{other}/send-reset">Send Password Reset Email</a>' in detail.text
    confirm = web.client.get(f"/admin/admins/{other}/send-reset")
    assert '<button type="submit">Send</button>' in confirm.text
    r = web.client.post(f"/admin/admins/{other}/send-reset", data={"csrf": csrf_of(confirm.text)})
    assert r.status_code == 200
    (msg,) = web.inbox.wait("deputy@example.org", "Password Reset")
    assert links_of(msg)[0].startswith(web.url + "/admin/reset/")
    with web.rt.store.read() as s:
        tok = s.scalars(select(Token).where(Token.account_id == other)).one()
        life = tok.expires_at.replace(tzinfo=None) - tok.created_at.replace(tzinfo=None)
        assert life == timedelta(hours=24)
    row = audit_rows(web, "send_reset")[0]
    assert (row["actor"], row["via"], row["subject"]) == ("boss", "admin-ui", "deputy")


def test_settings_toggle_recovery_email(make_web: Callable[..., Web]) -> None:
    web = make_web()
    add_user(web, "boss", kind="admin")
    admin_login(web)
    page = web.client.get("/admin/settings")
    assert (
        '<label for="recovery_enabled">Enable Password Recovery Email for Users</label>'
        in page.text
    )
    assert "checked" not in page.text
    r = web.client.post(
        "/admin/settings", data={"csrf": csrf_of(page.text), "recovery_enabled": "yes"}
    )
    assert r.status_code == 200 and "checked" in r.text
    assert org_overrides.recovery_enabled(web.rt)
    r = web.client.post("/admin/settings", data={"csrf": csrf_of(page.text)})
    assert not org_overrides.recovery_enabled(web.rt)
    rows = audit_rows(web, "org_setting")
    assert [r["actor"] for r in rows] == ["boss", "boss"]
    assert all(r["via"] == "admin-ui" for r in rows)


def test_admin_must_change_goes_to_password_page(make_web: Callable[..., Web]) -> None:
    web = make_web()
    uid = add_user(web, "boss", kind="admin")
    run(web.rt.service.set_temporary_password(uid, "Temporary-Pass-91z-admin", actor=SYSTEM))
    r = web.login("boss", "Temporary-Pass-91z-admin", portal="/admin")
    assert r.headers["location"] == "/admin/password"
    assert web.client.get("/admin/users").headers["location"] == "/admin/password"
