"""RADIUS test harness: a real listener in its own loop thread, pyrad and radclient clients."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pyrad import packet as rp
from pyrad.client import Client

from connectors.radius import RadiusConfig
from gateway.audit import Actor
from gateway.clock import FrozenClock
from gateway.policies import Actions, Covers, ResourcePolicy
from gateway.radius import wire
from gateway.radius.listener import RadiusListener
from gateway.runtime import Runtime
from tests.support.runtime import make_runtime, make_settings

T = TypeVar("T")
SECRET = "s3cret-radius-key"
ADMIN = Actor("test-admin")
PASSWORD = "Correct-Horse-77x"


def client_config(**overrides: Any) -> dict[str, Any]:
    """A RADIUS [connection] table for tests (secret by environment reference)."""
    base: dict[str, Any] = {
        "clients": [
            {"name": "lo4", "address": "127.0.0.1", "secret": "env:GW_TEST_RADIUS_SECRET"},
            {"name": "lo6", "address": "::1/128", "secret": "env:GW_TEST_RADIUS_SECRET"},
        ],
        "reject_delay_seconds": 0.05,
    }
    base.update(overrides)
    return base


def make_policy(
    connection: dict[str, Any] | None = None, name: str = "wifi", **actions: str
) -> ResourcePolicy:
    """A validated RADIUS resource policy built without a file."""
    acts = {"password_change": "maintain", "expired": "reject", "locked": "reject"}
    acts.update(actions)
    acts.setdefault("unlocked", "maintain")
    return ResourcePolicy(
        name=name,
        connector="radius",
        enabled=True,
        concurrency=4,
        covers=Covers(),
        link={},
        actions=Actions(**acts),
        connection=RadiusConfig.model_validate(connection or client_config()),
    )


@dataclass
class Harness:
    """A running listener; ``run`` executes a coroutine on its loop."""

    rt: Runtime
    clock: FrozenClock
    listener: RadiusListener
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    policy: list[ResourcePolicy] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.listener.addresses[0][1]

    @property
    def port6(self) -> int:
        return self.listener.addresses[1][1]

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def set_policy(self, policy: ResourcePolicy) -> None:
        self.policy[0] = policy

    def add_user(self, name: str, password: str = PASSWORD, **kw: Any) -> int:
        view, _ = self.run(
            self.rt.service.create_account(
                kind="user",
                username=name,
                email=f"{name}@example.org",
                actor=ADMIN,
                password=password,
                **kw,
            )
        )
        return view.id

    def client(self, port: int | None = None, host: str = "127.0.0.1") -> Client:
        c = Client(
            server=host,
            authport=port or self.port,
            acctport=port or self.port,
            secret=SECRET.encode(),
            dict=wire.dictionary(),
            enforce_ma=True,
        )
        c.timeout = 2
        c.retries = 1
        return c

    def send(self, req: rp.Packet, *, secret: str = SECRET, timeout: float = 2.0) -> Any:
        """Send with pyrad's client (retries once); raises pyrad's Timeout when unanswered."""
        c = self.client()
        c.secret = secret.encode()
        req.secret = secret.encode()
        c.timeout = timeout
        try:
            return c.SendPacket(req)
        finally:
            c._CloseSocket()

    def auth_packet(self, user: str, password: str, **attrs: Any) -> rp.AuthPacket:
        c = self.client()
        req = c.CreateAuthPacket(code=rp.AccessRequest, User_Name=user, **attrs)
        req["User-Password"] = req.PwCrypt(password)
        return req

    def radclient(
        self,
        text: str,
        *,
        kind: str = "auth",
        host: str = "127.0.0.1",
        port: int | None = None,
        secret: str = SECRET,
        timeout: float = 1.0,
    ) -> subprocess.CompletedProcess[str]:
        target = f"[{host}]:{port or self.port}" if ":" in host else f"{host}:{port or self.port}"
        return subprocess.run(
            ["radclient", "-x", "-r", "1", "-t", str(timeout), target, kind, secret],
            input=text,
            capture_output=True,
            text=True,
            timeout=30,
        )


def exchange(
    port: int,
    raw: bytes,
    *,
    source: str = "127.0.0.1",
    timeout: float = 1.0,
    host: str = "127.0.0.1",
    sock: socket.socket | None = None,
) -> bytes | None:
    """Send one datagram from ``source`` and return the answer, or None after ``timeout``."""
    own = sock is None
    if sock is None:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((source, 0))
    try:
        sock.settimeout(timeout)
        sock.sendto(raw, (host, port))
        try:
            return sock.recv(8192)
        except TimeoutError:
            return None
    finally:
        if own:
            sock.close()


def start_harness(rt: Runtime, clock: FrozenClock, policy: ResourcePolicy) -> Harness:
    """Start a listener on 127.0.0.1 and ::1 (ephemeral ports) in a loop thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    holder = [policy]
    listener = RadiusListener(rt, policy=lambda: holder[0], listen=["127.0.0.1:0", "[::1]:0"])
    h = Harness(rt, clock, listener, loop, thread, holder)
    h.run(listener.start())
    return h


def stop_harness(h: Harness) -> None:
    """Stop the listener and its loop."""
    try:
        h.run(h.listener.stop())
    finally:
        h.loop.call_soon_threadsafe(h.loop.stop)
        h.thread.join(timeout=10)
        h.loop.close()


@pytest.fixture(autouse=True)
def _secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_TEST_RADIUS_SECRET", SECRET)


@pytest.fixture
def radius_rt(tmp_path: Path, clock: FrozenClock) -> Iterator[Runtime]:
    """A runtime on SQLite (most RADIUS behaviour does not depend on the backend)."""
    os.environ["GW_TEST_RADIUS_SECRET"] = SECRET
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'gateway.db'}")
    runtime = make_runtime(settings, clock)
    try:
        yield runtime
    finally:
        runtime.close()


@pytest.fixture
def harness(radius_rt: Runtime, clock: FrozenClock) -> Iterator[Harness]:
    """A running listener with the default test policy (expired: reject, locked: reject)."""
    h = start_harness(radius_rt, clock, make_policy())
    try:
        yield h
    finally:
        stop_harness(h)
