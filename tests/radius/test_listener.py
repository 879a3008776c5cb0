"""The listener against real clients: Debian's radclient and pyrad's client."""

from __future__ import annotations

import struct
import time

import pytest
from pyrad import packet as rp
from pyrad.client import Timeout

from gateway.radius import wire
from tests.radius.conftest import ADMIN, PASSWORD, SECRET, Harness, exchange


def _rc(user: str, password: str, extra: str = "") -> str:
    text = f"User-Name = {user}, User-Password = '{password}', Message-Authenticator = 0x00"
    return text + (f", {extra}" if extra else "") + "\n"


def _decode(raw: bytes, request: rp.AuthPacket) -> rp.AuthPacket:
    reply = request.CreateReply(packet=raw)
    assert request.VerifyReply(reply, raw, enforce_ma=True)
    return reply


def _first_attribute(raw: bytes) -> int:
    return raw[20]


def test_radclient_accept_and_reject(harness: Harness) -> None:
    harness.add_user("alice")
    ok = harness.radclient(_rc("alice", PASSWORD))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Access-Accept" in ok.stdout
    assert "Message-Authenticator" in ok.stdout
    bad = harness.radclient(_rc("alice", "wrong-password-123"))
    assert bad.returncode == 1
    assert "Access-Reject" in bad.stdout
    assert "Reply-Message" not in bad.stdout
    m = harness.listener.metrics.snapshot()
    assert m["accepts"] == 1 and m["rejects"] == 1


def test_radclient_ipv6(harness: Harness) -> None:
    harness.add_user("alice")
    ok = harness.radclient(_rc("alice", PASSWORD), host="::1", port=harness.port6)
    assert ok.returncode == 0 and "Access-Accept" in ok.stdout, ok.stdout + ok.stderr


def test_missing_message_authenticator_gets_no_reply(harness: Harness) -> None:
    harness.add_user("alice")
    res = harness.radclient(f"User-Name = alice, User-Password = '{PASSWORD}'\n", timeout=0.5)
    assert res.returncode != 0 and "Access-Accept" not in res.stdout
    assert harness.listener.metrics.discards["missing_message_authenticator"] >= 1
    # the same with pyrad
    req = harness.auth_packet("alice", PASSWORD)
    req.message_authenticator = False
    assert exchange(harness.port, req.RequestPacket(), timeout=0.3) is None


def test_bad_message_authenticator_no_reply_no_account_counter(harness: Harness) -> None:
    uid = harness.add_user("alice")
    req = harness.auth_packet("alice", "wrong-password-123")
    raw = bytearray(req.RequestPacket())
    assert raw[20] == wire.MESSAGE_AUTHENTICATOR  # pyrad puts it first
    raw[25] ^= 0xFF  # flip one octet of the Message-Authenticator value
    before = harness.listener.metrics.snapshot()
    assert exchange(harness.port, bytes(raw), timeout=0.3) is None
    after = harness.listener.metrics.snapshot()
    # only the discard metric moves: no reject, no duplicate entry, no hash
    assert after["discards"].pop("bad_message_authenticator") == 1
    assert after == before
    view = harness.run(harness.rt.service.get_account(uid))
    assert view.failed_count == 0
    # wrong shared secret: the MA check fails the same way
    res = harness.radclient(_rc("alice", "wrong-password-123"), secret="other", timeout=0.5)
    assert "Access-Reject" not in res.stdout
    assert harness.run(harness.rt.service.get_account(uid)).failed_count == 0


def test_unknown_client_gets_no_reply(harness: Harness) -> None:
    harness.add_user("alice")
    req = harness.auth_packet("alice", PASSWORD)
    assert exchange(harness.port, req.RequestPacket(), source="127.0.0.2", timeout=0.3) is None
    assert harness.listener.metrics.discards["unknown_client"] == 1
    assert harness.listener.metrics.accepts == 0


def test_retransmission_same_reply_counted_once(harness: Harness) -> None:
    uid = harness.add_user("alice")
    req = harness.auth_packet("alice", "wrong-password-123")
    raw = req.RequestPacket()
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        first = exchange(harness.port, raw, sock=sock)
        second = exchange(harness.port, raw, sock=sock)
    assert first is not None and first == second
    assert _decode(first, req).code == rp.AccessReject
    m = harness.listener.metrics.snapshot()
    assert m["duplicates"] == 1 and m["rejects"] == 1
    view = harness.run(harness.rt.service.get_account(uid))
    assert view.failed_count == 1
    rows = harness.run(harness.rt.service.audit_log(uid))
    assert sum(1 for r in rows if r["action"] == "authenticate") == 1


def test_reply_has_ma_first_and_echoes_proxy_state(harness: Harness) -> None:
    harness.add_user("alice")
    for password, code in ((PASSWORD, rp.AccessAccept), ("nope-nope-nope", rp.AccessReject)):
        req = harness.auth_packet("alice", password)
        req.AddAttribute("Proxy-State", b"\x01proxy-one")
        req.AddAttribute("Proxy-State", b"\x02proxy-two")
        raw = exchange(harness.port, req.RequestPacket())
        assert raw is not None
        assert _first_attribute(raw) == wire.MESSAGE_AUTHENTICATOR
        reply = _decode(raw, req)
        assert reply.code == code
        assert dict.__getitem__(reply, wire.PROXY_STATE) == [b"\x01proxy-one", b"\x02proxy-two"]


def test_locked_account_same_reject_as_wrong_password(harness: Harness) -> None:
    harness.add_user("alice")
    harness.add_user("bob")
    harness.run(harness.rt.service.lock("bob", actor=ADMIN))
    replies = []
    for user, password in (("alice", "wrong-password-123"), ("bob", PASSWORD)):
        req = harness.auth_packet(user, password)
        started = time.monotonic()
        raw = exchange(harness.port, req.RequestPacket())
        elapsed = time.monotonic() - started
        assert raw is not None and elapsed >= 0.05  # the reject delay
        reply = _decode(raw, req)
        names = sorted(k for k in reply.keys() if k != "Message-Authenticator")  # noqa: SIM118
        replies.append((reply.code, names, len(raw)))
    assert replies[0] == replies[1]
    assert replies[0][0] == rp.AccessReject and replies[0][1] == []


def test_pyrad_client_accept_reject(harness: Harness) -> None:
    harness.add_user("alice")
    reply = harness.send(harness.auth_packet("alice", PASSWORD))
    assert reply.code == rp.AccessAccept
    reply = harness.send(harness.auth_packet("ALICE@example.org", PASSWORD))
    assert reply.code == rp.AccessAccept
    reply = harness.send(harness.auth_packet("nobody", PASSWORD))
    assert reply.code == rp.AccessReject


def test_password_over_128_octets_rejected(harness: Harness) -> None:
    harness.add_user("alice")
    req = harness.auth_packet("alice", PASSWORD)
    del req["User-Password"]
    # hand-made 144-octet User-Password (pyrad refuses to build one)
    req[2] = [bytes(144)]
    raw = exchange(harness.port, req.RequestPacket())
    assert raw is not None and _decode(raw, req).code == rp.AccessReject


def test_legacy_client(harness: Harness) -> None:
    from tests.radius.conftest import client_config, make_policy

    harness.add_user("alice")
    cfg = client_config()
    cfg["clients"][0]["legacy"] = True
    harness.set_policy(make_policy(cfg))
    ok = harness.radclient(f"User-Name = alice, User-Password = '{PASSWORD}'\n")
    assert ok.returncode == 0 and "Access-Accept" in ok.stdout
    req = harness.auth_packet("alice", PASSWORD)
    req.message_authenticator = False
    req.AddAttribute("Proxy-State", b"forged")
    assert exchange(harness.port, req.RequestPacket(), timeout=0.3) is None
    assert harness.listener.metrics.discards["proxy_state_without_ma"] == 1


def test_garbage_is_discarded_and_service_continues(harness: Harness) -> None:
    harness.add_user("alice")
    for junk in (
        b"",
        b"\x01",
        b"\x01\x02\x00\x14" + bytes(16),
        bytes(5000),
        b"\x01\x02\xff\xff" + bytes(60),
    ):
        assert exchange(harness.port, junk, timeout=0.1) is None
    header = struct.pack("!BBH", 1, 9, 30) + bytes(16) + b"\x01\x00" + bytes(8)
    assert exchange(harness.port, header, timeout=0.1) is None
    with pytest.raises(Timeout):
        harness.send(harness.auth_packet("alice", PASSWORD), secret="not-the-secret", timeout=0.2)
    reply = harness.send(harness.auth_packet("alice", PASSWORD))
    assert reply.code == rp.AccessAccept
    assert SECRET  # the secret never appears in metrics
    assert SECRET not in repr(harness.listener.metrics.snapshot())


def test_overload_is_shed_without_counting_failures(harness: Harness) -> None:
    import socket

    from tests.radius.conftest import client_config, make_policy

    harness.set_policy(make_policy(client_config(max_pending=1)))
    ids = [harness.add_user(f"user{i}") for i in range(4)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2.0)
        for i in range(4):
            sock.sendto(
                harness.auth_packet(f"user{i}", PASSWORD).RequestPacket(),
                ("127.0.0.1", harness.port),
            )
        answers = 0
        try:
            while answers < 4:
                sock.recv(4096)
                answers += 1
        except TimeoutError:
            pass
    m = harness.listener.metrics.snapshot()
    assert answers == m["accepts"] and 1 <= answers < 4
    assert m["hash_saturation"] == 4 - answers
    for uid in ids:  # a shed request costs no failure
        assert harness.run(harness.rt.service.get_account(uid)).failed_count == 0
