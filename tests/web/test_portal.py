"""User portal over real HTTP with mail delivered by the gateway: resets, poisoning, recovery."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
from sqlalchemy import select

from gateway import mfa, org_overrides
from gateway.audit import Actor
from gateway.errors import AuthenticationFailed
from gateway.mail.models import MailMessage
from gateway.store.models import Token
from gateway.web.flows import load_flows
from tests.web.conftest import Web, csrf_of, links_of, run
from tests.web.test_security import ADMIN, add_user

NEW = "Fresh-Meadow-Lantern-5"


def enrol(web: Web, account_id: int) -> str:
    """Enrol TOTP for an account and return the seed."""
    seed = run(web.rt.service.enrol_totp(account_id, actor=ADMIN))
    code = mfa.code_at(seed, web.clock.now())
    run(web.rt.service.verify_totp(account_id, code, actor=ADMIN, confirm=True))
    return seed


def next_code(web: Web, seed: str) -> str:
    """A fresh code (the clock moves one step so the last one is not reused)."""
    web.clock.advance(timedelta(seconds=30))
    return mfa.code_at(seed, web.clock.now())


def request_link(web: Web, address: str, prefix: str = "") -> str:
    """Ask for a reset through the form and return the link from the mail."""
    r = web.form_post(f"{prefix}/reset", {"email": address})
    assert r.status_code == 200
    msg = web.inbox.wait(address, "Password Reset")[-1]
    (link,) = [u for u in links_of(msg) if "/reset/" in u]
    return link


def tokens_of(web: Web, account_id: int) -> list[tuple[str, object, object]]:
    with web.rt.store.read() as s:
        rows = s.scalars(select(Token).where(Token.account_id == account_id))
        return [(t.purpose, t.used_at, t.revoked_at) for t in rows]


def test_login_page_links_to_reset(make_web: Callable[..., Web]) -> None:
    web = make_web()
    page = web.client.get("/login")
    assert '<a href="/reset">Reset User Password</a>' in page.text
    assert '<label for="username">' in page.text and '<label for="password">' in page.text
    r = web.client.get("/reset")
    assert '<label for="email">Email</label>' in r.text
    assert "Send Reset Request" in r.text


def test_user_self_reset_with_totp(make_web: Callable[..., Web]) -> None:
    web = make_web()
    uid = add_user(web)
    seed = enrol(web, uid)
    for _ in range(5):  # locked by failures: a reset clears the lock
        web.login("alice", "wrong-password-xx", client=web.new_client())
    assert run(web.rt.service.get_account(uid)).locked
    link = request_link(web, "alice@example.org")
    assert link.startswith(web.url + "/reset/")
    path = link.removeprefix(web.url)
    before = tokens_of(web, uid)
    form = web.client.get(path)
    form = web.client.get(path)  # a GET renders the form and changes nothing
    assert form.status_code == 200
    assert tokens_of(web, uid) == before
    assert 'name="totp"' in form.text and 'name="tos"' not in form.text
    assert 'id="push-mfa" hidden' in form.text
    token = csrf_of(form.text)

    def post(pw: str, confirm: str, code: str) -> httpx.Response:
        data = {"csrf": token, "password": pw, "confirm": confirm, "totp": code}
        return web.client.post(path, data=data)

    r = post(NEW, NEW + "x", next_code(web, seed))
    assert r.status_code == 400 and "do not match" in r.text
    r = post("short", "short", next_code(web, seed))
    assert r.status_code == 400 and 'name="password"' in r.text  # rules refused, link kept
    r = post(NEW, NEW, "000000")
    assert r.status_code == 400 and "not accepted" in r.text
    r = post(NEW, NEW, next_code(web, seed))
    assert r.status_code == 200 and "Password reset was successful." in r.text
    assert web.client.get(path).status_code == 404  # single use
    r = post(NEW, NEW, next_code(web, seed))
    assert r.status_code == 404
    ok = run(web.rt.service.authenticate("alice", NEW, via="test"))
    assert ok.account_id == uid
    assert not run(web.rt.service.get_account(uid)).locked
    assert web.inbox.wait("alice@example.org", "successful")


def test_reset_link_never_built_from_request_headers(make_web: Callable[..., Web]) -> None:
    web = make_web(trusted_proxies=["127.0.0.1"], base_url="https://portal.example.org")
    add_user(web)
    evil = {
        "Host": "evil.example",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "http",
        "Forwarded": "for=203.0.113.9;host=evil.example;proto=http",
        "Origin": "https://evil.example",
        "Referer": "https://evil.example/reset",
    }
    c = web.new_client(headers=evil)
    page = c.get("/reset")
    # Secure cookies are not sent back over this test's plain http: hand the cookie over
    pre = page.headers["set-cookie"].split(";", 1)[0]
    assert pre.startswith("__Host-gw-pre=")
    data = {"csrf": csrf_of(page.text), "email": "alice@example.org"}
    r = c.post("/reset", data=data, headers={"Cookie": pre})
    assert r.status_code == 200
    (msg,) = web.inbox.wait("alice@example.org", "Password Reset")
    links = links_of(msg)
    assert links and all(u.startswith("https://portal.example.org/reset/") for u in links)
    assert "evil" not in msg.as_string()


def _answer(r: httpx.Response) -> tuple[int, str, list[tuple[str, str]]]:
    headers = sorted((k, v) for k, v in r.headers.items() if k not in ("date", "content-length"))
    return r.status_code, r.text, headers


def test_reset_request_answers_uniformly(make_web: Callable[..., Web]) -> None:
    web = make_web()
    add_user(web)
    add_user(web, "locky")
    add_user(web, "offy")
    run(web.rt.service.lock("locky", actor=ADMIN))
    run(web.rt.service.set_state("offy", active=False, actor=ADMIN))
    c = web.new_client()
    token = csrf_of(c.get("/reset").text)
    answers = []
    for address in (
        "alice@example.org",
        "nobody@example.org",
        "locky@example.org",
        "offy@example.org",
    ):
        r = c.post("/reset", data={"csrf": token, "email": address})
        answers.append(_answer(r))
        assert "set-cookie" not in r.headers
    assert answers[0][0] == 200
    assert all(a == answers[0] for a in answers)
    load_flows(web.rt)
    deadline = time.monotonic() + 10
    while web.rt.extras.get("reset_tasks") and time.monotonic() < deadline:
        time.sleep(0.02)  # the requests are processed after the uniform answer
    assert not web.rt.extras.get("reset_tasks")
    with web.rt.store.read() as s:
        queued = s.scalars(
            select(MailMessage.recipient).where(MailMessage.template == "reset_link")
        )
        assert list(queued) == ["alice@example.org"]
    web.inbox.wait("alice@example.org", "Password Reset")


def test_recovery_email_profile_and_verification(make_web: Callable[..., Web]) -> None:
    web = make_web()
    uid = add_user(web)
    web.login("alice")
    assert "Recovery Email" not in web.client.get("/profile").text
    assert web.client.get("/profile/recovery").status_code == 404
    org_overrides.set_recovery_enabled(web.rt, True, actor=ADMIN)
    profile = web.client.get("/profile")
    assert '<a href="/profile/recovery">Recovery Email</a>' in profile.text
    page = web.client.get("/profile/recovery")
    r = web.client.post(
        "/profile/recovery", data={"csrf": csrf_of(page.text), "recovery": "ALICE@example.org"}
    )
    assert r.status_code == 400 and "differ" in r.text
    r = web.client.post(
        "/profile/recovery", data={"csrf": csrf_of(page.text), "recovery": "alice@home.example"}
    )
    assert r.status_code == 200 and "Verify Now!" in r.text
    (msg,) = web.inbox.wait("alice@home.example", "Verify your recovery")
    (link,) = [u for u in links_of(msg) if "/verify-recovery/" in u]
    path = link.removeprefix(web.url)
    anon = web.new_client()
    form = anon.get(path)
    assert form.status_code == 200 and "Verify Now!" in form.text
    assert run(web.rt.service.get_account(uid)).recovery_email_verified_at is None
    r = anon.post(path, data={"csrf": csrf_of(form.text)})
    assert r.status_code == 200 and "verified" in r.text
    acc = run(web.rt.service.get_account(uid))
    assert acc.recovery_email == "alice@home.example"
    assert acc.recovery_email_verified_at == web.clock.now()
    assert anon.post(path, data={"csrf": csrf_of(form.text)}).status_code == 404
    assert web.inbox.wait("alice@home.example", "is verified")
    mark = web.client.get("/profile").text
    assert re.search(r'title="Verified \d{4}-\d\d-\d\d \d\d:\d\d UTC"', mark)


def test_totp_enrolment_with_qr(make_web: Callable[..., Web]) -> None:
    web = make_web()
    uid = add_user(web)
    web.login("alice")
    page = web.client.get("/profile/totp")
    assert page.status_code == 200 and "<svg" not in page.text  # GET creates no seed
    r = web.client.post("/profile/totp/start", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 200
    assert '<svg role="img"' in r.text and "<script" not in r.text
    secret = re.search(r'id="secret" type="text" readonly value="([A-Z2-7]+)"', r.text)
    assert secret
    code = mfa.code_at(secret.group(1), web.clock.now())
    r = web.client.post("/profile/totp/confirm", data={"csrf": csrf_of(r.text), "code": code})
    assert r.status_code == 200 and "set up" in r.text
    assert run(web.rt.service.get_account(uid)).mfa_enrolled
    try:
        run(web.rt.service.verify_totp(uid, code, actor=Actor("t")))
        raise AssertionError("a code must be accepted once")
    except AuthenticationFailed:
        pass


def test_voluntary_password_change_needs_current(make_web: Callable[..., Web]) -> None:
    web = make_web()
    uid = add_user(web)
    web.login("alice")
    r = web.client.get("/profile/password")
    assert r.headers["location"] == "/password"
    page = web.client.get("/password")
    assert '<label for="current">Current password</label>' in page.text
    data = {"csrf": csrf_of(page.text), "password": NEW, "confirm": NEW}
    r = web.client.post("/password", data={**data, "current": "not-the-password"})
    assert r.status_code == 400 and "current password is not right" in r.text
    r = web.client.post("/password", data={**data, "current": "Correct-Horse-77x"})
    assert r.status_code == 200 and "sessions were ended" in r.text
    assert web.client.get("/profile").headers["location"] == "/login"
    assert run(web.rt.service.authenticate("alice", NEW, via="test")).account_id == uid
    assert web.inbox.wait("alice@example.org", "Your password was changed", count=2)


def test_enforced_mfa_enrolment_and_reset_refusal(make_web: Callable[..., Web]) -> None:
    web = make_web(org_toml="[mfa]\nenforce_for_portal = true\n")
    uid = add_user(web)
    r = web.login("alice")
    assert r.headers["location"] == "/profile/totp"
    assert web.client.get("/profile").headers["location"] == "/profile/totp"
    assert web.client.get("/password").headers["location"] == "/profile/totp"
    page = web.client.get("/profile/totp")
    r = web.client.post("/profile/totp/start", data={"csrf": csrf_of(page.text)})
    secret = re.search(r'id="secret" type="text" readonly value="([A-Z2-7]+)"', r.text)
    assert secret
    code = mfa.code_at(secret.group(1), web.clock.now())
    r = web.client.post("/profile/totp/confirm", data={"csrf": csrf_of(r.text), "code": code})
    assert r.status_code == 303 and r.headers["location"] == "/profile"
    assert web.client.get("/profile").status_code == 200
    assert run(web.rt.service.get_account(uid)).mfa_enrolled
    # another user, not enrolled, asks for a reset: same answer, and the mail says why not
    add_user(web, "bob")
    anon = web.new_client()
    r = web.form_post("/reset", {"email": "bob@example.org"}, anon)
    assert r.status_code == 200 and "a message with a reset link is on its way" in r.text
    (msg,) = web.inbox.wait("bob@example.org", "Password Reset")
    assert not [u for u in links_of(msg) if "/reset/" in u]
    assert "admin" in msg.get_body(preferencelist=("plain",)).get_content().lower()


def test_twenty_parallel_posts_of_one_link(make_web: Callable[..., Web]) -> None:
    web = make_web()
    uid = add_user(web)
    path = request_link(web, "alice@example.org").removeprefix(web.url)
    token = csrf_of(web.client.get(path).text)
    cookies = dict(web.client.cookies)

    def post(i: int) -> tuple[int, str]:
        pw = f"Parallel-Winner-{i:02d}-xyz"
        with httpx.Client(base_url=web.url, cookies=cookies, timeout=60) as c:
            r = c.post(path, data={"csrf": token, "password": pw, "confirm": pw})
            return r.status_code, pw if "Password reset was successful." in r.text else ""

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(post, range(20)))
    winners = [pw for _, pw in results if pw]
    assert len(winners) == 1
    assert sorted({code for code, _ in results}) in ([200, 400], [200, 404], [200, 400, 404])
    assert run(web.rt.service.authenticate("alice", winners[0], via="test")).account_id == uid
