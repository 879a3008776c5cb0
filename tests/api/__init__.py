"""Helpers for the admin API tests: an ASGI client on ``create_app(rt)``, admins, logins."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from gateway import mfa
from gateway.audit import Actor
from gateway.clock import FrozenClock
from gateway.runtime import Runtime
from gateway.web.app import create_app

ADMIN_PW = "Sturdy-Admin-Passphrase-42"
USER_PW = "Quiet-Harbour-Lantern-81"
SETUP = Actor("test-setup", via="test")


def client(rt: Runtime, ip: str = "127.0.0.1") -> httpx.AsyncClient:
    """An HTTP client talking to a fresh application over ASGI, from address ``ip``."""
    transport = httpx.ASGITransport(app=create_app(rt), client=(ip, 50123))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway.test")


async def make_admin(
    rt: Runtime, name: str = "root", *, totp: bool = False, password: str = ADMIN_PW
) -> str | None:
    """Create an administrator; with ``totp`` enrol and confirm TOTP and return the seed."""
    await rt.service.create_account(
        kind="admin", username=name, email=f"{name}@example.org", actor=SETUP, password=password
    )
    if not totp:
        return None
    seed = await rt.service.enrol_totp(name, actor=SETUP)
    now = rt.service.clock.now()
    await rt.service.verify_totp(name, mfa.code_at(seed, now), actor=SETUP, confirm=True)
    tick(rt)  # the confirming code's step is used up
    return seed


async def make_user(rt: Runtime, name: str = "alice", password: str | None = USER_PW) -> int:
    """Create a user with a long-term password; returns its id."""
    view, _ = await rt.service.create_account(
        kind="user", username=name, email=f"{name}@example.org", actor=SETUP, password=password
    )
    return view.id


def tick(rt: Runtime, seconds: int = 30) -> None:
    """Move the frozen clock on (one TOTP step by default)."""
    clock = rt.service.clock
    assert isinstance(clock, FrozenClock)
    clock.advance(timedelta(seconds=seconds))


def totp_now(rt: Runtime, seed: str) -> str:
    """The code an authenticator shows now."""
    return mfa.code_at(seed, rt.service.clock.now())


async def login(
    c: httpx.AsyncClient,
    username: str = "root",
    password: str = ADMIN_PW,
    code: str | None = None,
) -> httpx.Response:
    """POST the login form of the API."""
    body: dict[str, Any] = {"username": username, "password": password}
    if code is not None:
        body["totp_code"] = code
    return await c.post("/api/v1/auth/login", json=body)


async def bearer(
    c: httpx.AsyncClient, username: str = "root", code: str | None = None
) -> dict[str, str]:
    """Log in and return the Authorization header of the new token."""
    r = await login(c, username, ADMIN_PW, code)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def audit_rows(rt: Runtime, limit: int = 500) -> list[dict[str, Any]]:
    """The newest audit rows through the core."""
    return await rt.service.audit_log(None, limit)
