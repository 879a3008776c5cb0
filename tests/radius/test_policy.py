"""Policy actions at the listener: shared lockout, expiry (reject / grace), must-change, groups,
the success cache."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pyrad import packet as rp

from gateway.clock import FrozenClock
from gateway.errors import AuthenticationFailed
from gateway.runtime import Runtime
from tests.radius.conftest import (
    ADMIN,
    PASSWORD,
    Harness,
    client_config,
    make_policy,
    start_harness,
    stop_harness,
)


def _send(h: Harness, user: str, password: str) -> rp.AuthPacket:
    reply: rp.AuthPacket = h.send(h.auth_packet(user, password))
    return reply


def test_radius_and_portal_failures_share_one_lockout(rt: Runtime, clock: FrozenClock) -> None:
    """Threshold 5: three wrong RADIUS attempts + two wrong portal attempts lock the account."""
    h = start_harness(rt, clock, make_policy())
    try:
        uid = h.add_user("alice")
        for _ in range(3):
            assert _send(h, "alice", "wrong-password-123").code == rp.AccessReject
        for _ in range(2):
            with pytest.raises(AuthenticationFailed):
                h.run(rt.service.authenticate("alice", "wrong-password-123", via="portal"))
        view = h.run(rt.service.get_account(uid))
        assert view.locked and view.failed_count >= 5
        assert _send(h, "alice", PASSWORD).code == rp.AccessReject
        rows = h.run(rt.service.audit_log(uid, limit=50))
        vias = {r["via"] for r in rows if r["action"] == "authenticate"}
        assert {"radius:wifi", "portal"} <= vias
    finally:
        stop_harness(h)


def _expire(h: Harness, user: str) -> None:
    h.run(h.rt.service.expire(user, actor=ADMIN))


def test_expired_reject(harness: Harness) -> None:
    harness.add_user("alice")
    _expire(harness, "alice")
    reply = _send(harness, "alice", PASSWORD)
    assert reply.code == rp.AccessReject and "Reply-Message" not in reply


def test_expired_grace_logins(harness: Harness) -> None:
    cfg = client_config(expired_grace={"logins": 2, "days": None}, grace_message="Change it!")
    harness.set_policy(make_policy(cfg, expired="grace"))
    harness.add_user("alice")
    _expire(harness, "alice")
    for _ in range(2):
        reply = _send(harness, "alice", PASSWORD)
        assert reply.code == rp.AccessAccept
        assert reply["Reply-Message"] == ["Change it!"]
    assert _send(harness, "alice", PASSWORD).code == rp.AccessReject


def test_expired_grace_days(harness: Harness) -> None:
    cfg = client_config(expired_grace={"logins": None, "days": 2})
    harness.set_policy(make_policy(cfg, expired="grace"))
    harness.add_user("alice")
    _expire(harness, "alice")
    assert _send(harness, "alice", PASSWORD).code == rp.AccessAccept
    harness.clock.advance(timedelta(days=3))
    assert _send(harness, "alice", PASSWORD).code == rp.AccessReject


def test_must_change_rejected_with_message(harness: Harness) -> None:
    cfg = client_config(must_change_message="Set a new password at the portal first.")
    harness.set_policy(make_policy(cfg))
    harness.add_user("alice")
    temp = harness.run(harness.rt.service.set_temporary_password("alice", actor=ADMIN))
    assert temp is not None
    reply = _send(harness, "alice", temp)
    assert reply.code == rp.AccessReject
    assert reply["Reply-Message"] == ["Set a new password at the portal first."]
    wrong = _send(harness, "alice", "wrong-password-123")
    assert wrong.code == rp.AccessReject and "Reply-Message" not in wrong


def test_group_reply_attributes(harness: Harness) -> None:
    cfg = client_config(
        group_replies=[
            {
                "group": "staff",
                "attributes": {
                    "Tunnel-Type:1": "VLAN",
                    "Tunnel-Medium-Type:1": "IEEE-802",
                    "Tunnel-Private-Group-Id:1": "42",
                },
            },
            {"group": "guests", "attributes": {"Filter-Id": "guest-acl"}},
        ]
    )
    harness.set_policy(make_policy(cfg))
    harness.add_user("alice", groups=["staff"])
    harness.add_user("gina", groups=["guests"])
    reply = _send(harness, "alice", PASSWORD)
    assert reply.code == rp.AccessAccept
    assert reply["Tunnel-Private-Group-Id"] == ["42"]
    assert reply["Tunnel-Type"] == ["VLAN"]
    assert "Filter-Id" not in reply
    reply = _send(harness, "gina", PASSWORD)
    assert reply["Filter-Id"] == ["guest-acl"] and "Tunnel-Type" not in reply
    res = harness.radclient(
        f"User-Name = alice, User-Password = '{PASSWORD}', Message-Authenticator = 0x00\n"
    )
    assert 'Tunnel-Private-Group-Id:1 = "42"' in res.stdout, res.stdout


def test_uncovered_account_rejected(harness: Harness) -> None:
    from gateway.policies import Covers

    policy = make_policy().model_copy(update={"covers": Covers(groups=("wifi-users",))})
    harness.set_policy(policy)
    harness.add_user("alice")
    harness.add_user("bob", groups=["wifi-users"])
    assert _send(harness, "alice", PASSWORD).code == rp.AccessReject
    assert _send(harness, "bob", PASSWORD).code == rp.AccessAccept


def test_success_cache_hits_and_invalidation(harness: Harness) -> None:
    harness.set_policy(make_policy(client_config(success_cache_seconds=60)))
    uid = harness.add_user("alice")
    m = harness.listener.metrics
    assert _send(harness, "alice", PASSWORD).code == rp.AccessAccept
    assert (m.cache_hits, m.cache_misses) == (0, 1)
    assert _send(harness, "alice", PASSWORD).code == rp.AccessAccept
    assert m.cache_hits == 1
    # a wrong password never matches the cache and still counts
    assert _send(harness, "alice", "wrong-password-123").code == rp.AccessReject
    assert harness.run(harness.rt.service.get_account(uid)).failed_count == 1
    # a lock (any account change) invalidates the entry at once
    harness.run(harness.rt.service.lock("alice", actor=ADMIN))
    assert _send(harness, "alice", PASSWORD).code == rp.AccessReject
    harness.run(harness.rt.service.unlock("alice", actor=ADMIN))
    assert _send(harness, "alice", PASSWORD).code == rp.AccessAccept
    hits = m.cache_hits
    # a profile change (groups) reaches the listener too: the entry is dropped at once
    assert len(harness.listener.cache) == 1
    harness.run(harness.rt.service.update_account("alice", actor=ADMIN, groups=["x"]))
    assert len(harness.listener.cache) == 0
    assert _send(harness, "alice", PASSWORD).code == rp.AccessAccept
    assert m.cache_hits == hits
    # a change made by another node never reaches this listener: the version sweep catches it
    from sqlalchemy import update

    from gateway.store.models import Account

    with harness.rt.store.write() as s:
        s.execute(update(Account).where(Account.id == uid).values(version=Account.version + 1))
    assert len(harness.listener.cache) == 1
    assert harness.run(harness.listener.sweep_cache()) == 1
    assert len(harness.listener.cache) == 0
    assert _send(harness, "alice", PASSWORD).code == rp.AccessAccept
    assert m.cache_hits == hits
    # cached successes are written in a batch
    assert _send(harness, "alice", PASSWORD).code == rp.AccessAccept
    assert m.cache_hits == hits + 1
    harness.run(harness.listener.successes_flush())
    rows = harness.run(harness.rt.service.audit_log(uid, limit=100))
    assert any(r["details"].get("cached") for r in rows if r["action"] == "authenticate")
    # TTL
    harness.listener.decider.monotonic = lambda: 1e12
    assert _send(harness, "alice", PASSWORD).code == rp.AccessAccept
    assert m.cache_hits == hits + 1


def test_success_cache_dropped_when_totp_enrolled(harness: Harness) -> None:
    from gateway import mfa

    harness.set_policy(make_policy(client_config(success_cache_seconds=60, mfa="append")))
    harness.add_user("alice")
    assert _send(harness, "alice", PASSWORD).code == rp.AccessAccept
    assert _send(harness, "alice", PASSWORD).code == rp.AccessAccept
    assert harness.listener.metrics.cache_hits == 1
    seed = harness.run(harness.rt.service.enrol_totp("alice", actor=ADMIN))
    code = mfa.code_at(seed, harness.clock.now() - timedelta(seconds=30))
    assert len(harness.listener.cache) == 0  # enrolment is an account change: dropped at once
    harness.run(harness.rt.service.verify_totp("alice", code, actor=ADMIN, confirm=True))
    assert _send(harness, "alice", PASSWORD).code == rp.AccessReject
