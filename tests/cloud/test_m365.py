"""The m365 connector against the strict Entra + Graph fake, through real msal and requests."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from connectors.base import AccountRef, DesiredState, Identity
from connectors.m365 import M365Connector
from connectors.testing import ConnectorContract
from gateway.errors import (
    NotFoundError,
    RejectedError,
    TargetConfigError,
    TransientError,
)
from tests.cloud.conftest import m365_config
from tests.fakes import Fault, RateLimit
from tests.fakes.certs import TlsFiles, rsa_identity, write_private
from tests.fakes.entra_graph import COMPLEXITY, FakeGraph, GraphUser

NEW = "N3w-Passw0rd!x"


class GraphTarget:
    """Observes and prepares users at the Graph fake for the contract."""

    def __init__(self, fake: FakeGraph) -> None:
        self.fake = fake

    def create(self, username: str, email: str, password: str) -> None:
        user = self.fake.add_user(email, mail=email)
        user.password = password

    def _user(self, username: str) -> GraphUser:
        return next(u for u in self.fake.users.values() if u.displayName == username)

    def can_sign_in(self, username: str, password: str) -> bool:
        user = self._user(username)
        return bool(user.accountEnabled and user.password == password)

    def is_disabled(self, username: str) -> bool:
        return not self._user(username).accountEnabled

    def disable_by_hand(self, username: str) -> None:
        self._user(username).accountEnabled = False


class TestM365Contract(ConnectorContract):
    """The shared connector contract, run against the Graph fake."""

    @pytest.fixture
    def connector(self, m365: M365Connector) -> M365Connector:
        return m365

    @pytest.fixture
    def target(self, graph: FakeGraph) -> GraphTarget:
        return GraphTarget(graph)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def link(conn: M365Connector, email: str) -> AccountRef:
    ref = run(conn.find_account(Identity(email.split("@")[0], email)))
    assert ref is not None
    return ref


def test_constructor_and_config_do_no_network_io(graph: FakeGraph, tls: TlsFiles, tmp_path: Path):
    M365Connector("office", m365_config(graph, tls, tmp_path))
    assert graph.http_requests == 0


def test_password_change_sends_flag_explicitly(graph: FakeGraph, m365: M365Connector) -> None:
    user = graph.add_user("ann@example.org")
    user.forceChangePasswordNextSignIn = True
    ref = link(m365, "ann@example.org")
    owned = run(m365.apply(ref, DesiredState(1), SecretStr(NEW)))
    assert user.password == NEW and user.forceChangePasswordNextSignIn is False
    assert owned == frozenset()
    owned = run(m365.apply(ref, DesiredState(2, temporary=True, force_change=True), SecretStr(NEW)))
    assert user.forceChangePasswordNextSignIn is True and owned == {"force_change"}
    assert graph.token_requests == 1  # msal's token cache


def test_find_by_mail_and_missing(graph: FakeGraph, m365: M365Connector) -> None:
    user = graph.add_user("u123@tenant.onmicrosoft.com", mail="o'neil@example.org")
    ref = run(m365.find_account(Identity("oneil", "o'neil@example.org")))
    assert ref is not None and ref.key == user.id
    assert run(m365.find_account(Identity("x", "nobody@example.org"))) is None


def test_lock_revokes_sessions_and_unlock_restores_only_owned(
    graph: FakeGraph, tls: TlsFiles, tmp_path: Path
) -> None:
    conn = M365Connector("office", m365_config(graph, tls, tmp_path, revoke_sessions=True))
    bob, cat = graph.add_user("bob@example.org"), graph.add_user("cat@example.org")
    cat.accountEnabled = False  # suspended by hand
    refs = [AccountRef(bob.id), AccountRef(cat.id)]

    async def go() -> list[frozenset[str]]:
        try:
            locked = [await conn.apply(r, DesiredState(1, disabled=True), None) for r in refs]
            assert not bob.accountEnabled and bob.revocations == 1 and cat.revocations == 0
            return [
                await conn.apply(r, DesiredState(2, owned=o), None)
                for r, o in zip(refs, locked, strict=True)
            ]
        finally:
            await conn.aclose()

    assert run(go()) == [frozenset(), frozenset()]
    assert bob.accountEnabled and not cat.accountEnabled


def test_expiry_force_change_needs_a_password(graph: FakeGraph, m365: M365Connector) -> None:
    user = graph.add_user("dee@example.org")
    with pytest.raises(RejectedError, match="cannot demand a new password"):
        run(m365.apply(AccountRef(user.id), DesiredState(1, force_change=True), None))
    assert user.forceChangePasswordNextSignIn is False


def test_retry_after_on_a_batch_item(graph: FakeGraph, m365: M365Connector) -> None:
    user = graph.add_user("eve@example.org")
    graph.add_fault(Fault(path="^/users/", status=429, headers={"Retry-After": "3"}))
    with pytest.raises(TransientError) as info:
        run(m365.apply(AccountRef(user.id), DesiredState(1), SecretStr(NEW)))
    assert info.value.retry_after == 3.0
    assert user.password is None


def test_throttled_batch_and_server_errors_are_transient(
    graph: FakeGraph, m365: M365Connector
) -> None:
    ref = AccountRef(graph.add_user("fay@example.org").id)
    for status in (503, 500, 502):
        graph.add_fault(Fault(path="^/users/", status=status))
        with pytest.raises(TransientError) as info:
            run(m365.apply(ref, DesiredState(1), SecretStr(NEW)))
        assert info.value.retry_after is None
    graph.add_fault(Fault(path=r"/\$batch", status=429, headers={"Retry-After": "1"}))
    with pytest.raises(TransientError) as info:
        run(m365.apply(ref, DesiredState(1), SecretStr(NEW)))
    assert info.value.retry_after == 1.0


def test_after_retry_after_the_next_batch_waits(graph: FakeGraph, m365: M365Connector) -> None:
    refs = [AccountRef(graph.add_user(f"w{i}@example.org").id) for i in range(2)]
    graph.add_fault(Fault(path="^/users/", status=429, headers={"Retry-After": "1"}))

    async def go() -> None:
        with pytest.raises(TransientError):
            await m365.apply(refs[0], DesiredState(1), SecretStr(NEW))
        await m365.apply(refs[1], DesiredState(1), SecretStr(NEW))

    run(go())
    (t0, _, _), (t1, _, _) = graph.log[-2:]
    assert t1 - t0 >= 0.95


def test_timeout_is_transient(graph: FakeGraph, tls: TlsFiles, tmp_path: Path) -> None:
    conn = M365Connector("office", m365_config(graph, tls, tmp_path, timeout_s=0.3))
    ref = AccountRef(graph.add_user("gus@example.org").id)
    run(conn.check())
    graph.add_fault(Fault(path=r"/\$batch", delay=1.0, status=204))
    with pytest.raises(TransientError):
        run(conn.apply(ref, DesiredState(1, disabled=True), None))
    run(conn.aclose())


def test_policy_rejection_names_reason_without_secret(
    graph: FakeGraph, m365: M365Connector
) -> None:
    ref = AccountRef(graph.add_user("hal@example.org").id)
    with pytest.raises(RejectedError) as info:
        run(m365.apply(ref, DesiredState(1), SecretStr("alllowercase")))
    assert COMPLEXITY in str(info.value) and "alllowercase" not in str(info.value)
    graph.banned[NEW] = f"Password {NEW} is on the banned password list."
    with pytest.raises(RejectedError) as info:
        run(m365.apply(ref, DesiredState(1), SecretStr(NEW)))
    assert "banned password list" in str(info.value) and NEW not in str(info.value)


def test_access_errors_are_config_and_404_not_found(
    graph: FakeGraph, tls: TlsFiles, tmp_path: Path, m365: M365Connector
) -> None:
    ref = AccountRef(graph.add_user("ida@example.org").id)
    graph.add_fault(
        Fault(path="^/users/", status=403, body={"error": {"code": "Authorization_RequestDenied"}})
    )
    with pytest.raises(TargetConfigError, match="Authorization_RequestDenied"):
        run(m365.apply(ref, DesiredState(1, disabled=True), None))
    with pytest.raises(NotFoundError):
        run(m365.apply(AccountRef("no-such-id"), DesiredState(1), SecretStr(NEW)))
    write_private(tmp_path / "wrong.secret", "wrong-secret")
    bad = m365_config(graph, tls, tmp_path, client_secret=f"file:{tmp_path / 'wrong.secret'}")
    conn = M365Connector("office", bad)
    with pytest.raises(TargetConfigError) as info:
        run(conn.check())
    assert "wrong-secret" not in str(info.value) and "invalid_client" in str(info.value)
    run(conn.aclose())


def test_ca_bundle_is_the_configured_one_not_the_environment(
    graph: FakeGraph, tls: TlsFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(tls.ca))
    conn = M365Connector("office", m365_config(graph, tls, tmp_path, ca_bundle=None))
    with pytest.raises(TargetConfigError):
        run(conn.check())
    run(conn.aclose())
    assert graph.token_requests == 0


def test_client_certificate_credential(graph: FakeGraph, tls: TlsFiles, tmp_path: Path) -> None:
    key, cert = rsa_identity("gateway-app")
    graph.client_cert_pem = cert
    pem = write_private(tmp_path / "app.pem", key + cert)
    cfg = m365_config(graph, tls, tmp_path, client_secret=None, client_certificate=f"file:{pem}")
    conn = M365Connector("office", cfg)
    user = graph.add_user("jo@example.org")
    run(conn.apply(AccountRef(user.id), DesiredState(1, disabled=True), None))
    assert not user.accountEnabled and graph.token_requests == 1
    run(conn.aclose())
    other_key, _ = rsa_identity("intruder")
    pem.write_text(other_key + cert)
    conn = M365Connector("office", cfg)
    with pytest.raises(TargetConfigError):
        run(conn.check())
    run(conn.aclose())


def test_concurrent_applies_share_batches_of_twenty(graph: FakeGraph, m365: M365Connector):
    refs = [AccountRef(graph.add_user(f"u{i}@example.org").id) for i in range(45)]

    async def go() -> list[frozenset[str]]:
        return await asyncio.gather(
            *(m365.apply(r, DesiredState(1, disabled=True), None) for r in refs)
        )

    assert all(o == {"disabled"} for o in run(go()))
    assert all(not u.accountEnabled for u in graph.users.values())
    assert max(graph.batch_sizes) == 20 and sum(graph.batch_sizes) == 90
    assert len(graph.batch_sizes) <= 6


def test_rate_limited_fake_answers_429_with_retry_after(graph: FakeGraph, m365: M365Connector):
    graph.rate_limit = RateLimit(rate=1, burst=1)
    refs = [AccountRef(graph.add_user(f"r{i}@example.org").id) for i in range(3)]

    async def go() -> list[object]:
        return await asyncio.gather(
            *(m365.apply(r, DesiredState(1), SecretStr(NEW)) for r in refs), return_exceptions=True
        )

    results = run(go())
    throttled = [r for r in results if isinstance(r, TransientError)]
    assert len(throttled) == 2 and all(t.retry_after and t.retry_after >= 1 for t in throttled)


def test_config_is_checked_when_loaded(graph: FakeGraph, tls: TlsFiles, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        m365_config(graph, tls, tmp_path, client_certificate="env:HOME")
    with pytest.raises(ValidationError, match="https"):
        m365_config(graph, tls, tmp_path, graph_url="http://127.0.0.1/v1.0")
    with pytest.raises(ValidationError, match="never inline"):
        m365_config(graph, tls, tmp_path, client_secret="s3cr3t-value")
    with pytest.raises(ValidationError, match="extra"):
        m365_config(graph, tls, tmp_path, colour="blue")


@pytest.mark.parametrize(
    ("password", "refused"),
    [
        ("Short1!", "at least 8"),
        ("alllowercase1234", "3 of 4"),
        ("lower and spaces 1", "3 of 4"),
        ("Pässwort-123", "ASCII"),
        ("A" * 200 + "a1!" + "b" * 60, "at most 256"),
        ("Valid-Pass1", None),
        ("lowerUPPER1234", None),
    ],
)
def test_entra_password_limits(password: str, refused: str | None) -> None:
    (limit,) = M365Connector.password_limits
    why = limit.violation(password)
    assert (why is None) == (refused is None)
    if refused is not None:
        assert why is not None and "Microsoft 365" in why and refused in why


def test_pacing_keeps_to_the_configured_rate(
    graph: FakeGraph, tls: TlsFiles, tmp_path: Path
) -> None:
    conn = M365Connector("office", m365_config(graph, tls, tmp_path, max_calls_per_second=20))
    refs = [AccountRef(graph.add_user(f"p{i}@example.org").id) for i in range(40)]

    async def go() -> None:
        try:
            await asyncio.gather(*(conn.apply(r, DesiredState(1), SecretStr(NEW)) for r in refs))
        finally:
            await conn.aclose()

    run(go())
    first, last = graph.log[0][0], graph.log[-1][0]
    assert graph.batch_sizes == [20, 20] and last - first >= 0.95


def test_token_service_errors(graph: FakeGraph, tls: TlsFiles, tmp_path: Path) -> None:
    graph.add_fault(Fault(path="/oauth2/v2.0/token", status=503, body={"error": "x"}))
    conn = M365Connector("office", m365_config(graph, tls, tmp_path))
    with pytest.raises(TransientError):
        run(conn.check())
    run(conn.aclose())


def test_close_releases_callers_held_by_retry_after(graph: FakeGraph, m365: M365Connector):
    refs = [AccountRef(graph.add_user(f"c{i}@example.org").id) for i in range(2)]
    graph.add_fault(Fault(path="^/users/", status=429, headers={"Retry-After": "30"}))

    async def go() -> None:
        with pytest.raises(TransientError):
            await m365.apply(refs[0], DesiredState(1), SecretStr(NEW))
        held = asyncio.ensure_future(m365.apply(refs[1], DesiredState(1), SecretStr(NEW)))
        await asyncio.sleep(0.1)
        await m365.aclose()
        with pytest.raises(TransientError, match="closed"):
            await asyncio.wait_for(held, 2)

    run(go())


def test_policy_file_cannot_ask_m365_to_force_a_change_on_expiry(
    graph: FakeGraph, tls: TlsFiles, tmp_path: Path
) -> None:
    from gateway.errors import PolicyFileError
    from gateway.policies import load_resource
    from tests.cloud.policies import resource_toml

    cfg = m365_config(graph, tls, tmp_path)
    connection = {k: v for k, v in cfg.model_dump().items() if v is not None and k != "match"}
    path = tmp_path / "office.toml"
    path.write_text(resource_toml("m365", {"expired": "force_change"}, connection))
    with pytest.raises(PolicyFileError, match="suspend, maintain") as info:
        load_resource(path)
    assert "actions.expired" in info.value.location
    path.write_text(resource_toml("m365", {"expired": "suspend"}, connection))
    assert load_resource(path).connection == cfg
