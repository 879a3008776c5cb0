"""Password rules: code points after NFKC, 12-64 boundaries, identity words, blocklist."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from gateway import passwords
from gateway.errors import PolicyViolation
from gateway.hashing import Hasher
from gateway.orgpolicy import OrgPolicy, PasswordRules, admin_rules
from gateway.settings import HashingSettings

USER = PasswordRules()
NAME, MAIL = "alice", "alice.smith@example.org"

# letters from several scripts and planes, all NFKC-stable and with no identity word in them
SAFE = st.sampled_from([*list("bdfgjkmqvwxz"), "ж", "λ", "中", "😀", "𝄞", "ß", "é"])
NON_BMP = st.characters(min_codepoint=0x1F600, max_codepoint=0x1F64F)  # emoji, 4 bytes, 2 UTF-16


def ok(pw: str, rules: PasswordRules = USER, name: str = NAME, mail: str = MAIL) -> bool:
    return passwords.violations(pw, rules, name, mail) == []


# ---------------------------------------------------------------- length in code points
@given(st.lists(SAFE, min_size=12, max_size=64).map("".join))
def test_any_12_to_64_code_points_pass(pw: str) -> None:
    assume(passwords.normalise(pw) == pw)
    assert ok(pw)


@given(st.integers(min_value=1, max_value=11), SAFE)
def test_11_or_fewer_code_points_fail(n: int, ch: str) -> None:
    found = passwords.violations(ch * n, USER, NAME, MAIL)
    assert "must be at least 12 characters long" in found


@given(st.integers(min_value=65, max_value=200), SAFE)
def test_65_or_more_code_points_fail(n: int, ch: str) -> None:
    found = passwords.violations(ch * n, USER, NAME, MAIL)
    assert "must be at most 64 characters long" in found


@given(st.lists(NON_BMP, min_size=12, max_size=64).map("".join))
def test_length_counts_code_points_not_bytes_or_utf16(pw: str) -> None:
    # 64 emoji are 256 UTF-8 bytes and 128 UTF-16 units, still 64 code points
    assert len(pw.encode("utf-8")) == 4 * len(pw)
    assert len(pw.encode("utf-16-le")) // 2 == 2 * len(pw)
    assert ok(pw)


def test_exact_boundaries() -> None:
    assert not ok("xq" * 5 + "x")  # 11
    assert ok("xq" * 6)  # 12
    assert ok("xq" * 32)  # 64
    assert not ok("xq" * 32 + "z")  # 65
    assert ok("😀" * 64) and not ok("😀" * 65)
    assert ok("😀" * 12) and not ok("😀" * 11)


def test_length_is_measured_after_nfkc() -> None:
    # U+FDFA is one code point that NFKC expands to 18: 1 code point before, 18 after
    expanded = passwords.normalise("\ufdfa")
    assert len(expanded) == 18
    assert ok("\ufdfa")  # 18 code points once normalised
    # "e" + combining acute composes to one code point: 12 pairs -> 12 code points, not 24
    composed = "e\u0301" * 12
    assert len(passwords.normalise(composed)) == 12
    assert ok("e\u0301" * 64) and not ok("e\u0301" * 65)
    # the ligature "ﬀ" becomes "ff": 40 ligatures -> 80 code points -> too long
    assert not ok("\ufb00" * 40)
    assert ok("\ufb00" * 32)


@given(st.text(min_size=0, max_size=120))
@example("ＡＢＣＤＥＦＧＨＩＪＫＬ")
@example("e\u0301" * 40)
def test_nfkc_applied_the_same_everywhere(pw: str) -> None:
    norm = passwords.normalise(pw)
    assert norm == unicodedata.normalize("NFKC", pw)
    assert passwords.normalise(norm) == norm  # idempotent
    # the rules see the same thing for a password and its normal form
    assert passwords.violations(pw, USER, NAME, MAIL) == passwords.violations(
        norm, USER, NAME, MAIL
    )
    if not passwords.violations(pw, USER, NAME, MAIL):
        assert passwords.check(pw, USER, NAME, MAIL) == norm  # what gets hashed


@settings(max_examples=10, deadline=None)
@given(st.lists(SAFE, min_size=12, max_size=64).map("".join))
def test_no_truncation_last_code_point_matters(pw: str) -> None:
    hasher = _hasher()
    encoded = hasher.hash_sync(passwords.normalise(pw))
    changed = pw[:-1] + ("b" if pw[-1] != "b" else "d")
    assert hasher.verify_sync(encoded, passwords.normalise(pw))
    assert not hasher.verify_sync(encoded, passwords.normalise(changed))
    assert not hasher.verify_sync(encoded, passwords.normalise(pw[:-1]))


def test_no_truncation_past_72_bytes() -> None:
    # bcrypt would cut at 72 bytes; 30 four-byte emoji are 120 bytes
    hasher = _hasher()
    a = "😀" * 30 + "x"
    b = "😀" * 30 + "y"
    encoded = hasher.hash_sync(a)
    assert hasher.verify_sync(encoded, a) and not hasher.verify_sync(encoded, b)


_HASHER: list[Hasher] = []


def _hasher() -> Hasher:
    if not _HASHER:
        _HASHER.append(Hasher(HashingSettings(workers=1)))
    return _HASHER[0]


# ---------------------------------------------------------------- identity words
IDENT = "must not contain your username or e-mail address"
WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=3, max_size=12)


@given(WORDS, st.text(alphabet="#%+=_-~^", min_size=12, max_size=30), st.data())
def test_username_anywhere_any_case_is_refused(name: str, filler: str, data: st.DataObject) -> None:
    at = data.draw(st.integers(min_value=0, max_value=len(filler)))
    cased = "".join(c.upper() if data.draw(st.booleans()) else c for c in name)  # any mix of cases
    pw = filler[:at] + cased + filler[at:]
    assert IDENT in passwords.violations(pw, USER, name, "someone@example.net")


@given(WORDS, WORDS, st.text(alphabet="#%+=_-~^", min_size=12, max_size=30))
def test_email_and_local_part_are_refused(local: str, domain: str, filler: str) -> None:
    email = f"{local}@{domain}.org"
    for word in (local, email, email.upper(), local.title()):
        assert IDENT in passwords.violations(filler + word, USER, "zz", email)


@given(WORDS)
def test_fullwidth_username_is_caught_after_nfkc(name: str) -> None:
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if c.isalnum() and c.isascii() else c for c in name)
    assert passwords.normalise(fullwidth) == name
    assert IDENT in passwords.violations("#%+=_-~^#%+=" + fullwidth, USER, name, "x@y.z")


def test_identity_examples() -> None:
    assert IDENT in passwords.violations("My-ALICE-is-long-enough", USER, NAME, MAIL)
    assert IDENT in passwords.violations("xx-Alice.Smith-xxxx", USER, "zed", MAIL)
    assert IDENT in passwords.violations("xxALICE.SMITH@EXAMPLE.ORGxx", USER, "zed", MAIL)
    assert ok("correct-horse-battery", USER, NAME, MAIL)
    # words shorter than three code points are not identity words (would forbid too much)
    assert passwords.identity_words("al", "al@x.io") == ["al@x.io"]
    # the rule can be switched off for users, never for admins
    off = PasswordRules(forbid_identity=False)
    assert passwords.violations("My-ALICE-is-long-enough", off, NAME, MAIL) == []
    admin = OrgPolicy(passwords=off).rules_for("admin")
    assert IDENT in passwords.violations("My-ALICE-is-long-enough", admin, NAME, MAIL)


# ---------------------------------------------------------------- blocklist, rule sets
def test_blocklist_case_insensitive() -> None:
    common = sorted(passwords.blocklist())[0]
    assert "is too common; choose another" in passwords.violations(common, USER, "zz", "q@q.q")
    upper = common.upper()
    assert "is too common; choose another" in passwords.violations(upper, USER, "zz", "q@q.q")
    assert all(len(w) >= 12 for w in passwords.blocklist())
    assert ok(common, PasswordRules(blocklist=False), "zz", "q@q.q")


def test_admin_rules_are_fixed_users_configurable() -> None:
    org = OrgPolicy(passwords=PasswordRules(min_length=16, max_length=20))
    user, admin = org.rules_for("user"), org.rules_for("admin")
    assert admin == admin_rules(org.admin_password_history)
    assert (admin.min_length, admin.max_length) == (12, 64)
    pw = "bdfgjkmqvwxzb"  # 13
    assert not ok(pw, user) and ok(pw, admin)
    assert not ok("bdfgjkmqvwxz" * 2, user) and ok("bdfgjkmqvwxz" * 2, admin)


def test_check_raises_with_every_reason_and_no_password() -> None:
    pw = "alice" + "😀" * 70
    with pytest.raises(PolicyViolation) as err:
        passwords.check(pw, USER, NAME, MAIL)
    assert err.value.rule == "password"
    assert "at most 64" in err.value.message and "username" in err.value.message
    assert pw not in str(err.value) and "😀" not in str(err.value)


@given(st.integers(min_value=12, max_value=64))
def test_generated_passwords_pass_and_have_four_classes(n: int) -> None:
    pw = passwords.generate(n)
    assert len(pw) == n
    assert ok(pw, USER, "zz", "q@q.q") or pw.casefold() in passwords.blocklist()
    assert any(c.islower() for c in pw) and any(c.isupper() for c in pw)
    assert any(c.isdigit() for c in pw) and any(not c.isalnum() for c in pw)


def test_verification_runs_in_a_bounded_pool() -> None:
    import asyncio

    from gateway.errors import Overloaded

    hasher = Hasher(HashingSettings(workers=1, queue_limit=2))
    encoded = hasher.hash_sync("bdfgjkmqvwxz")

    async def flood() -> list[object]:
        jobs = [hasher.verify(encoded, "bdfgjkmqvwxz") for _ in range(10)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    try:
        results = asyncio.run(flood())
        assert results.count(True) == 3  # one running + two queued
        assert sum(isinstance(r, Overloaded) for r in results) == 7
        assert hasher.saturated == 7 and hasher.inflight == 0
        assert asyncio.run(hasher.verify(None, "bdfgjkmqvwxz")) is False  # dummy hash
    finally:
        hasher.close()
