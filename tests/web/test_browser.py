"""End-to-end in Debian Chromium (Playwright): the real daemon, mail to a real SMTP server.

Screenshots of every step are kept under ``test-artifacts/web/``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any, TypeVar

import pytest

from gateway import mfa, org_overrides
from gateway.audit import Actor
from gateway.runtime import Runtime, build
from tests.support.browser import Daemon, chromium, shot, write_config
from tests.support.postgres import free_port
from tests.support.runtime import make_settings
from tests.support.smtp import SmtpServer, links

pytestmark = pytest.mark.browser
T = TypeVar("T")


def call(coro: Coroutine[Any, Any, T]) -> T:
    """Run a core coroutine off the thread Playwright's own event loop occupies."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


ADMIN = Actor("test")
OLD = "Correct-Horse-77x"


class Stack:
    """The daemon, the SMTP sink, and a runtime on the same database for set-up and checks."""

    def __init__(self, daemon: Daemon, smtp: SmtpServer, rt: Runtime) -> None:
        self.daemon = daemon
        self.smtp = smtp
        self.rt = rt
        self.url = daemon.url

    def add(self, name: str, kind: str = "user", *, totp: bool = False) -> str | None:
        """Create an account (and enrol TOTP with a code of the previous step)."""
        acc, _ = call(
            self.rt.service.create_account(
                kind=kind, username=name, email=f"{name}@example.org", actor=ADMIN, password=OLD
            )
        )
        if not totp:
            return None
        seed = call(self.rt.service.enrol_totp(acc.id, actor=ADMIN))
        earlier = mfa.code_at(seed, datetime.now(UTC) - timedelta(seconds=30))
        call(self.rt.service.verify_totp(acc.id, earlier, actor=ADMIN, confirm=True))
        return seed

    def mail(self, to: str, subject: str) -> EmailMessage:
        """Wait for the newest mail to ``to`` whose subject contains ``subject``."""
        for _ in range(300):
            for msg in reversed(self.smtp.to(to)):
                if subject in str(msg["Subject"]):
                    return msg
            time.sleep(0.05)
        raise AssertionError(f"no {subject!r} mail to {to}")

    def mail_link(self, to: str, subject: str, part: str) -> str:
        """Wait for a mail and return its link containing ``part``."""
        return next(u for u in links(self.mail(to, subject)) if part in u)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One daemon for the module (SQLite), mail to aiosmtpd over a socket."""
    tmp = tmp_path_factory.mktemp("browser")
    smtp = SmtpServer(tmp)
    smtp.start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    db = tmp / "gateway.db"
    settings = make_settings(
        tmp, f"sqlite:///{db}", http={"listen": f"127.0.0.1:{port}", "base_url": url}
    )
    config = write_config(
        tmp,
        f"""
policies_dir = "{tmp / "policies"}"
log_level = "WARNING"
[database]
url = "sqlite:///{db}"
[http]
listen = "127.0.0.1:{port}"
base_url = "{url}"
[mail]
host = "{smtp.host}"
port = {smtp.port}
tls = "none"
sender = "gateway@example.org"
[secrets]
key_file = "{settings.secrets.key_file}"
""",
    )
    daemon = Daemon(config, url, tmp / "daemon.log").start()
    rt = build(settings)
    try:
        yield Stack(daemon, smtp, rt)
    finally:
        rt.close()
        daemon.stop()
        smtp.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian Chromium, launched once for the module."""
    with chromium() as b:
        yield b


def new_page(browser: Any) -> Any:
    context = browser.new_context(
        viewport={"width": 1000, "height": 760}, java_script_enabled=False
    )
    return context.new_page()


def test_user_self_service_reset_with_totp(stack: Stack, browser: Any) -> None:
    seed = stack.add("uma", totp=True)
    assert seed is not None
    page = new_page(browser)
    page.goto(f"{stack.url}/login")
    shot(page, "user-01-login")
    page.get_by_role("link", name="Reset User Password").click()
    page.get_by_label("Email").fill("uma@example.org")
    shot(page, "user-02-reset-request")
    page.get_by_role("button", name="Send Reset Request").click()
    page.get_by_text("a message with a reset link is on its way").wait_for()
    shot(page, "user-03-check-mail")
    link = stack.mail_link("uma@example.org", "Password Reset", "/reset/")
    assert link.startswith(stack.url + "/reset/")
    page.goto(link)
    new = "Orchard-Kettle-Drum-90"
    page.get_by_label("Password", exact=True).fill(new)
    page.get_by_label("Confirm Password").fill(new)
    code = mfa.code_at(seed, datetime.now(UTC) + timedelta(seconds=30))
    page.get_by_label("Six-digit code from your authenticator app").fill(code)
    shot(page, "user-04-new-password")
    page.get_by_role("button", name="Reset Password").click()
    page.get_by_text("Password reset was successful.").wait_for()
    shot(page, "user-05-success")
    ok = call(stack.rt.service.authenticate("uma", new, via="test"))
    assert ok.username == "uma"
    # sign in with the new password (the second factor follows)
    page.get_by_role("link", name="Sign in").click()
    page.get_by_label("Email or username").fill("uma")
    page.get_by_label("Password").fill(new)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("Six-digit code from your authenticator app").wait_for()
    shot(page, "user-06-login-totp")
    page.context.close()


def test_admin_self_reset_with_terms_of_service(stack: Stack, browser: Any) -> None:
    seed = stack.add("ada", "admin", totp=True)
    assert seed is not None
    page = new_page(browser)
    page.goto(f"{stack.url}/admin/login")
    shot(page, "admin-01-login")
    page.get_by_role("link", name="Reset Administrator Password").click()
    page.get_by_label("Email").fill("ada@example.org")
    page.get_by_role("button", name="Set Password").click()
    page.get_by_text("a message with a reset link is on its way").wait_for()
    link = stack.mail_link("ada@example.org", "Password Reset", "/admin/reset/")
    page.goto(link)
    page.get_by_role("heading", name="Set Administrator Password").wait_for()
    new = "Granite-Lighthouse-Cove-31"
    page.get_by_label("Password", exact=True).fill(new)
    page.get_by_label("Confirm Password").fill(new)
    code = mfa.code_at(seed, datetime.now(UTC) + timedelta(seconds=30))
    page.get_by_label("Six-digit code from your authenticator app").fill(code)
    page.get_by_role("button", name="Set Password").click()  # box not ticked: the form stays
    assert page.get_by_label("I have read and agree to the Terms of Service").is_visible()
    assert not page.get_by_text("Password reset was successful.").is_visible()
    shot(page, "admin-02-terms-unticked")
    page.get_by_label("I have read and agree to the Terms of Service").check()
    shot(page, "admin-03-terms-ticked")
    page.get_by_role("button", name="Set Password").click()
    page.get_by_text("Password reset was successful.").wait_for()
    shot(page, "admin-04-success")
    assert call(stack.rt.service.authenticate("ada", new, via="test")).kind == "admin"
    page.context.close()


def test_recovery_email_verification(stack: Stack, browser: Any) -> None:
    stack.add("rita")
    org_overrides.set_recovery_enabled(stack.rt, True, actor=ADMIN)
    page = new_page(browser)
    page.goto(f"{stack.url}/login")
    page.get_by_label("Email or username").fill("rita@example.org")
    page.get_by_label("Password").fill(OLD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Profile").wait_for()
    shot(page, "recovery-01-profile")
    page.get_by_role("link", name="Recovery Email").click()
    page.get_by_label("Recovery Email").fill("rita@home.example")
    page.get_by_role("button", name="Save").click()
    page.get_by_text("We sent a message to rita@home.example").wait_for()
    shot(page, "recovery-02-saved")
    link = stack.mail_link("rita@home.example", "Verify your recovery", "/verify-recovery/")
    other = new_page(browser)  # the link is opened from the mail, in a fresh tab
    other.goto(link)
    shot(other, "recovery-03-verify-page")
    other.get_by_role("button", name="Verify Now!").click()
    other.get_by_text("Your recovery e-mail address is verified.").wait_for()
    shot(other, "recovery-04-verified")
    acc = call(stack.rt.service.get_account("rita"))
    assert acc.recovery_email == "rita@home.example"
    assert acc.recovery_email_verified_at is not None
    assert stack.mail("rita@home.example", "is verified")  # the confirmation mail
    page.goto(f"{stack.url}/profile")
    assert page.locator("span.ok[title^='Verified ']").is_visible()
    shot(page, "recovery-05-profile-verified")
    # TOTP enrolment: the QR code renders under the strict CSP, next to the text secret
    page.get_by_role("link", name="Set up an authenticator app (TOTP)").click()
    page.get_by_role("button", name="Start").click()
    qr = page.get_by_role("img", name="TOTP QR code")
    box = qr.bounding_box()
    assert box is not None and box["width"] > 100
    secret = page.get_by_label("Secret key").input_value()
    page.get_by_label("Enter the six-digit code the app shows").fill(
        mfa.code_at(secret, datetime.now(UTC))
    )
    shot(page, "totp-01-enrolment-qr")
    page.get_by_role("button", name="Confirm").click()
    page.get_by_text("Your authenticator app is set up.").wait_for()
    assert call(stack.rt.service.get_account("rita")).mfa_enrolled
    other.context.close()
    page.context.close()
