"""CredentialService on both backends with a frozen clock: every rule through the one API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.audit import Actor
from gateway.changes import Change, Trigger
from gateway.clock import FrozenClock
from gateway.errors import AuthenticationFailed, Conflict, Overloaded, PolicyViolation
from gateway.hashing import Hasher
from gateway.orgpolicy import ExpiryRules, LockoutRules, OrgPolicy, PasswordRules
from gateway.runtime import Runtime
from gateway.settings import HashingSettings
from gateway.store.models import Account, AuditEntry
from gateway.tokens import Purpose

T = TypeVar("T")
ADMIN = Actor("admin:test", via="test")
PW = "Correct-Horse-77x"
PW2 = "Battery-Staple-88y"
PW3 = "Tr0ubadour-Stream-99z"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def add(rt: Runtime, name: str = "alice", pw: str | None = PW, **kw: Any) -> int:
    view, _ = run(
        rt.service.create_account(
            kind=kw.pop("kind", "user"),
            username=name,
            email=kw.pop("email", f"{name}@example.org"),
            actor=ADMIN,
            password=pw,
            **kw,
        )
    )
    return view.id


def auth(rt: Runtime, who: str, pw: str, **kw: Any) -> Any:
    return run(rt.service.authenticate(who, pw, via="test", **kw))


def refused(rt: Runtime, who: str, pw: str) -> None:
    with pytest.raises(AuthenticationFailed) as err:
        auth(rt, who, pw)
    assert str(err.value) == "authentication failed"


def account(rt: Runtime, account_id: int) -> Account:
    with rt.store.read() as s:
        acc = s.get(Account, account_id)
        assert acc is not None
        s.expunge(acc)
        return acc


def audit_rows(rt: Runtime, **where: Any) -> list[AuditEntry]:
    with rt.store.read() as s:
        stmt = select(AuditEntry).order_by(AuditEntry.id)
        for key, value in where.items():
            stmt = stmt.where(getattr(AuditEntry, key) == value)
        rows = list(s.scalars(stmt))
        for row in rows:
            s.expunge(row)
        return rows


def last_auth_reason(rt: Runtime, account_id: int) -> str:
    rows = audit_rows(rt, account_id=account_id, action="authenticate")
    return rows[-1].reason


def set_org(rt: Runtime, **parts: Any) -> None:
    rt.org_policy = OrgPolicy(**parts)


# ---------------------------------------------------------------- uniform failures
def test_uniform_failures_keep_the_real_reason(rt: Runtime, clock: FrozenClock) -> None:
    alice, bob, carol, dave = (add(rt, n) for n in ("alice", "bob", "carol", "dave"))
    run(rt.service.set_state("bob", active=False, actor=ADMIN))
    run(rt.service.lock("carol", actor=ADMIN))
    run(rt.service.expire("dave", actor=ADMIN))
    before = len(audit_rows(rt))

    refused(rt, "alice", "wrong-password-123")
    assert last_auth_reason(rt, alice) == "wrong password"
    refused(rt, "bob", PW)
    assert last_auth_reason(rt, bob) == "disabled"
    refused(rt, "carol", PW)
    assert last_auth_reason(rt, carol) == "locked"
    refused(rt, "dave", PW)
    assert last_auth_reason(rt, dave) == "password expired"
    assert len(audit_rows(rt)) == before + 4

    refused(rt, "nobody", PW)
    refused(rt, "nobody@example.org", "wrong-password-123")
    assert len(audit_rows(rt)) == before + 4  # unknown accounts leave no record
    with rt.store.read() as s:
        assert s.scalar(select(func.count()).select_from(Account)) == 4


def test_spellings_share_one_counter(rt: Runtime) -> None:
    alice = add(rt, "Alice", email="Alice.Smith@Example.org")
    for who in ("alice", "ALICE", " Alice ", "alice.smith@example.org", "ＡＬＩＣＥ"):
        refused(rt, who, "wrong-password-123")
    acc = account(rt, alice)
    assert acc.failed_count == 5 and acc.locked_at is not None
    refused(rt, "alice", PW)


def test_unicode_normalised_on_every_path(rt: Runtime) -> None:
    fullwidth = "Ｃｏｒｒｅｃｔ-Ｈｏｒｓｅ-７７ｘ"  # NFKC: Correct-Horse-77x
    add(rt, "alice", pw=fullwidth)
    assert auth(rt, "alice", PW).username == "alice"
    assert auth(rt, "alice", fullwidth).username == "alice"
    composed, decomposed = "Caf\u00e9-Gr\u00fcn-Sp\u00e4t-9", "Cafe\u0301-Gru\u0308n-Spa\u0308t-9"
    run(rt.service.change_password("alice", decomposed, actor=ADMIN))
    assert auth(rt, "alice", composed).username == "alice"
    with pytest.raises(PolicyViolation, match="used recently"):
        run(rt.service.change_password("alice", composed, actor=ADMIN))


# ---------------------------------------------------------------- lockout
def test_lockout_admin_unlock_keeps_password(rt: Runtime) -> None:
    alice = add(rt)
    hash_before = account(rt, alice).password_hash
    for _ in range(5):
        refused(rt, "alice", "wrong-password-123")
    acc = account(rt, alice)
    assert acc.failed_count == 5 and acc.lock_reason == "failures"
    refused(rt, "alice", PW)  # the right password is refused while locked
    assert last_auth_reason(rt, alice) == "locked"
    run(rt.service.unlock("alice", actor=ADMIN))
    acc = account(rt, alice)
    assert (acc.failed_count, acc.locked_at, acc.locked_until) == (0, None, None)
    assert acc.password_hash == hash_before
    assert auth(rt, "alice", PW).username == "alice"
    assert [r.action for r in audit_rows(rt, account_id=alice)][-3:] == [
        "authenticate",
        "unlock",
        "authenticate",
    ]


def test_window_and_success_reset_the_count(rt: Runtime, clock: FrozenClock) -> None:
    alice = add(rt)
    for _ in range(4):
        refused(rt, "alice", "wrong-password-123")
    auth(rt, "alice", PW)
    assert account(rt, alice).failed_count == 0
    for _ in range(4):
        refused(rt, "alice", "wrong-password-123")
    clock.advance(timedelta(minutes=15))
    refused(rt, "alice", "wrong-password-123")
    acc = account(rt, alice)
    assert acc.failed_count == 1 and acc.locked_at is None


def test_auto_unlock_due(rt: Runtime, clock: FrozenClock) -> None:
    alice = add(rt)
    for _ in range(5):
        refused(rt, "alice", "wrong-password-123")
    clock.advance(timedelta(minutes=29))
    assert rt.service.auto_unlock_due() == 0
    refused(rt, "alice", PW)
    clock.advance(timedelta(minutes=1))
    assert rt.service.auto_unlock_due() == 1
    assert rt.service.auto_unlock_due() == 0
    acc = account(rt, alice)
    assert (acc.locked_at, acc.failed_count) == (None, 0)
    assert audit_rows(rt, account_id=alice, action="unlock")[-1].reason == "lock duration passed"
    assert auth(rt, "alice", PW).username == "alice"


def test_admin_only_lock_is_not_auto_unlocked(rt: Runtime, clock: FrozenClock) -> None:
    set_org(rt, lockout=LockoutRules(threshold=3, duration_minutes=0))
    alice = add(rt)
    for _ in range(3):
        refused(rt, "alice", "wrong-password-123")
    clock.advance(timedelta(days=365))
    assert rt.service.auto_unlock_due() == 0
    refused(rt, "alice", PW)
    assert account(rt, alice).locked_until is None
    run(rt.service.unlock(alice, actor=ADMIN))
    assert auth(rt, "alice", PW).username == "alice"


def test_change_and_reset_clear_the_lock(rt: Runtime) -> None:
    alice = add(rt)
    for _ in range(5):
        refused(rt, "alice", "wrong-password-123")
    run(rt.service.change_password("alice", PW2, actor=ADMIN))
    acc = account(rt, alice)
    assert (acc.locked_at, acc.failed_count) == (None, 0)
    assert audit_rows(rt, account_id=alice, action="unlock")[-1].reason == "password reset"
    assert auth(rt, "alice", PW2).username == "alice"
    run(rt.service.lock("alice", actor=ADMIN))
    temp = run(rt.service.set_temporary_password("alice", actor=ADMIN))
    assert temp is not None and account(rt, alice).locked_at is None
    result = auth(rt, "alice", temp)
    assert result.must_change


def test_self_service_change_needs_current_password_and_no_lock(rt: Runtime) -> None:
    alice = add(rt)
    user = Actor("alice", via="portal")
    with pytest.raises(AuthenticationFailed):
        run(rt.service.change_password("alice", PW2, actor=user, current_password="wrong-pw-123"))
    assert account(rt, alice).failed_count == 1
    run(rt.service.lock("alice", actor=ADMIN))
    with pytest.raises(AuthenticationFailed):
        run(rt.service.change_password("alice", PW2, actor=user, current_password=PW))
    run(rt.service.unlock("alice", actor=ADMIN))
    run(rt.service.expire("alice", actor=ADMIN))  # an expired current password may be changed
    run(rt.service.change_password("alice", PW2, actor=user, current_password=PW))
    result = auth(rt, "alice", PW2)
    assert not result.must_change and account(rt, alice).failed_count == 0


def test_right_current_password_with_refused_new_one_does_not_lock(rt: Runtime) -> None:
    alice = add(rt)
    user = Actor("alice", via="portal")
    for _ in range(8):
        with pytest.raises(PolicyViolation):
            run(rt.service.change_password("alice", "short", actor=user, current_password=PW))
    acc = account(rt, alice)
    assert acc.locked_at is None and acc.failed_count == 0
    assert auth(rt, "alice", PW).username == "alice"


# ---------------------------------------------------------------- hashing, history
def test_rehash_on_login_when_parameters_rise(rt: Runtime) -> None:
    alice = add(rt)
    old = account(rt, alice).password_hash
    assert old is not None and "m=19456,t=2,p=1" in old
    auth(rt, "alice", PW)
    assert account(rt, alice).password_hash == old  # same parameters: no rehash
    stronger = Hasher(HashingSettings(time_cost=3, memory_kib=19456 * 2, workers=1))
    weak_hasher, rt.service.hasher = rt.service.hasher, stronger
    try:
        auth(rt, "alice", PW)
        new = account(rt, alice).password_hash
        assert new is not None and "m=38912,t=3,p=1" in new
        assert auth(rt, "alice", PW).username == "alice"
        refused(rt, "alice", PW2)
    finally:
        rt.service.hasher = weak_hasher
        stronger.close()


def test_history(rt: Runtime) -> None:
    set_org(rt, passwords=PasswordRules(history=2))
    add(rt)
    for pw in (PW2, PW3):
        run(rt.service.change_password("alice", pw, actor=ADMIN))
    for pw in (PW3, PW2):  # current and one earlier
        with pytest.raises(PolicyViolation, match="used recently"):
            run(rt.service.change_password("alice", pw, actor=ADMIN))
    run(rt.service.change_password("alice", "Fourth-Password-42q", actor=ADMIN))
    run(rt.service.change_password("alice", PW, actor=ADMIN))  # three back: allowed again
    assert auth(rt, "alice", PW).username == "alice"


def test_admin_rules_fixed_users_configurable(rt: Runtime) -> None:
    set_org(rt, passwords=PasswordRules(min_length=20))
    with pytest.raises(PolicyViolation, match="at least 20"):
        add(rt, "alice", pw=PW)
    add(rt, "root", pw=PW, kind="admin")
    with pytest.raises(PolicyViolation, match="username"):
        add(rt, "boss", pw="the-boss-is-long-enough", kind="admin")
    with pytest.raises(Conflict):
        add(rt, "root2", email="ROOT@example.org", pw=None)
    with pytest.raises(Conflict):
        add(rt, "root@example.org", email="x@example.org", pw=None)


# ---------------------------------------------------------------- expiry
def test_temporary_password_must_change_and_expires(rt: Runtime, clock: FrozenClock) -> None:
    alice = add(rt, pw=None)
    with pytest.raises(PolicyViolation):
        run(rt.service.set_temporary_password("alice", "alice-is-my-temp", actor=ADMIN))
    assert (
        run(rt.service.set_temporary_password("alice", "Typed-Temp-Pass-31", actor=ADMIN)) is None
    )
    temp = run(rt.service.set_temporary_password("alice", actor=ADMIN))
    assert temp is not None and len(temp) >= 12
    acc = account(rt, alice)
    assert acc.temporary and acc.must_change
    assert acc.password_expires_at is not None
    result = auth(rt, "alice", temp)
    assert result.must_change and result.warn_days_left is not None
    clock.advance(timedelta(hours=72))
    refused(rt, "alice", temp)
    assert last_auth_reason(rt, alice) == "temporary password expired"
    assert rt.service.expiry_sweep() == 1
    assert audit_rows(rt, account_id=alice, action="expire")[-1].reason == (
        "temporary password expired"
    )
    portal = Actor("alice", via="portal")
    with pytest.raises(AuthenticationFailed):  # an expired temporary password is dead
        run(rt.service.change_password("alice", PW2, actor=portal, current_password=temp))
    assert last_auth_reason(rt, alice) == "temporary password expired"
    temp = run(rt.service.set_temporary_password("alice", actor=ADMIN))
    assert temp is not None
    run(rt.service.change_password("alice", PW2, actor=portal, current_password=temp))
    acc = account(rt, alice)
    assert not acc.temporary and not acc.must_change and acc.password_expires_at is None


def test_maximum_age_warning_and_sweep(rt: Runtime, clock: FrozenClock) -> None:
    set_org(rt, expiry=ExpiryRules(max_age_days=90, warn_days=14))
    alice = add(rt)
    add(rt, "bob", never_expires=True)
    assert account(rt, alice).password_expires_at is not None
    clock.advance(timedelta(days=70))
    assert auth(rt, "alice", PW).warn_days_left is None
    clock.advance(timedelta(days=10))
    assert auth(rt, "alice", PW).warn_days_left == 10
    assert rt.service.expiry_sweep() == 0
    clock.advance(timedelta(days=10))
    refused(rt, "alice", PW)
    assert last_auth_reason(rt, alice) == "password expired"
    assert auth(rt, "bob", PW).username == "bob"  # the exemption
    assert rt.service.expiry_sweep() == 1
    assert rt.service.expiry_sweep() == 0  # each expiry is reported once
    assert audit_rows(rt, action="expire")[-1].reason == "maximum age reached"


def test_expire_now(rt: Runtime) -> None:
    alice = add(rt, never_expires=True)
    run(rt.service.expire("alice", actor=ADMIN))
    view = run(rt.service.get_account("alice"))
    assert view.must_change
    refused(rt, "alice", PW)
    assert last_auth_reason(rt, alice) == "password expired"
    assert rt.service.expiry_sweep() == 0  # expire-now already reported it


def _plan(rt: Runtime, job: Any, table_word: str) -> str:
    """Run ``job`` capturing its SELECT on accounts, then EXPLAIN that exact statement."""
    from sqlalchemy import event, text

    seen: list[tuple[str, Any]] = []

    def capture(_c: Any, _cur: Any, stmt: str, params: Any, _ctx: Any, _many: bool) -> None:
        if stmt.lstrip().upper().startswith("SELECT") and table_word in stmt:
            seen.append((stmt, params))

    event.listen(rt.store.engine, "before_cursor_execute", capture)
    try:
        job()
    finally:
        event.remove(rt.store.engine, "before_cursor_execute", capture)
    assert seen, "the job ran no query"
    stmt, params = seen[0]
    stmt = stmt.replace(" FOR UPDATE", "")
    with rt.store.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cur = raw.cursor()
        if rt.store.is_sqlite:
            cur.execute("EXPLAIN QUERY PLAN " + stmt, params)
        else:
            cur.execute("SET enable_seqscan = off")
            cur.execute("EXPLAIN " + stmt, params)
        plan = "\n".join(" ".join(str(c) for c in row) for row in cur.fetchall())
        cur.close()
        conn.execute(text("SELECT 1"))
    return plan


def test_sweeps_use_their_indexes(rt: Runtime) -> None:
    add(rt)
    plan = _plan(rt, rt.service.expiry_sweep, "password_expires_at")
    assert "ix_accounts_password_expires_at" in plan, plan
    plan = _plan(rt, rt.service.auto_unlock_due, "locked_until")
    assert "ix_accounts_locked_until" in plan, plan


# ---------------------------------------------------------------- tokens
def _live(rt: Runtime, token: str, purpose: Purpose = Purpose.ADMIN_RESET) -> bool:
    return rt.service.peek_token(token, [purpose.value]) is not None


@pytest.mark.parametrize("how", ["change", "lock", "disable", "temporary"])
def test_tokens_revoked_by_change_lock_disable(rt: Runtime, how: str) -> None:
    alice = add(rt)
    token = rt.service.issue_token(alice, Purpose.ADMIN_RESET, timedelta(hours=24), actor=ADMIN)
    verify = rt.service.issue_token(alice, Purpose.VERIFY_RECOVERY, timedelta(hours=4), actor=ADMIN)
    assert _live(rt, token) and _live(rt, verify, Purpose.VERIFY_RECOVERY)
    if how == "change":
        run(rt.service.change_password("alice", PW2, actor=ADMIN))
    elif how == "lock":
        run(rt.service.lock("alice", actor=ADMIN))
    elif how == "disable":
        run(rt.service.set_state("alice", active=False, actor=ADMIN))
    else:
        run(rt.service.set_temporary_password("alice", actor=ADMIN))
    assert not _live(rt, token) and not _live(rt, verify, Purpose.VERIFY_RECOVERY)


def test_lockout_by_failures_revokes_tokens(rt: Runtime) -> None:
    alice = add(rt)
    token = rt.service.issue_token(alice, Purpose.SELF_RESET, timedelta(hours=1), actor=ADMIN)
    for _ in range(5):
        refused(rt, "alice", "wrong-password-123")
    assert not _live(rt, token, Purpose.SELF_RESET)


def test_token_single_use_bound_and_expiring(rt: Runtime, clock: FrozenClock) -> None:
    alice = add(rt)
    bob = add(rt, "bob")
    user = Actor("alice", via="portal")
    purposes = [Purpose.SELF_RESET.value]
    old = rt.service.issue_token(alice, Purpose.SELF_RESET, timedelta(hours=1), actor=ADMIN)
    token = rt.service.issue_token(alice, Purpose.SELF_RESET, timedelta(hours=1), actor=ADMIN)
    assert not _live(rt, old, Purpose.SELF_RESET)  # a newer token replaces the older one
    assert not _live(rt, token, Purpose.ADMIN_RESET)  # bound to its purpose
    with pytest.raises(PolicyViolation, match="no longer valid"):  # bound to its account
        run(
            rt.service.change_password(
                bob, PW2, actor=user, consume_token=token, token_purposes=purposes
            )
        )
    with pytest.raises(PolicyViolation, match="at least"):  # refused password keeps the token
        run(
            rt.service.change_password(
                alice, "short", actor=user, consume_token=token, token_purposes=purposes
            )
        )
    run(
        rt.service.change_password(
            alice, PW2, actor=user, consume_token=token, token_purposes=purposes
        )
    )
    with pytest.raises(PolicyViolation, match="no longer valid"):
        run(
            rt.service.change_password(
                alice, PW3, actor=user, consume_token=token, token_purposes=purposes
            )
        )
    assert auth(rt, "alice", PW2).username == "alice"
    late = rt.service.issue_token(alice, Purpose.SELF_RESET, timedelta(hours=1), actor=ADMIN)
    clock.advance(timedelta(hours=1))
    assert not _live(rt, late, Purpose.SELF_RESET)
    with pytest.raises(PolicyViolation, match="no longer valid"):
        run(
            rt.service.change_password(
                alice, PW3, actor=user, consume_token=late, token_purposes=purposes
            )
        )
    dump = json.dumps([r.details for r in audit_rows(rt)]) + str(
        [(r.reason, r.subject) for r in audit_rows(rt)]
    )
    for secret in (old, token, late, PW, PW2, PW3):
        assert secret not in dump


# ---------------------------------------------------------------- TOTP
def _totp(rt: Runtime, clock: FrozenClock, name: str, kind: str) -> str:
    from gateway import mfa

    add(rt, name, kind=kind)
    seed = run(rt.service.enrol_totp(name, actor=ADMIN))
    run(rt.service.verify_totp(name, mfa.code_at(seed, clock.now()), actor=ADMIN, confirm=True))
    return seed


def test_totp_once_window_and_limits(rt: Runtime, clock: FrozenClock) -> None:
    from gateway import mfa

    set_org(rt, mfa={"user_totp_attempts": 3})
    seed = _totp(rt, clock, "alice", "user")
    step = timedelta(seconds=30)
    used = mfa.code_at(seed, clock.now())
    with pytest.raises(AuthenticationFailed):  # each code once
        run(rt.service.verify_totp("alice", used, actor=ADMIN))
    run(rt.service.verify_totp("alice", mfa.code_at(seed, clock.now() + step), actor=ADMIN))
    clock.advance(step * 3)
    run(rt.service.verify_totp("alice", mfa.code_at(seed, clock.now() - step), actor=ADMIN))
    for _ in range(3):  # user limit set to three in org.toml
        with pytest.raises(AuthenticationFailed):
            run(rt.service.verify_totp("alice", "000000", actor=ADMIN))
    view = run(rt.service.get_account("alice"))
    assert view.locked and view.lock_reason == "mfa"
    clock.advance(step * 2)
    with pytest.raises(AuthenticationFailed):  # locked: even a right code fails
        run(rt.service.verify_totp("alice", mfa.code_at(seed, clock.now()), actor=ADMIN))
    refused(rt, "alice", PW)

    admin_seed = _totp(rt, clock, "root", "admin")
    for n in range(5):
        assert not run(rt.service.get_account("root")).locked, n
        with pytest.raises(AuthenticationFailed):
            run(rt.service.verify_totp("root", "000000", actor=ADMIN))
    assert run(rt.service.get_account("root")).locked  # admins: five
    with rt.store.read() as s:
        sealed = s.execute(select(func.count()).select_from(AuditEntry)).scalar()
        assert sealed
        raw = s.connection().exec_driver_sql("SELECT sealed_seed FROM totp_credentials").all()
        assert all(admin_seed.encode() not in bytes(r[0]) for r in raw)


# ---------------------------------------------------------------- one transaction
class _Boom:
    def on_change(self, session: Session, account: Account, change: Change) -> None:
        if change.trigger is Trigger.PASSWORD_CHANGE and account.username == "alice":
            raise RuntimeError("listener failed")


def test_listener_failure_rolls_back_change_and_audit(rt: Runtime) -> None:
    alice = add(rt)
    rows = len(audit_rows(rt, account_id=alice))
    rt.service.listeners.append(_Boom())
    with pytest.raises(RuntimeError):
        run(rt.service.change_password("alice", PW2, actor=ADMIN))
    assert len(audit_rows(rt, account_id=alice)) == rows
    assert auth(rt, "alice", PW).username == "alice"


def test_shed_request_changes_nothing(rt: Runtime) -> None:
    """A request refused because the hash pool is full counts no failure and writes no audit row."""
    uid = add(rt)
    before = len(audit_rows(rt, account_id=uid))
    hasher = rt.service.hasher
    held = [hasher.slot() for _ in range(hasher._limit)]  # fill every place in the pool
    for slot in held:
        slot.__enter__()
    try:
        with pytest.raises(Overloaded):
            auth(rt, "alice", "wrong-password-123")
        assert hasher.saturated == 1
    finally:
        for slot in held:
            slot.__exit__(None, None, None)
    assert account(rt, uid).failed_count == 0
    assert len(audit_rows(rt, account_id=uid)) == before
    assert auth(rt, "alice", PW).username == "alice"
