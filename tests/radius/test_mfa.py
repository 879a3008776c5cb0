"""TOTP over RADIUS: code appended to the password, and Access-Challenge with a State."""

from __future__ import annotations

from datetime import timedelta

from pyrad import packet as rp

from gateway import mfa
from tests.radius.conftest import ADMIN, PASSWORD, Harness, client_config, make_policy

STEP = timedelta(seconds=30)


def _enrol(h: Harness, user: str) -> str:
    h.add_user(user)
    seed = h.run(h.rt.service.enrol_totp(user, actor=ADMIN))
    # confirm with the previous step's code, leaving the current one unused
    h.run(
        h.rt.service.verify_totp(
            user, mfa.code_at(seed, h.clock.now() - STEP), actor=ADMIN, confirm=True
        )
    )
    return seed


def _rc(user: str, password: str, extra: str = "") -> str:
    line = f"User-Name = {user}, User-Password = '{password}', Message-Authenticator = 0x00"
    return line + (f", {extra}" if extra else "") + "\n"


def test_append_mode_each_code_once(harness: Harness) -> None:
    harness.set_policy(make_policy(client_config(mfa="append")))
    seed = _enrol(harness, "alice")
    code = mfa.code_at(seed, harness.clock.now())
    ok = harness.radclient(_rc("alice", PASSWORD + code))
    assert ok.returncode == 0 and "Access-Accept" in ok.stdout, ok.stdout
    again = harness.radclient(_rc("alice", PASSWORD + code))
    assert "Access-Reject" in again.stdout
    no_code = harness.send(harness.auth_packet("alice", PASSWORD))
    assert no_code.code == rp.AccessReject
    wrong_pw = harness.send(harness.auth_packet("alice", "Wrong-Horse-77x" + code))
    assert wrong_pw.code == rp.AccessReject
    next_code = mfa.code_at(seed, harness.clock.now() + STEP)
    assert harness.send(harness.auth_packet("alice", PASSWORD + next_code)).code == rp.AccessAccept
    # accounts without TOTP are unaffected by append mode, even with digits at the end
    harness.add_user("bob", password="Battery-Staple-123456")
    reply = harness.send(harness.auth_packet("bob", "Battery-Staple-123456"))
    assert reply.code == rp.AccessAccept


def test_challenge_mode(harness: Harness) -> None:
    harness.set_policy(make_policy(client_config(mfa="challenge", challenge_message="Code?")))
    seed = _enrol(harness, "alice")
    harness.add_user("bob")
    first = harness.send(harness.auth_packet("alice", PASSWORD))
    assert first.code == rp.AccessChallenge
    assert first["Reply-Message"] == ["Code?"]
    state = first["State"][0]
    assert len(state) == 16
    code = mfa.code_at(seed, harness.clock.now())
    # State bound to the login: another user cannot use it (and it is spent)
    stolen = harness.send(harness.auth_packet("bob", code, State=state))
    assert stolen.code == rp.AccessReject
    reuse = harness.send(harness.auth_packet("alice", code, State=state))
    assert reuse.code == rp.AccessReject
    # a fresh challenge, answered with radclient
    second = harness.send(harness.auth_packet("alice", PASSWORD))
    state = second["State"][0]
    ok = harness.radclient(_rc("alice", code, f"State = 0x{state.hex()}"))
    assert ok.returncode == 0 and "Access-Accept" in ok.stdout, ok.stdout
    # used once: the same State and code again fail
    again = harness.radclient(_rc("alice", code, f"State = 0x{state.hex()}"))
    assert "Access-Reject" in again.stdout
    # the code itself was accepted once: a new State with the same code fails
    third = harness.send(harness.auth_packet("alice", PASSWORD))
    reply = harness.send(harness.auth_packet("alice", code, State=third["State"][0]))
    assert reply.code == rp.AccessReject
    # wrong password never gets a challenge
    assert harness.send(harness.auth_packet("alice", "nope-nope-nope")).code == rp.AccessReject


def test_challenge_expires(harness: Harness) -> None:
    harness.set_policy(make_policy(client_config(mfa="challenge", challenge_seconds=10)))
    seed = _enrol(harness, "alice")
    first = harness.send(harness.auth_packet("alice", PASSWORD))
    state = first["State"][0]
    real = harness.listener.decider.monotonic
    harness.listener.decider.monotonic = lambda: real() + 11
    code = mfa.code_at(seed, harness.clock.now())
    assert harness.send(harness.auth_packet("alice", code, State=state)).code == rp.AccessReject


def test_wrong_codes_count_towards_the_mfa_limit(harness: Harness) -> None:
    harness.set_policy(make_policy(client_config(mfa="append")))
    seed = _enrol(harness, "alice")
    good = mfa.code_at(seed, harness.clock.now())
    bad = "000000" if good != "000000" else "111111"
    for _ in range(5):
        assert harness.send(harness.auth_packet("alice", PASSWORD + bad)).code == rp.AccessReject
    view = harness.run(harness.rt.service.get_account("alice"))
    assert view.locked
    assert harness.send(harness.auth_packet("alice", PASSWORD + good)).code == rp.AccessReject
