"""The google connector against the strict token + Directory fake, through the real client."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from connectors.base import AccountRef, DesiredState, Identity
from connectors.google import GoogleConnector
from connectors.testing import ConnectorContract
from gateway.errors import (
    NotFoundError,
    RejectedError,
    TargetConfigError,
    TransientError,
)
from tests.cloud.conftest import SA_EMAIL, google_config
from tests.fakes import Fault
from tests.fakes.certs import TlsFiles, rsa_identity
from tests.fakes.google_directory import FakeDirectory, GoogleUser

NEW = "N3w-Passw0rd!x"


def reason(status: int, why: str) -> Fault:
    """A Directory error with ``error.errors[].reason`` set to ``why``."""
    body = {"error": {"code": status, "message": why, "errors": [{"reason": why}]}}
    return Fault(path="/admin/directory/v1/users/", status=status, body=body)


class DirectoryTarget:
    """Observes and prepares users at the Directory fake for the contract."""

    def __init__(self, fake: FakeDirectory) -> None:
        self.fake = fake

    def _user(self, username: str) -> GoogleUser:
        return next(u for u in self.fake.users.values() if u.primaryEmail.startswith(username))

    def create(self, username: str, email: str, password: str) -> None:
        self.fake.add_user(email).password = password

    def can_sign_in(self, username: str, password: str) -> bool:
        user = self._user(username)
        return not user.suspended and user.password == password

    def is_disabled(self, username: str) -> bool:
        return self._user(username).suspended

    def disable_by_hand(self, username: str) -> None:
        self._user(username).suspended = True


class TestGoogleContract(ConnectorContract):
    """The shared connector contract, run against the Directory fake."""

    @pytest.fixture
    def connector(self, google: GoogleConnector) -> GoogleConnector:
        return google

    @pytest.fixture
    def target(self, directory: FakeDirectory) -> DirectoryTarget:
        return DirectoryTarget(directory)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_constructor_does_no_io(directory: FakeDirectory, tls: TlsFiles) -> None:
    GoogleConnector("workspace", google_config(directory, tls))
    assert directory.http_requests == 0


def test_jwt_assertion_is_verified(directory: FakeDirectory, google: GoogleConnector) -> None:
    user = directory.add_user("ann@example.org")
    run(google.apply(AccountRef(user.id), DesiredState(1), SecretStr(NEW)))
    assert user.password == NEW and directory.token_requests == 1
    assert directory.token_rejections == []


def test_wrong_subject_or_key_is_a_config_error(directory: FakeDirectory, tls: TlsFiles) -> None:
    conn = GoogleConnector(
        "workspace", google_config(directory, tls, admin_subject="x@example.org")
    )
    with pytest.raises(TargetConfigError):
        run(conn.check())
    run(conn.aclose())
    assert directory.token_rejections == ["sub"]
    directory.public_cert_pem = rsa_identity("someone else")[1]
    conn = GoogleConnector("workspace", google_config(directory, tls))
    with pytest.raises(TargetConfigError):
        run(conn.check())
    run(conn.aclose())
    assert directory.token_rejections[-1].startswith("signature")


def test_find_by_primary_email_not_alias(directory: FakeDirectory, google: GoogleConnector) -> None:
    user = directory.add_user("bob@example.org", aliases=("robert@example.org",))
    ref = run(google.find_account(Identity("bob", "BOB@example.org")))
    assert ref is not None and ref.key == user.id
    assert run(google.find_account(Identity("robert", "robert@example.org"))) is None
    assert run(google.find_account(Identity("nobody", "nobody@example.org"))) is None


def test_lock_expiry_and_unlock(directory: FakeDirectory, google: GoogleConnector) -> None:
    cat, dan = directory.add_user("cat@example.org"), directory.add_user("dan@example.org")
    dan.suspended = True  # suspended by hand
    refs = [AccountRef(cat.id), AccountRef(dan.id)]

    async def go() -> list[frozenset[str]]:
        locked = [await google.apply(r, DesiredState(1, disabled=True), None) for r in refs]
        assert cat.suspended and locked == [{"disabled"}, frozenset()]
        expired = [
            await google.apply(r, DesiredState(2, force_change=True, owned=o), None)
            for r, o in zip(refs, locked, strict=True)
        ]
        assert cat.changePasswordAtNextLogin and dan.changePasswordAtNextLogin
        return [
            await google.apply(r, DesiredState(3, owned=o), SecretStr(NEW))
            for r, o in zip(refs, expired, strict=True)
        ]

    assert run(go()) == [frozenset(), frozenset()]
    assert not cat.suspended and dan.suspended
    assert not cat.changePasswordAtNextLogin and cat.password == NEW


def test_temporary_password_sets_must_change(directory: FakeDirectory, google: GoogleConnector):
    eve = directory.add_user("eve@example.org")
    desired = DesiredState(1, temporary=True, force_change=True)
    owned = run(google.apply(AccountRef(eve.id), desired, SecretStr(NEW)))
    assert owned == {"force_change"} and eve.changePasswordAtNextLogin and eve.password == NEW


@pytest.mark.parametrize("why", ["userRateLimitExceeded", "rateLimitExceeded", "quotaExceeded"])
def test_rate_limit_reasons_on_403_are_transient(
    directory: FakeDirectory, google: GoogleConnector, why: str
) -> None:
    user = directory.add_user("fay@example.org")
    directory.add_fault(reason(403, why))
    with pytest.raises(TransientError, match=why):
        run(google.apply(AccountRef(user.id), DesiredState(1), SecretStr(NEW)))
    assert user.password is None


def test_status_and_reason_mapping(directory: FakeDirectory, google: GoogleConnector) -> None:
    ref = AccountRef(directory.add_user("gus@example.org").id)
    cases: list[tuple[Fault, type[Exception]]] = [
        (reason(503, "backendError"), TransientError),
        (reason(500, "internalError"), TransientError),
        (reason(403, "forbidden"), TargetConfigError),
        (reason(404, "notFound"), NotFoundError),
        (reason(400, "invalid"), RejectedError),
    ]
    for fault, expected in cases:
        directory.add_fault(fault)
        with pytest.raises(expected):
            run(google.apply(ref, DesiredState(1, disabled=True), None))
    with pytest.raises(NotFoundError):
        run(google.apply(AccountRef("999"), DesiredState(1), SecretStr(NEW)))
    retry = Fault(path="/batch", status=429, headers={"Retry-After": "3"})
    directory.add_fault(retry)
    with pytest.raises(TransientError) as info:
        run(google.apply(ref, DesiredState(1), SecretStr(NEW)))
    assert info.value.retry_after == 3.0


def test_invalid_password_is_rejected_without_echo(
    directory: FakeDirectory, google: GoogleConnector
) -> None:
    ref = AccountRef(directory.add_user("hal@example.org").id)
    with pytest.raises(RejectedError, match="Invalid Password") as info:
        run(google.apply(ref, DesiredState(1), SecretStr("short")))
    assert "short" not in str(info.value)


def test_timeout_is_transient(directory: FakeDirectory, tls: TlsFiles) -> None:
    conn = GoogleConnector("workspace", google_config(directory, tls, timeout_s=0.3))
    ref = AccountRef(directory.add_user("ida@example.org").id)
    run(conn.check())
    directory.add_fault(Fault(path="/batch", delay=1.0, status=200))
    with pytest.raises(TransientError):
        run(conn.apply(ref, DesiredState(1, disabled=True), None))
    run(conn.aclose())


def test_ca_bundle_is_the_configured_one(
    directory: FakeDirectory, tls: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPLIB2_CA_CERTS", str(tls.ca))
    conn = GoogleConnector("workspace", google_config(directory, tls, ca_bundle=None))
    with pytest.raises(TargetConfigError):
        run(conn.check())
    run(conn.aclose())
    assert directory.token_requests == 0


def test_concurrent_applies_share_one_batch(directory: FakeDirectory, tls: TlsFiles) -> None:
    conn = GoogleConnector("workspace", google_config(directory, tls, batch_size=50))
    refs = [AccountRef(directory.add_user(f"u{i}@example.org").id) for i in range(60)]

    async def go() -> list[frozenset[str]]:
        try:
            return await asyncio.gather(
                *(conn.apply(r, DesiredState(1, disabled=True), None) for r in refs)
            )
        finally:
            await conn.aclose()

    assert all(o == {"disabled"} for o in run(go()))
    assert sum(directory.batch_sizes) == 120 and max(directory.batch_sizes) == 50
    assert len(directory.batch_sizes) <= 4


def test_config_is_checked_when_loaded(directory: FakeDirectory, tls: TlsFiles) -> None:
    with pytest.raises(ValidationError, match="https"):
        google_config(directory, tls, batch_uri="http://127.0.0.1/batch")
    with pytest.raises(ValidationError):
        google_config(directory, tls, batch_size=1001)
    with pytest.raises(ValidationError, match="is not set"):
        google_config(directory, tls, service_account_key="env:NO_SUCH_VARIABLE_HERE")
    assert SA_EMAIL not in str(google_config(directory, tls))


@pytest.mark.parametrize(
    ("password", "refused"),
    [
        ("Short1!", "at least 8"),
        ("x" * 101, "at most 100"),
        ("Pässwort-123", "ASCII"),
        ("password", None),
    ],
)
def test_google_password_limits(password: str, refused: str | None) -> None:
    (limit,) = GoogleConnector.password_limits
    why = limit.violation(password)
    assert (why is None) == (refused is None)
    if refused is not None:
        assert why is not None and "Google Workspace" in why and refused in why
