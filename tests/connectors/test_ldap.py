"""The ldap connector against a real slapd with the ppolicy overlay (started by these tests)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from connectors.base import AccountRef, DesiredState, Identity
from connectors.ldap import LdapConnector
from connectors.ldap_config import LdapConfig, LdapLink
from connectors.ldap_flavours import FLAVOURS, ppolicy_error
from connectors.testing import ConnectorContract, run
from gateway.errors import NotFoundError, RejectedError, TargetConfigError, TransientError
from tests.support.slapd import LOCKED_FOREVER, Slapd, slapd  # noqa: F401
from tests.support.tlsca import make_tls_files

pytestmark = pytest.mark.slapd


def _secret_file(directory: Path, value: str) -> Path:
    path = directory / f"bind-{uuid.uuid4().hex[:6]}.secret"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return path


def make_connector(server: Slapd, tmp: Path, **overrides: Any) -> LdapConnector:
    """A connector on ``server`` over StartTLS with its CA, bound as the service account."""
    settings: dict[str, Any] = {
        "url": server.url,
        "tls": "starttls",
        "ca_file": str(server.tls.ca),
        "bind_dn": server.service_dn,
        "bind_password": f"file:{_secret_file(tmp, server.service_password)}",
        "base_dn": server.base_dn,
        "pool_size": 4,
    }
    settings.update(overrides)
    return LdapConnector("ldap-test", LdapConfig.model_validate(settings), {})


class SlapdTarget:
    """The contract's view of slapd: create entries, try binds, lock by hand."""

    def __init__(self, server: Slapd) -> None:
        self.server = server

    def create(self, username: str, email: str, password: str) -> None:
        """Add an entry as the rootdn."""
        self.server.add_user(username, email, password)

    def can_sign_in(self, username: str, password: str) -> bool:
        """A real simple bind."""
        return self.server.can_bind(self.server.user_dn(username), password)

    def is_disabled(self, username: str) -> bool:
        """pwdAccountLockedTime is set."""
        return bool(self.server.operational(self.server.user_dn(username))["pwdAccountLockedTime"])

    def disable_by_hand(self, username: str) -> None:
        """Lock as a directory admin would."""
        self.server.admin_lock(self.server.user_dn(username))


def _user(server: Slapd) -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:8]
    uid = f"u{tag}"
    dn = server.add_user(uid, f"{uid}@example.org", f"Initial-{tag}-Pw")
    return uid, dn, f"Initial-{tag}-Pw"


def _apply(
    conn: LdapConnector, dn: str, state: DesiredState, password: str | None = None
) -> frozenset[str]:
    async def go() -> frozenset[str]:
        try:
            return await conn.apply(
                AccountRef(dn), state, SecretStr(password) if password else None
            )
        finally:
            await conn.aclose()

    return run(go())


class TestLdapConnector(ConnectorContract):
    """The shared contract plus OpenLDAP ppolicy behaviour, TLS and error translation."""

    @pytest.fixture
    def connector(self, slapd: Slapd, tmp_path: Path) -> LdapConnector:  # noqa: F811
        """A fresh connector per test (the contract closes it)."""
        return make_connector(slapd, tmp_path)

    @pytest.fixture
    def target(self, slapd: Slapd) -> SlapdTarget:  # noqa: F811
        """Observe and prepare the module's slapd."""
        return SlapdTarget(slapd)

    def _ghost_key(self, connector: Any) -> str:
        return f"uid=ghost{uuid.uuid4().hex[:8]},ou=people,dc=example,dc=org"

    # -- passwords ---------------------------------------------------------------------------

    def test_password_reaches_slapd(self, connector: LdapConnector, slapd: Slapd) -> None:  # noqa: F811
        """ldapwhoami works with the new password, not the old; no pwdReset is left behind."""
        _, dn, old = _user(slapd)
        owned = _apply(connector, dn, DesiredState(version=1), "Brand-New-Pass-1")
        assert owned == frozenset()
        ok = slapd.whoami(dn, "Brand-New-Pass-1")
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.strip() == f"dn:{dn}"
        assert slapd.whoami(dn, old).returncode == 49
        attrs = slapd.operational(dn)
        assert attrs["pwdReset"] == []
        assert attrs["pwdChangedTime"]

    def test_temporary_password_sets_pwd_reset(
        self,
        connector: LdapConnector,
        slapd: Slapd,  # noqa: F811
    ) -> None:
        """A temporary password sets pwdReset TRUE; the next normal one clears it."""
        _, dn, _ = _user(slapd)
        owned = _apply(connector, dn, DesiredState(version=1, temporary=True), "Temp-Pass-12345")
        assert "force_change" in owned
        assert slapd.operational(dn)["pwdReset"] == ["TRUE"]
        assert slapd.can_bind(dn, "Temp-Pass-12345")
        second = _apply(connector, dn, DesiredState(version=2, owned=owned), "Final-Pass-12345")
        assert "force_change" not in second
        assert slapd.operational(dn)["pwdReset"] == []
        assert slapd.whoami(dn, "Final-Pass-12345").returncode == 0

    def test_normal_change_clears_pwd_reset_set_elsewhere(
        self,
        connector: LdapConnector,
        slapd: Slapd,  # noqa: F811
    ) -> None:
        """A pwdReset an admin (or an admin reset) left on the entry is gone after a change."""
        _, dn, _ = _user(slapd)
        slapd.modify(dn, {"pwdReset": ["TRUE"]})
        _apply(connector, dn, DesiredState(version=1), "After-Reset-Pass-1")
        assert slapd.operational(dn)["pwdReset"] == []

    def test_expiry_force_change_without_password(
        self,
        connector: LdapConnector,
        slapd: Slapd,  # noqa: F811
    ) -> None:
        """expired = force_change sets pwdReset; clearing it later removes only ours."""
        _, dn, _ = _user(slapd)
        owned = _apply(connector, dn, DesiredState(version=1, force_change=True), None)
        assert slapd.operational(dn)["pwdReset"] == ["TRUE"]
        cleared = _apply(connector, dn, DesiredState(version=2, owned=owned), None)
        assert cleared == frozenset()
        assert slapd.operational(dn)["pwdReset"] == []

    def test_same_password_again_counts_as_applied(
        self,
        connector: LdapConnector,
        slapd: Slapd,  # noqa: F811
    ) -> None:
        """slapd refuses the current password again (history); a bind proves it is delivered."""
        _, dn, _ = _user(slapd)
        _apply(connector, dn, DesiredState(version=1), "Repeat-Pass-123")
        before = slapd.operational(dn)
        assert not slapd.can_bind(dn, "Wrong-Pass-123")  # the refusal path is what we test
        _apply(connector, dn, DesiredState(version=1), "Repeat-Pass-123")
        after = slapd.operational(dn)
        assert after["pwdHistory"] == before["pwdHistory"], "slapd should have refused the repeat"
        assert slapd.whoami(dn, "Repeat-Pass-123").returncode == 0

    def test_same_password_while_locked_counts_as_applied(
        self,
        connector: LdapConnector,
        slapd: Slapd,  # noqa: F811
    ) -> None:
        """Redelivery of password + disable: the bind cannot work, slapd's own answer decides."""
        _, dn, _ = _user(slapd)
        state = DesiredState(version=1, disabled=True)
        owned = _apply(connector, dn, state, "Locked-Pass-1234")
        again = _apply(
            connector, dn, DesiredState(version=1, disabled=True, owned=owned), "Locked-Pass-1234"
        )
        assert again == owned == frozenset({"disabled"})
        assert slapd.operational(dn)["pwdAccountLockedTime"] == [LOCKED_FOREVER]

    def test_older_password_from_history_is_rejected(
        self,
        connector: LdapConnector,
        slapd: Slapd,  # noqa: F811
    ) -> None:
        """An earlier password (in history, not current) is a RejectedError, without the secret."""
        _, dn, _ = _user(slapd)
        _apply(connector, dn, DesiredState(version=1), "History-One-123")
        _apply(connector, dn, DesiredState(version=2), "History-Two-123")
        with pytest.raises(RejectedError) as info:
            _apply(connector, dn, DesiredState(version=3), "History-One-123")
        assert "passwordInHistory" in str(info.value)
        assert "History-One" not in str(info.value)
        assert slapd.can_bind(dn, "History-Two-123")

    def test_gateway_held_to_min_age_is_config_error(
        self,
        connector: LdapConnector,
        slapd: Slapd,  # noqa: F811
    ) -> None:
        """pwdMinAge refusing the service account is a setup problem (TargetConfigError),
        unless the password is already the current one (a redelivery)."""
        _, dn, _ = _user(slapd)
        _apply(connector, dn, DesiredState(version=1), "Young-Pass-1234")
        slapd.modify(slapd.policy_dn, {"pwdMinAge": ["3600"]})
        try:
            _apply(connector, dn, DesiredState(version=1), "Young-Pass-1234")  # redelivery
            with pytest.raises(TargetConfigError) as info:
                _apply(connector, dn, DesiredState(version=2), "Younger-Pass-1234")
        finally:
            slapd.modify(slapd.policy_dn, {"pwdMinAge": []})
        assert "passwordTooYoung" in str(info.value)
        assert slapd.can_bind(dn, "Young-Pass-1234")

    def test_userpassword_replace_when_no_exop(
        self,
        connector: LdapConnector,
        slapd: Slapd,  # noqa: F811
    ) -> None:
        """Without the Password Modify extension listed, the connector replaces userPassword."""
        _, dn, old = _user(slapd)
        connector._password_exop = False  # as if the root DSE did not list 1.3.6.1.4.1.4203.1.11.1
        _apply(connector, dn, DesiredState(version=1), "Replace-Pass-123")
        assert slapd.whoami(dn, "Replace-Pass-123").returncode == 0
        assert not slapd.can_bind(dn, old)
        assert slapd.operational(dn)["pwdReset"] == []

    # -- lock and unlock ---------------------------------------------------------------------

    def test_lock_refuses_bind_and_unlock_restores(
        self,
        connector: LdapConnector,
        slapd: Slapd,  # noqa: F811
    ) -> None:
        """Disable -> ldapwhoami refused (49); restore -> it works again."""
        _, dn, pw = _user(slapd)
        owned = _apply(connector, dn, DesiredState(version=1, disabled=True))
        assert owned == frozenset({"disabled"})
        assert slapd.operational(dn)["pwdAccountLockedTime"] == [LOCKED_FOREVER]
        assert slapd.whoami(dn, pw).returncode == 49
        back = _apply(connector, dn, DesiredState(version=2, owned=owned))
        assert back == frozenset()
        assert slapd.whoami(dn, pw).returncode == 0

    def test_admin_lock_survives_restore(self, connector: LdapConnector, slapd: Slapd) -> None:  # noqa: F811
        """An entry an admin locked is not claimed when the gateway disables, nor unlocked."""
        _, dn, pw = _user(slapd)
        slapd.admin_lock(dn)
        owned = _apply(connector, dn, DesiredState(version=1, disabled=True))
        assert "disabled" not in owned
        _apply(connector, dn, DesiredState(version=2, owned=owned))
        assert slapd.operational(dn)["pwdAccountLockedTime"] == [LOCKED_FOREVER]
        assert not slapd.can_bind(dn, pw)

    def test_password_change_keeps_an_admin_lock(
        self,
        connector: LdapConnector,
        slapd: Slapd,  # noqa: F811
    ) -> None:
        """ppolicy drops pwdAccountLockedTime on a password change; an admin's lock is put back."""
        _, dn, _ = _user(slapd)
        slapd.admin_lock(dn)
        owned = _apply(connector, dn, DesiredState(version=1), "While-Locked-123")
        assert owned == frozenset()
        assert slapd.operational(dn)["pwdAccountLockedTime"] == [LOCKED_FOREVER]
        assert not slapd.can_bind(dn, "While-Locked-123")

    def test_redelivered_disable_is_claimed(
        self,
        connector: LdapConnector,
        slapd: Slapd,  # noqa: F811
    ) -> None:
        """A disable whose owned set was lost is recognised as the gateway's (modifiersName)."""
        _, dn, pw = _user(slapd)
        _apply(connector, dn, DesiredState(version=1, disabled=True))
        again = _apply(connector, dn, DesiredState(version=1, disabled=True))
        assert again == frozenset({"disabled"})
        _apply(connector, dn, DesiredState(version=2, owned=again))
        assert slapd.can_bind(dn, pw)

    def test_failure_lockout_is_not_undone_by_restore(
        self,
        connector: LdapConnector,
        slapd: Slapd,  # noqa: F811
    ) -> None:
        """A lock the gateway owned but ppolicy since replaced (failed binds) stays."""
        _, dn, _ = _user(slapd)
        owned = _apply(connector, dn, DesiredState(version=1, disabled=True))
        slapd.modify(dn, {"pwdAccountLockedTime": ["20260101000000Z"]})
        assert _apply(connector, dn, DesiredState(version=2, owned=owned)) == frozenset()
        assert slapd.operational(dn)["pwdAccountLockedTime"] == ["20260101000000Z"]

    # -- linking -----------------------------------------------------------------------------

    def test_link_filter_is_escaped(self, slapd: Slapd, tmp_path: Path) -> None:  # noqa: F811
        """Filter metacharacters in an identity are matched literally, never as wildcards."""
        _user(slapd)
        conn = LdapConnector(
            "ldap-test", make_connector(slapd, tmp_path).config, {"filter": "(mail={email})"}
        )

        async def go() -> AccountRef | None:
            try:
                return await conn.find_account(Identity(username="x", email="*"))
            finally:
                await conn.aclose()

        assert run(go()) is None

    def test_empty_identity_field_links_nothing(self, slapd: Slapd, tmp_path: Path) -> None:  # noqa: F811
        """An account without an e-mail is not linked by a mail filter (no '(mail=)' search)."""
        conn = make_connector(slapd, tmp_path)

        async def go() -> AccountRef | None:
            try:
                return await conn.find_account(Identity(username="someone", email=""))
            finally:
                await conn.aclose()

        assert run(go()) is None

    def test_link_by_username_and_ambiguous(self, slapd: Slapd, tmp_path: Path) -> None:  # noqa: F811
        """{username} links by uid; two entries for one identity is a NotFoundError."""
        uid, dn, _ = _user(slapd)
        tag = uuid.uuid4().hex[:6]
        slapd.add_user(f"a{tag}", f"dup{tag}@example.org", "Dup-Pass-1234")
        slapd.add_user(f"b{tag}", f"dup{tag}@example.org", "Dup-Pass-1234")
        config = make_connector(slapd, tmp_path).config
        by_uid = LdapConnector(
            "ldap-test", config, {"filter": "(&(objectClass=person)(uid={username}))"}
        )
        by_mail = LdapConnector("ldap-test", config, {"filter": "(mail={email})"})

        async def go() -> AccountRef | None:
            try:
                found = await by_uid.find_account(Identity(username=uid, email="other@x"))
                assert found == AccountRef(dn)
                return await by_mail.find_account(
                    Identity(username="d", email=f"dup{tag}@example.org")
                )
            finally:
                await by_uid.aclose()
                await by_mail.aclose()

        with pytest.raises(NotFoundError):
            run(go())

    # -- errors, TLS, concurrency ------------------------------------------------------------

    def test_bad_bind_credentials_is_config_error(self, slapd: Slapd, tmp_path: Path) -> None:  # noqa: F811
        """A wrong service password pauses the resource (TargetConfigError)."""
        wrong = f"file:{_secret_file(tmp_path, 'not-the-password')}"
        conn = make_connector(slapd, tmp_path, bind_password=wrong)
        with pytest.raises(TargetConfigError):
            run(self._check(conn))

    def test_missing_secret_is_config_error(self, slapd: Slapd, tmp_path: Path) -> None:  # noqa: F811
        """An env reference that is not set is a TargetConfigError at use, not at load."""
        conn = make_connector(slapd, tmp_path, bind_password="env:GW_TEST_UNSET_LDAP_SECRET")
        with pytest.raises(TargetConfigError):
            run(self._check(conn))

    def test_server_down_is_transient_then_recovers(
        self,
        slapd: Slapd,  # noqa: F811
        tmp_path: Path,
    ) -> None:
        """Stopped slapd -> TransientError; started again -> the pooled connector recovers."""
        _, dn, _ = _user(slapd)
        conn = make_connector(slapd, tmp_path)

        async def go() -> None:
            try:
                await conn.apply(
                    AccountRef(dn), DesiredState(version=1), SecretStr("Down-Pass-1234")
                )
                slapd.stop()
                try:
                    with pytest.raises(TransientError):
                        await conn.apply(
                            AccountRef(dn), DesiredState(version=2), SecretStr("Down-Pass-5678")
                        )
                finally:
                    slapd.start()
                await conn.apply(
                    AccountRef(dn), DesiredState(version=2), SecretStr("Down-Pass-5678")
                )
            finally:
                await conn.aclose()

        run(go())
        assert slapd.can_bind(dn, "Down-Pass-5678")

    @pytest.mark.parametrize("mode", ["starttls", "ldaps"])
    def test_wrong_ca_is_refused(self, slapd: Slapd, tmp_path: Path, mode: str) -> None:  # noqa: F811
        """A server certificate from another CA fails verification: TargetConfigError."""
        other = make_tls_files(tmp_path / "other", prefix="other-")
        url = slapd.url if mode == "starttls" else slapd.ldaps_url
        conn = make_connector(slapd, tmp_path, url=url, tls=mode, ca_file=str(other.ca))
        with pytest.raises(TargetConfigError) as info:
            run(self._check(conn))
        assert "TLS" in str(info.value) or "Tls" in str(info.value)

    def test_ldaps_with_right_ca(self, slapd: Slapd, tmp_path: Path) -> None:  # noqa: F811
        """LDAPS with the server's CA works end to end."""
        _, dn, _ = _user(slapd)
        conn = make_connector(slapd, tmp_path, url=slapd.ldaps_url, tls="ldaps")
        run(self._check(make_connector(slapd, tmp_path, url=slapd.ldaps_url, tls="ldaps")))
        _apply(conn, dn, DesiredState(version=1), "Ldaps-Pass-1234")
        assert slapd.can_bind(dn, "Ldaps-Pass-1234")

    def test_cleartext_on_loopback(self, slapd: Slapd, tmp_path: Path) -> None:  # noqa: F811
        """tls = none is allowed for 127.0.0.1 and works."""
        _, dn, _ = _user(slapd)
        conn = make_connector(slapd, tmp_path, tls="none", ca_file=None)
        _apply(conn, dn, DesiredState(version=1), "Plain-Pass-1234")
        assert slapd.can_bind(dn, "Plain-Pass-1234")

    def test_concurrent_applies_share_the_pool(self, slapd: Slapd, tmp_path: Path) -> None:  # noqa: F811
        """Forty deliveries at once through a pool of four all land."""
        users = [_user(slapd) for _ in range(40)]
        conn = make_connector(slapd, tmp_path, pool_size=4)

        async def go() -> None:
            try:
                await asyncio.gather(
                    *(
                        conn.apply(
                            AccountRef(dn), DesiredState(version=1), SecretStr(f"Conc-{uid}-1")
                        )
                        for uid, dn, _ in users
                    )
                )
            finally:
                await conn.aclose()

        run(go())
        assert all(slapd.can_bind(dn, f"Conc-{uid}-1") for uid, dn, _ in users)

    @staticmethod
    async def _check(conn: LdapConnector) -> None:
        try:
            await conn.check()
        finally:
            await conn.aclose()


# -- configuration and pure planning (no server) ----------------------------------------------

BASE_CONFIG = {
    "url": "ldaps://ldap.example.org",
    "tls": "ldaps",
    "bind_dn": "cn=gw,dc=example,dc=org",
    "bind_password": "env:LDAP_PW",
    "base_dn": "dc=example,dc=org",
}


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"bind_password": "hunter2"}, "bind_password"),
        ({"url": "ldap://ldap.example.org", "tls": "none"}, "loopback"),
        ({"url": "ldap://127.0.0.1", "tls": "none", "flavour": "ad"}, "TLS"),
        ({"tls": "starttls"}, "ldap://"),
        ({"url": "http://x"}, "ldap"),
        ({"flavour": "novell"}, "flavour"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_config_refuses(changes: dict[str, Any], needle: str) -> None:
    """Inline secrets, cleartext off loopback, AD without TLS and unknown keys are refused."""
    with pytest.raises(ValidationError) as info:
        LdapConfig.model_validate({**BASE_CONFIG, **changes})
    assert needle in str(info.value)


def test_link_refuses_unknown_placeholder() -> None:
    """The link filter may only use the identity's fields."""
    with pytest.raises(ValidationError):
        LdapLink.model_validate({"filter": "(mail={password})"})
    with pytest.raises(ValidationError):
        LdapLink.model_validate({"filter": "mail={email}"})
    assert LdapLink.model_validate({"filter": "(uid={local})"}).filter == "(uid={local})"


def test_constructor_does_no_io() -> None:
    """A connector to an unreachable host is built without error (no connect until used)."""
    conn = LdapConnector("x", LdapConfig.model_validate(BASE_CONFIG))
    assert conn.resource == "x"
    run(conn.aclose())


def test_389ds_plan() -> None:
    """389-ds: nsAccountLock to disable, passwordExpirationTime for must-change."""
    ds, me = FLAVOURS["389ds"], "cn=gw,dc=example,dc=org"
    plan = ds.plan({"nsAccountLock": []}, DesiredState(version=1, disabled=True), False, me)
    assert plan.after == {"nsAccountLock": ["TRUE"]} and plan.owned == {"disabled"}
    locked = {"nsAccountLock": ["true"], "modifiersName": ["cn=admin,dc=example,dc=org"]}
    back = ds.plan(locked, DesiredState(version=2, owned=plan.owned), False, me)
    assert back.before == {"nsAccountLock": []} and back.owned == frozenset()
    assert ds.plan(locked, DesiredState(version=2), False, me).before == {}
    redelivered = {"nsAccountLock": ["TRUE"], "modifiersName": ["CN=gw, dc=example,dc=org"]}
    again = ds.plan(redelivered, DesiredState(version=1, disabled=True), False, me)
    assert again.owned == {"disabled"} and again.after == {}
    plan = ds.plan({}, DesiredState(version=1, temporary=True), True, me)
    assert plan.after == {"passwordExpirationTime": ["19700101000000Z"]}
    assert ds.plan({}, DesiredState(version=1), True, me).after == {}


def test_ppolicy_control_decoding() -> None:
    """The ppolicy response control's error field is read from its BER bytes."""
    assert ppolicy_error(b"0\x03\x81\x01\x08") == 8
    assert ppolicy_error(b"0\x08\xa0\x03\x80\x01\x05\x81\x01\x01") == 1
    assert ppolicy_error(b"0\x00") is None
    assert ppolicy_error(None) is None


@pytest.fixture(autouse=True)
def _no_leaked_env() -> Iterator[None]:
    os.environ.pop("GW_TEST_UNSET_LDAP_SECRET", None)
    yield
