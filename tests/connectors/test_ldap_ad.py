"""The ldap connector's Active Directory flavour against a real Samba AD DC (started here).

Samba 4.17 answers like Windows for everything used here (unicodePwd resets over TLS,
userAccountControl, pwdLastSet, lockoutTime, bind sub-codes 52e/533/773/775). It does not check
password history on administrative resets (neither does Windows without the policy-hints
control), so the "refused as in history" path is checked on the flavour's decisions with the
refusal and bind messages recorded from this DC.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from connectors.base import AccountRef, Connector, DesiredState, Identity
from connectors.ldap import LdapConnector
from connectors.ldap_config import LdapConfig
from connectors.ldap_flavours import FLAVOURS
from connectors.testing import ConnectorContract, ContractTarget, run
from gateway.errors import TargetConfigError
from tests.support.samba import SambaDC, samba_dc  # noqa: F401
from tests.support.tlsca import make_tls_files

AD = FLAVOURS["ad"]
# Recorded from Samba 4.17 (same format as Windows): refusal of a reset, and bind results.
RECORDED_TOO_SHORT = {
    "result": 19,
    "description": "constraintViolation",
    "message": "0000052D: Constraint violation - check_password_restrictions: the password is "
    "too short. It should be equal or longer than 7 characters!",
}
_BIND = "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data {}, v1db1"
RECORDED_BIND = {code: _BIND.format(code) for code in ("52e", "773", "533", "775")}


def _secret(directory: Path, value: str) -> str:
    path = directory / f"ad-{uuid.uuid4().hex[:6]}.secret"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return f"file:{path}"


def make_ad_connector(dc: SambaDC, tmp: Path, **overrides: Any) -> LdapConnector:
    """A connector with flavour ad over LDAPS, verifying the DC's throwaway CA."""
    assert dc.tls is not None
    settings: dict[str, Any] = {
        "url": dc.ldaps_url,
        "tls": "ldaps",
        "flavour": "ad",
        "ca_file": str(dc.tls.ca),
        "bind_dn": dc.admin_dn,
        "bind_password": _secret(tmp, dc.admin_password),
        "base_dn": dc.base_dn,
    }
    settings.update(overrides)
    return LdapConnector(
        "ad-test", LdapConfig.model_validate(settings), {"filter": "(mail={email})"}
    )


class DcTarget:
    """The contract's view of the DC."""

    def __init__(self, dc: SambaDC) -> None:
        self.dc = dc

    def create(self, username: str, email: str, password: str) -> None:
        """An enabled user."""
        self.dc.add_user(username, email, password)

    def can_sign_in(self, username: str, password: str) -> bool:
        """A real simple bind over LDAPS."""
        return self.dc.bind(self.dc.user_dn(username), password)[0]

    def is_disabled(self, username: str) -> bool:
        """Bit 0x2 of userAccountControl."""
        uac = self.dc.read(self.dc.user_dn(username), "userAccountControl")["userAccountControl"]
        return bool(int(uac[0]) & 2)

    def disable_by_hand(self, username: str) -> None:
        """Disable as a domain admin would."""
        self.dc.modify(self.dc.user_dn(username), {"userAccountControl": ["514"]})


def _user(dc: SambaDC) -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:8]
    name = f"ad{tag}"
    password = f"Start-{tag}-Pw1!"
    return name, dc.add_user(name, f"{name}@example.test", password), password


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


def _code(message: str) -> str:
    return message.split("data ")[1].split(",")[0] if "data " in message else ""


class TestActiveDirectory(ConnectorContract):
    """The shared contract plus AD specifics, against Samba's AD DC."""

    @pytest.fixture
    def connector(self, samba_dc: SambaDC, tmp_path: Path) -> LdapConnector:  # noqa: F811
        """A fresh AD connector per test."""
        return make_ad_connector(samba_dc, tmp_path)

    @pytest.fixture
    def target(self, samba_dc: SambaDC) -> DcTarget:  # noqa: F811
        """Observe and prepare the DC."""
        return DcTarget(samba_dc)

    def _ghost_key(self, connector: Any) -> str:
        return f"CN=ghost{uuid.uuid4().hex[:8]},CN=Users,DC=example,DC=test"

    def test_disable_then_restore(self, connector: Connector, target: ContractTarget) -> None:
        """As the contract's, but the repeat carries ``owned``: AD records no modifier, so a
        disable found without ``owned`` is never claimed (it may be an admin's)."""
        user, mail, old, _ = self._who()
        target.create(user, mail, old)

        async def go() -> None:
            try:
                ref = await self._link(connector, user, mail)
                owned = await connector.apply(ref, DesiredState(version=1, disabled=True), None)
                assert owned == {"disabled"} and target.is_disabled(user)
                again = await connector.apply(
                    ref, DesiredState(version=2, disabled=True, owned=owned), None
                )
                assert again == {"disabled"}
                lost = await connector.apply(ref, DesiredState(version=2, disabled=True), None)
                assert lost == frozenset()
                assert await connector.apply(ref, DesiredState(version=3, owned=again), None) == (
                    frozenset()
                )
            finally:
                await connector.aclose()

        run(go())
        assert not target.is_disabled(user)
        assert target.can_sign_in(user, old)

    def test_password_and_bind_codes(self, connector: LdapConnector, samba_dc: SambaDC) -> None:  # noqa: F811
        """unicodePwd reset: new password binds, old gets 52e; userAccountControl kept."""
        _, dn, old = _user(samba_dc)
        assert _apply(connector, dn, DesiredState(version=1), "Fresh-Passw0rd-AD!") == frozenset()
        assert samba_dc.bind(dn, "Fresh-Passw0rd-AD!")[0]
        ok, message = samba_dc.bind(dn, old)
        assert not ok and _code(message) == "52e"
        assert samba_dc.read(dn, "userAccountControl")["userAccountControl"] == ["512"]

    def test_temporary_password_must_change(
        self,
        connector: LdapConnector,
        samba_dc: SambaDC,  # noqa: F811
    ) -> None:
        """A temporary password sets pwdLastSet=0 (bind: 773); a normal one clears it."""
        _, dn, _ = _user(samba_dc)
        owned = _apply(connector, dn, DesiredState(version=1, temporary=True), "Temp-Passw0rd-AD!")
        assert owned == {"force_change"}
        assert samba_dc.read(dn, "pwdLastSet")["pwdLastSet"] == ["0"]
        assert _code(samba_dc.bind(dn, "Temp-Passw0rd-AD!")[1]) == "773"
        after = _apply(connector, dn, DesiredState(version=2, owned=owned), "Real-Passw0rd-AD!")
        assert after == frozenset()
        assert samba_dc.read(dn, "pwdLastSet")["pwdLastSet"] != ["0"]
        assert samba_dc.bind(dn, "Real-Passw0rd-AD!")[0]

    def test_expiry_force_change_and_clear(
        self,
        connector: LdapConnector,
        samba_dc: SambaDC,  # noqa: F811
    ) -> None:
        """expired = force_change without a password: pwdLastSet 0, later -1 (now)."""
        _, dn, pw = _user(samba_dc)
        owned = _apply(connector, dn, DesiredState(version=1, force_change=True))
        assert _code(samba_dc.bind(dn, pw)[1]) == "773"
        assert _apply(connector, dn, DesiredState(version=2, owned=owned)) == frozenset()
        assert samba_dc.read(dn, "pwdLastSet")["pwdLastSet"] != ["0"]
        assert samba_dc.bind(dn, pw)[0]

    def test_disable_gives_533_and_hand_disable_is_kept(
        self,
        connector: LdapConnector,
        samba_dc: SambaDC,  # noqa: F811
    ) -> None:
        """Gateway disable: 533 with the right password. An admin's disable is not claimed."""
        _, dn, pw = _user(samba_dc)
        _apply(connector, dn, DesiredState(version=1, disabled=True))
        assert _code(samba_dc.bind(dn, pw)[1]) == "533"
        _, other, pw2 = _user(samba_dc)
        samba_dc.modify(other, {"userAccountControl": ["514"]})
        owned = _apply(connector, other, DesiredState(version=1, disabled=True))
        assert owned == frozenset()
        _apply(connector, other, DesiredState(version=2, owned=owned))
        assert _code(samba_dc.bind(other, pw2)[1]) == "533"

    def test_reset_clears_target_lockout(
        self,
        connector: LdapConnector,
        samba_dc: SambaDC,  # noqa: F811
    ) -> None:
        """Five bad binds lock the account at the DC (775); a new password sets lockoutTime=0."""
        _, dn, _ = _user(samba_dc)
        for _ in range(5):
            samba_dc.bind(dn, "Wrong-Passw0rd-1!")
        assert _code(samba_dc.bind(dn, "Wrong-Passw0rd-1!")[1]) == "775"
        _apply(connector, dn, DesiredState(version=1), "Unlocked-Passw0rd-1!")
        assert samba_dc.read(dn, "lockoutTime")["lockoutTime"] in (["0"], [])
        assert samba_dc.bind(dn, "Unlocked-Passw0rd-1!")[0]

    def test_find_by_account_name_over_starttls(
        self,
        samba_dc: SambaDC,  # noqa: F811
        tmp_path: Path,
    ) -> None:
        """StartTLS on 389 works too; {username} links by sAMAccountName."""
        name, dn, _ = _user(samba_dc)
        conn = make_ad_connector(samba_dc, tmp_path, url=samba_dc.url, tls="starttls")
        by_name = LdapConnector("ad-test", conn.config, {"filter": "(sAMAccountName={username})"})

        async def go() -> AccountRef | None:
            try:
                return await by_name.find_account(Identity(username=name, email="x@y"))
            finally:
                await by_name.aclose()

        found = run(go())
        assert found is not None and found.key.lower() == dn.lower()
        _apply(conn, dn, DesiredState(version=1), "StartTls-Passw0rd-1!")
        assert samba_dc.bind(dn, "StartTls-Passw0rd-1!")[0]

    def test_wrong_ca_is_refused(self, samba_dc: SambaDC, tmp_path: Path) -> None:  # noqa: F811
        """The DC's certificate does not verify against another CA: TargetConfigError."""
        other = make_tls_files(tmp_path / "other", prefix="x-")
        conn = make_ad_connector(samba_dc, tmp_path, ca_file=str(other.ca))

        async def go() -> None:
            try:
                await conn.check()
            finally:
                await conn.aclose()

        with pytest.raises(TargetConfigError):
            run(go())


def test_ad_refusal_and_bind_decisions() -> None:
    """Recorded DC answers: 0000052D is a password-rule refusal; 773/533 prove the password."""
    assert AD.history_refusal(RECORDED_TOO_SHORT)
    assert not AD.history_refusal({"message": "00002077: SvcErr: DSID-031903A4, problem 5003"})
    assert not AD.same_as_current(RECORDED_TOO_SHORT)
    assert AD.bind_proves_password(False, {"message": RECORDED_BIND["773"]})
    assert AD.bind_proves_password(False, {"message": RECORDED_BIND["533"]})
    assert not AD.bind_proves_password(False, {"message": RECORDED_BIND["52e"]})
    assert not AD.bind_proves_password(False, {"message": RECORDED_BIND["775"]})
    assert AD.bind_proves_password(True, {})


def test_ad_plan_keeps_other_flags() -> None:
    """Disabling sets only bit 0x2 (other userAccountControl flags stay); restore clears it."""
    me = "CN=gw,CN=Users,DC=example,DC=test"
    entry = {"userAccountControl": ["66048"]}  # NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD
    plan = AD.plan(entry, DesiredState(version=1, disabled=True), False, me)
    assert plan.after == {"userAccountControl": ["66050"]}
    back = AD.plan(
        {"userAccountControl": ["66050"]}, DesiredState(version=2, owned=plan.owned), False, me
    )
    assert back.before == {"userAccountControl": ["66048"], "lockoutTime": ["0"]}
