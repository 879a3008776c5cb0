"""Security plumbing over real HTTP: headers, CSRF, cookies, sessions, client address, throttles."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from starlette.requests import Request

from gateway import mfa
from gateway.audit import Actor
from gateway.clock import FrozenClock
from gateway.runtime import Runtime
from gateway.web.security import (
    client_address,
    cookie_secure,
    parse_networks,
)
from gateway.web.sessions import SessionStore, WebSession
from tests.web.conftest import PASSWORD, Web, csrf_of, run

ADMIN = Actor("test")


def add_user(web: Web, name: str = "alice", kind: str = "user", password: str = PASSWORD) -> int:
    """Create an account with a password; returns its id."""
    acc, _ = run(
        web.rt.service.create_account(
            kind=kind, username=name, email=f"{name}@example.org", actor=ADMIN, password=password
        )
    )
    return acc.id


def session_rows(web: Web, account_id: int) -> list[WebSession]:
    with web.rt.store.read() as s:
        return list(s.scalars(select(WebSession).where(WebSession.account_id == account_id)))


def test_headers_on_pages_and_static(make_web: Callable[..., Web]) -> None:
    web = make_web()
    page = web.client.get("/login")
    assert page.status_code == 200
    h = page.headers
    assert "frame-ancestors 'none'" in h["content-security-policy"]
    assert "script-src" not in h["content-security-policy"]  # default-src 'none': no scripts
    assert h["content-security-policy"].startswith("default-src 'none'")
    assert h["x-content-type-options"] == "nosniff"
    assert h["referrer-policy"] == "no-referrer"
    assert h["cache-control"] == "no-store"
    assert h["x-frame-options"] == "DENY"
    assert "server" not in h
    css = web.client.get("/static/site.css")
    assert css.status_code == 200
    assert css.headers["x-content-type-options"] == "nosniff"
    assert "no-store" not in css.headers.get("cache-control", "")
    token_page = web.client.get("/reset/" + "x" * 43)
    assert token_page.headers["cache-control"] == "no-store"
    assert token_page.headers["referrer-policy"] == "no-referrer"


def test_csrf_refused_without_or_with_foreign_token(make_web: Callable[..., Web]) -> None:
    web = make_web()
    uid = add_user(web)
    # no token at all
    r = web.client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert r.status_code == 403
    assert "set-cookie" not in r.headers or "gw-user" not in r.headers["set-cookie"]
    # a token minted for another browser's cookie
    other = web.new_client()
    foreign = csrf_of(other.get("/login").text)
    web.client.get("/login")
    r = web.client.post("/login", data={"csrf": foreign, "username": "alice", "password": PASSWORD})
    assert r.status_code == 403
    assert session_rows(web, uid) == []
    # the reset request is refused too and queues nothing
    r = web.client.post("/reset", data={"email": "alice@example.org"})
    assert r.status_code == 403
    # a signed-in session: the profile forms need the session-bound token
    assert web.login("alice").status_code == 303
    r = web.client.post("/profile/recovery", data={"csrf": foreign, "recovery": "a@b.example"})
    assert r.status_code == 403
    r = web.client.post("/logout", data={"csrf": foreign})
    assert r.status_code == 403
    assert len(session_rows(web, uid)) == 1


def test_cookie_flags_loopback_http(make_web: Callable[..., Web]) -> None:
    web = make_web()
    add_user(web)
    page = web.client.get("/login")
    pre = page.headers["set-cookie"]
    assert pre.startswith("gw-pre=")
    assert "HttpOnly" in pre and "SameSite=strict" in pre and "Path=/" in pre
    assert "Secure" not in pre  # plain http on loopback: development only
    r = web.client.post(
        "/login", data={"csrf": csrf_of(page.text), "username": "alice", "password": PASSWORD}
    )
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("gw-user=") and "HttpOnly" in cookie and "SameSite=strict" in cookie


def test_cookie_flags_https_base_url(make_web: Callable[..., Web]) -> None:
    web = make_web(base_url="https://gw.example.org")
    page = web.client.get("/login")
    cookie = page.headers["set-cookie"]
    assert cookie.startswith("__Host-gw-pre=")
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Domain" not in cookie
    assert "max-age=31536000" in page.headers["strict-transport-security"]


@pytest.mark.parametrize(
    ("url", "secure"),
    [
        ("https://gw.example.org", True),
        ("http://127.0.0.1:8080", False),
        ("http://localhost:8080", False),
        ("http://[::1]:8080", False),
        ("http://gw.example.org", True),  # never drop Secure off loopback
        ("http://10.0.0.5:8080", True),
    ],
)
def test_cookie_secure_decision(url: str, secure: bool) -> None:
    assert cookie_secure(url) is secure


def _request(peer: str, xff: list[str]) -> Request:
    headers = [(b"x-forwarded-for", v.encode()) for v in xff]
    return Request({"type": "http", "client": (peer, 5000), "headers": headers})


def test_client_address_rules() -> None:
    proxies = parse_networks(["10.0.0.0/8", "192.0.2.1"])
    assert client_address(_request("198.51.100.7", ["203.0.113.9"]), proxies) == "198.51.100.7"
    assert client_address(_request("10.1.2.3", ["203.0.113.9"]), proxies) == "203.0.113.9"
    # a client-supplied first hop cannot hide the real one the proxy appended
    assert (
        client_address(_request("10.1.2.3", ["1.1.1.1, 203.0.113.9, 192.0.2.1"]), proxies)
        == "203.0.113.9"
    )
    assert client_address(_request("10.1.2.3", ["garbage"]), proxies) == "10.1.2.3"
    assert client_address(_request("10.1.2.3", []), proxies) == "10.1.2.3"


def _last_client(web: Web, action: str = "authenticate") -> str:
    rows = run(web.rt.service.audit_log(limit=20))
    return next(r["client"] for r in rows if r["action"] == action)


def test_forwarded_for_only_from_trusted_proxy(make_web: Callable[..., Web]) -> None:
    untrusted = make_web()
    add_user(untrusted)
    untrusted.login("alice", "wrong-password-here", client=None)
    untrusted.client.headers["X-Forwarded-For"] = "203.0.113.9"
    untrusted.login("alice", "wrong-password-here")
    assert _last_client(untrusted) == "127.0.0.1"

    trusted = make_web(trusted_proxies=["127.0.0.1"])
    add_user(trusted)
    trusted.client.headers["X-Forwarded-For"] = "203.0.113.9"
    trusted.login("alice", "wrong-password-here")
    assert _last_client(trusted) == "203.0.113.9"


def test_login_throttled_per_client(make_web: Callable[..., Web]) -> None:
    web = make_web(trusted_proxies=["127.0.0.1"])
    add_user(web)
    web.client.headers["X-Forwarded-For"] = "203.0.113.9"
    page = web.client.get("/login")
    token = csrf_of(page.text)
    codes = [
        web.client.post(
            "/login", data={"csrf": token, "username": "nobody", "password": "x" * 12}
        ).status_code
        for _ in range(21)
    ]
    assert codes[:20] == [401] * 20
    assert codes[20] == 429
    other = web.new_client(headers={"X-Forwarded-For": "203.0.113.10"})
    assert web.login("alice", client=other).status_code == 303


def test_session_id_hashed_and_ended_on_password_change(make_web: Callable[..., Web]) -> None:
    web = make_web()
    uid = add_user(web)
    r = web.login("alice")
    assert r.status_code == 303 and r.headers["location"] == "/profile"
    raw = web.client.cookies["gw-user"]
    rows = session_rows(web, uid)
    assert [row.id_hash for row in rows] == [hashlib.sha256(raw.encode()).hexdigest()]
    second = web.new_client()
    web.login("alice", client=second)
    assert len(session_rows(web, uid)) == 2
    assert web.client.get("/profile").status_code == 200
    # an admin sets a temporary password: every session of the account ends
    run(web.rt.service.set_temporary_password(uid, "Another-Horse-88y", actor=ADMIN))
    assert session_rows(web, uid) == []
    for c in (web.client, second):
        r = c.get("/profile")
        assert r.status_code == 303 and r.headers["location"] == "/login"


def test_logout_deletes_the_row(make_web: Callable[..., Web]) -> None:
    web = make_web()
    uid = add_user(web)
    web.login("alice")
    profile = web.client.get("/profile")
    r = web.client.post("/logout", data={"csrf": csrf_of(profile.text)})
    assert r.status_code == 303
    assert session_rows(web, uid) == []


def test_uniform_login_failures(make_web: Callable[..., Web]) -> None:
    web = make_web()
    add_user(web)
    add_user(web, "locky")
    add_user(web, "offy")
    add_user(web, "boss", kind="admin")
    run(web.rt.service.lock("locky", actor=ADMIN))
    run(web.rt.service.set_state("offy", active=False, actor=ADMIN))
    answers = []
    for who, pw in [
        ("alice", "wrong-password-1"),
        ("nobody", PASSWORD),
        ("locky", PASSWORD),
        ("offy", PASSWORD),
        ("boss", PASSWORD),  # an admin on the user portal
    ]:
        c = web.new_client()
        r = web.login(who, pw, client=c)
        answers.append((r.status_code, r.text.replace(csrf_of(r.text), "")))
        assert "gw-user" not in r.headers.get("set-cookie", "")
    assert len(set(answers)) == 1
    assert answers[0][0] == 401


def test_totp_login_and_must_change(make_web: Callable[..., Web]) -> None:
    web = make_web()
    uid = add_user(web)
    seed = run(web.rt.service.enrol_totp(uid, actor=ADMIN))
    run(
        web.rt.service.verify_totp(
            uid, mfa.code_at(seed, web.clock.now()), actor=ADMIN, confirm=True
        )
    )
    run(web.rt.service.set_temporary_password(uid, "Temporary-Pass-91z", actor=ADMIN))
    r = web.login("alice", "Temporary-Pass-91z")
    assert r.headers["location"] == "/login/totp"
    assert web.client.get("/profile").headers["location"] == "/login/totp"
    step = web.client.get("/login/totp")
    r = web.client.post("/login/totp", data={"csrf": csrf_of(step.text), "code": "000000"})
    assert r.status_code == 401
    web.clock.advance(timedelta(seconds=30))
    code = mfa.code_at(seed, web.clock.now())
    r = web.client.post("/login/totp", data={"csrf": csrf_of(r.text), "code": code})
    assert r.status_code == 303 and r.headers["location"] == "/password"
    assert web.client.get("/profile").headers["location"] == "/password"
    page = web.client.get("/password")
    assert 'name="current"' not in page.text
    data = {
        "csrf": csrf_of(page.text),
        "password": "Brand-New-Secret-42",
        "confirm": "Brand-New-Secret-42x",
    }
    r = web.client.post("/password", data=data)
    assert r.status_code == 400 and "do not match" in r.text
    data["confirm"] = "Brand-New-Secret-42"
    r = web.client.post("/password", data=data)
    assert r.status_code == 200 and "Sign in with the new password" in r.text
    assert session_rows(web, uid) == []  # no auto-login
    assert web.client.get("/profile").status_code == 303
    ok = run(web.rt.service.authenticate("alice", "Brand-New-Secret-42", via="test"))
    assert not ok.must_change


def test_wrong_totp_limit_locks_and_ends_session(make_web: Callable[..., Web]) -> None:
    web = make_web(org_toml="[mfa]\nuser_totp_attempts = 3\n")
    uid = add_user(web)
    seed = run(web.rt.service.enrol_totp(uid, actor=ADMIN))
    run(
        web.rt.service.verify_totp(
            uid, mfa.code_at(seed, web.clock.now()), actor=ADMIN, confirm=True
        )
    )
    web.login("alice")
    page = web.client.get("/login/totp")
    statuses = []
    for _ in range(3):
        r = web.client.post("/login/totp", data={"csrf": csrf_of(page.text), "code": "123456"})
        statuses.append(r.status_code)
        if r.status_code == 401 and 'name="code"' in r.text:
            page = r
    assert statuses == [401, 401, 401]
    assert run(web.rt.service.get_account(uid)).locked
    assert session_rows(web, uid) == []


def test_unknown_session_cookie_is_ignored(make_web: Callable[..., Web]) -> None:
    web = make_web()
    c = web.new_client(cookies={"gw-user": "forged"})
    r = c.get("/profile")
    assert r.status_code == 303 and r.headers["location"] == "/login"


def test_session_store_lifetimes_and_listener(rt: Runtime, clock: FrozenClock) -> None:
    """On SQLite and PostgreSQL: idle and absolute expiry, stages, rotation, ended on change."""
    acc, _ = run(
        rt.service.create_account(
            kind="user", username="sam", email="sam@example.org", actor=ADMIN, password=PASSWORD
        )
    )
    store = SessionStore(rt.store, clock)
    raw = store.create(acc.id, "user", "ok", False)
    info = store.get(raw, "user")
    assert info is not None and info.stage == "ok"
    assert store.get(raw, "admin") is None
    assert store.get("not-a-session", "user") is None
    for _ in range(40):  # used every 20 minutes: alive until the 12-hour cap
        clock.advance(timedelta(minutes=20))
        if store.get(raw, "user") is None:
            break
    assert clock.now() - datetime(2026, 1, 1, tzinfo=UTC) == timedelta(hours=12)
    raw = store.create(acc.id, "user", "ok", False)
    clock.advance(timedelta(minutes=31))
    assert store.get(raw, "user") is None  # idle
    pending = store.create(acc.id, "user", "mfa", True)
    clock.advance(timedelta(minutes=6))
    assert store.get(pending, "user") is None  # a TOTP step waits five minutes at most
    first = store.create(acc.id, "user", "mfa", True)
    info = store.get(first, "user")
    assert info is not None
    second = store.advance(info, "must_change")
    assert store.get(first, "user") is None
    advanced = store.get(second, "user")
    assert advanced is not None and advanced.stage == "must_change" and advanced.must_change
    store.create(acc.id, "user", "ok", False)
    assert store.count(acc.id) == 2
    run(rt.service.change_password(acc.id, "Another-Horse-88y", actor=ADMIN))
    assert store.count(acc.id) == 0
    store.create(acc.id, "user", "ok", False)
    run(rt.service.lock(acc.id, actor=ADMIN))
    assert store.count(acc.id) == 0
    store.create(acc.id, "user", "ok", False)
    clock.advance(timedelta(hours=1))
    assert store.purge_expired() == 1
