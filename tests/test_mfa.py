"""TOTP rules with a frozen clock: ±1 step, each code once, malformed codes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp

from gateway import mfa

T0 = datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)
STEP = timedelta(seconds=30)


def test_seed_and_uri() -> None:
    seed = mfa.new_seed()
    assert len(seed) == 32 and seed != mfa.new_seed()
    uri = mfa.provisioning_uri(seed, "alice@example.org", "Gateway")
    assert uri.startswith("otpauth://totp/Gateway:alice%40example.org?secret=" + seed)


def test_plus_minus_one_step() -> None:
    seed = mfa.new_seed()
    step = int(T0.timestamp()) // 30
    for delta, expected in ((-1, step - 1), (0, step), (1, step + 1)):
        code = mfa.code_at(seed, T0 + delta * STEP)
        assert mfa.check(seed, code, None, T0).step == expected
    for delta in (-2, 2):
        code = mfa.code_at(seed, T0 + delta * STEP)
        if code not in {mfa.code_at(seed, T0 + d * STEP) for d in (-1, 0, 1)}:
            assert mfa.check(seed, code, None, T0).step is None


def test_each_code_accepted_once() -> None:
    seed = mfa.new_seed()
    code = mfa.code_at(seed, T0)
    first = mfa.check(seed, code, None, T0)
    assert first.step is not None
    assert mfa.check(seed, code, first.step, T0).step is None
    # still refused 30 s later (the step is within the window but already used)
    assert mfa.check(seed, code, first.step, T0 + STEP).step is None
    # an older code is refused after a newer one was accepted
    newer = mfa.check(seed, mfa.code_at(seed, T0 + STEP), None, T0)
    assert newer.step is not None
    assert mfa.check(seed, code, newer.step, T0).step is None
    assert mfa.check(seed, mfa.code_at(seed, T0 + 2 * STEP), newer.step, T0 + STEP).step


def test_malformed_codes() -> None:
    seed = mfa.new_seed()
    good = mfa.code_at(seed, T0)
    assert mfa.check(seed, f" {good[:3]} {good[3:]} ", None, T0).step is not None
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in good)  # NFKC makes these ASCII digits
    assert mfa.check(seed, fullwidth, None, T0).step is not None
    for bad in ("", "12345", "1234567", "abcdef", "١٢٣٤٥٦", "abc１２３", "\x00" * 6, good + "0"):
        assert mfa.check(seed, bad, None, T0).step is None


def test_matches_rfc6238_reference() -> None:
    seed = mfa.new_seed()
    assert mfa.code_at(seed, T0) == pyotp.TOTP(seed).at(T0)
