"""Accounting records live sessions; a lock sends Disconnect-Request (RFC 5176) to a small UDP NAS,
through the real propagation path (policy file -> outbox row -> dispatcher -> radius connector)."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pyrad import packet as rp
from sqlalchemy import select

from connectors.base import AccountRef, DesiredState
from connectors.radius import RadiusConfig, RadiusConnector
from gateway.backoff import Backoff
from gateway.clock import FrozenClock
from gateway.dispatcher import Dispatcher
from gateway.errors import TransientError
from gateway.radius import wire
from gateway.radius.sessions import RadiusSession
from tests.radius.conftest import (
    ADMIN,
    PASSWORD,
    SECRET,
    Harness,
    start_harness,
    stop_harness,
)
from tests.support.runtime import make_runtime, make_settings


class Nas:
    """A NAS's Dynamic Authorization server: verifies Disconnect-Requests and ACKs them."""

    def __init__(self, drop_first: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.drop_first = drop_first
        self.seen = 0
        self.verified: list[dict[str, object]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            self.seen += 1
            if self.seen <= self.drop_first:
                continue
            pkt = rp.CoAPacket(packet=data, secret=SECRET.encode(), dict=wire.dictionary())
            assert pkt.code == rp.DisconnectRequest
            expected = hashlib.md5(data[:4] + bytes(16) + data[20:] + SECRET.encode()).digest()
            ok = pkt.VerifyCoARequest() and expected == pkt.authenticator
            ok = ok and pkt.message_authenticator and pkt.verify_message_authenticator()
            if not ok:
                continue
            self.verified.append(
                {
                    "User-Name": pkt["User-Name"][0],
                    "Acct-Session-Id": pkt["Acct-Session-Id"][0],
                    "NAS-IP-Address": pkt.get("NAS-IP-Address", [""])[0],
                }
            )
            reply = pkt.CreateReply()
            self.sock.sendto(reply.ReplyPacket(), addr)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


POLICY = """
connector = "radius"
[actions]
password_change = "maintain"
expired = "reject"
locked = "disconnect"
unlocked = "maintain"
[connection]
reject_delay_seconds = 0.05
dae_timeout_seconds = 0.3
dae_attempts = 2
[[connection.clients]]
name = "ap-1"
address = "127.0.0.0/8"
secret = "env:GW_TEST_RADIUS_SECRET"
dae_port = {port}
"""


@pytest.fixture
def nas() -> Iterator[Nas]:
    n = Nas(drop_first=2)
    try:
        yield n
    finally:
        n.close()


@pytest.fixture
def wired(tmp_path: Path, clock: FrozenClock, nas: Nas, db_url: str) -> Iterator[Harness]:
    """Each backend: wifi.toml in the policies dir, listener and dispatcher running."""
    os.environ["GW_TEST_RADIUS_SECRET"] = SECRET
    settings = make_settings(tmp_path, db_url)
    (Path(settings.policies_dir) / "wifi.toml").write_text(POLICY.format(port=nas.port))
    rt = make_runtime(settings, clock)
    policy = rt.policies.resources["wifi"]
    h = start_harness(rt, clock, policy)
    dispatcher = Dispatcher(rt, poll_interval=0.05, backoff=Backoff(base=0.1, cap=0.2))
    h.run(dispatcher.start())
    h.dispatcher = dispatcher  # type: ignore[attr-defined]
    try:
        yield h
    finally:
        h.run(dispatcher.stop())
        stop_harness(h)
        rt.close()


def _acct(h: Harness, status: str, session: str, user: str = "alice") -> rp.AcctPacket:
    c = h.client()
    req = c.CreateAcctPacket(
        User_Name=user,
        Acct_Status_Type=status,
        Acct_Session_Id=session,
        NAS_IP_Address="127.0.0.1",
    )
    return req


def _sessions(h: Harness) -> list[RadiusSession]:
    with h.rt.store.read() as s:
        return list(s.scalars(select(RadiusSession).order_by(RadiusSession.id)))


def _row_status(h: Harness) -> str:
    from gateway.propagation_models import DesiredRow

    with h.rt.store.read() as s:
        row = s.scalars(select(DesiredRow).where(DesiredRow.resource == "wifi")).first()
        return row.status if row is not None else ""


def _wait(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_accounting_and_disconnect_on_lock(wired: Harness, nas: Nas) -> None:
    h = wired
    h.add_user("alice")
    assert h.send(h.auth_packet("alice", PASSWORD)).code == rp.AccessAccept
    # Start with radclient, Start/Interim/Stop with pyrad
    res = h.radclient(
        "User-Name = alice, Acct-Status-Type = Start, Acct-Session-Id = s-one, "
        "NAS-IP-Address = 127.0.0.1\n",
        kind="acct",
    )
    assert res.returncode == 0 and "Accounting-Response" in res.stdout, res.stdout + res.stderr
    for status, session in (("Start", "s-two"), ("Interim-Update", "s-one"), ("Stop", "s-two")):
        reply = h.send(_acct(h, status, session))
        assert reply.code == rp.AccountingResponse
    rows = _sessions(h)
    assert [(r.acct_session_id, r.ended_at is None) for r in rows] == [
        ("s-one", True),
        ("s-two", False),
    ]
    assert rows[0].account_key == "alice" and rows[0].nas_address == "127.0.0.1"
    assert h.listener.metrics.accounting == 4
    # lock: the dispatcher calls the radius connector, which disconnects s-one
    h.run(h.rt.service.lock("alice", actor=ADMIN))
    _wait(lambda: nas.seen >= 2)  # the first two copies are dropped: TransientError, retry
    _wait(lambda: _row_status(h) == "retrying")
    h.clock.advance(timedelta(seconds=30))
    h.dispatcher.wake()  # type: ignore[attr-defined]
    _wait(lambda: bool(nas.verified))
    assert nas.verified[0] == {
        "User-Name": "alice",
        "Acct-Session-Id": "s-one",
        "NAS-IP-Address": "127.0.0.1",
    }
    _wait(lambda: _sessions(h)[0].ended_at is not None)
    assert _sessions(h)[0].end_reason == "disconnect-ack"
    assert len(nas.verified) == 1


def test_connector_raises_transient_until_answered(wired: Harness, nas: Nas) -> None:
    h = wired
    h.add_user("bob")
    assert h.send(_acct(h, "Start", "b-1", user="bob")).code == rp.AccountingResponse
    config = h.rt.policies.resources["wifi"].connection
    assert isinstance(config, RadiusConfig)
    connector = RadiusConnector("wifi-direct", config)
    # a resource with no sessions has nothing to do
    assert h.run(connector.apply(AccountRef("bob"), DesiredState(1, disabled=True), None)) == {
        "disconnected"
    }
    connector = RadiusConnector("wifi", config)
    assert h.run(connector.apply(AccountRef("bob"), DesiredState(1), None)) == frozenset()
    nas.seen, nas.drop_first = 0, 2
    with pytest.raises(TransientError):
        h.run(connector.apply(AccountRef("bob"), DesiredState(1, disabled=True), None))
    assert h.run(connector.apply(AccountRef("bob"), DesiredState(1, disabled=True), None)) == {
        "disconnected"
    }
    assert nas.verified[-1]["Acct-Session-Id"] == "b-1"
    assert _sessions(h)[0].ended_at is not None


def test_accounting_bad_authenticator_and_duplicates(harness: Harness) -> None:
    from tests.radius.conftest import exchange

    req = _acct(harness, "Start", "x-1")
    raw = req.RequestPacket()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        first = exchange(harness.port, raw, sock=sock)
        second = exchange(harness.port, raw, sock=sock)
    assert first is not None and first == second
    assert first[20] == wire.MESSAGE_AUTHENTICATOR
    assert harness.listener.metrics.duplicates == 1 and harness.listener.metrics.accounting == 1
    forged = bytearray(raw)
    forged[-1] ^= 1
    assert exchange(harness.port, bytes(forged), timeout=0.3) is None
