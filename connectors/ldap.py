"""The ``ldap`` connector: OpenLDAP (ppolicy), 389-ds and Active Directory through ldap3.

One connector instance per resource. It links accounts with the ``[link]`` filter, and brings an
entry to a ``DesiredState``: new password (RFC 3062 Password Modify when the server lists it,
otherwise a ``userPassword`` replace; ``unicodePwd`` on AD, only over TLS), disable / restore and
must-change as ``connectors.ldap_flavours`` describes. Every operation is idempotent: a password
refused as "in history" (or by ppolicy as too young) counts as delivered when a bind with it
succeeds. Library errors are translated once, here, with ``connectors.base.translate``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ldap3 import BASE, LEVEL, MODIFY_REPLACE, SUBTREE, Connection
from ldap3.core.exceptions import (
    LDAPAdminLimitExceededResult,
    LDAPBusyResult,
    LDAPCommunicationError,
    LDAPConfidentialityRequiredResult,
    LDAPConstraintViolationResult,
    LDAPInappropriateAuthenticationResult,
    LDAPInsufficientAccessRightsResult,
    LDAPInvalidAttributeSyntaxResult,
    LDAPInvalidCredentialsResult,
    LDAPInvalidDnError,
    LDAPInvalidDNSyntaxResult,
    LDAPInvalidFilterError,
    LDAPNoSuchObjectResult,
    LDAPObjectClassViolationResult,
    LDAPOperationResult,
    LDAPResponseTimeoutError,
    LDAPSizeLimitExceededResult,
    LDAPSSLConfigurationError,
    LDAPStartTLSError,
    LDAPStrongerAuthRequiredResult,
    LDAPTimeLimitExceededResult,
    LDAPUnavailableResult,
    LDAPUnwillingToPerformResult,
)
from ldap3.utils.conv import escape_filter_chars
from pydantic import BaseModel, SecretStr

from connectors.base import AccountRef, DesiredState, Identity, PasswordLimit, translate
from connectors.ldap_config import LdapConfig, LdapLink
from connectors.ldap_flavours import FLAVOURS, PASSWD_MODIFY_OID, PPOLICY_OID, ppolicy_error
from connectors.ldap_pool import LdapPool, TlsVerifyError, discard
from gateway.errors import (
    ConfigError,
    ConnectorError,
    NotFoundError,
    RejectedError,
    TargetConfigError,
    TransientError,
)

__all__ = ["LdapConfig", "LdapConnector", "LdapLink"]

# Most specific first: translate() takes the first class that matches.
ERRORS: Mapping[type[BaseException], type[ConnectorError]] = {
    TlsVerifyError: TargetConfigError,
    LDAPSSLConfigurationError: TargetConfigError,
    ConfigError: TargetConfigError,
    LDAPInvalidCredentialsResult: TargetConfigError,
    LDAPInsufficientAccessRightsResult: TargetConfigError,
    LDAPStrongerAuthRequiredResult: TargetConfigError,
    LDAPConfidentialityRequiredResult: TargetConfigError,
    LDAPInappropriateAuthenticationResult: TargetConfigError,
    LDAPNoSuchObjectResult: NotFoundError,
    LDAPConstraintViolationResult: RejectedError,
    LDAPUnwillingToPerformResult: RejectedError,
    LDAPObjectClassViolationResult: RejectedError,
    LDAPInvalidAttributeSyntaxResult: RejectedError,
    LDAPInvalidDNSyntaxResult: NotFoundError,
    LDAPInvalidDnError: NotFoundError,
    LDAPInvalidFilterError: TargetConfigError,
    LDAPBusyResult: TransientError,
    LDAPUnavailableResult: TransientError,
    LDAPTimeLimitExceededResult: TransientError,
    LDAPAdminLimitExceededResult: TransientError,
    LDAPResponseTimeoutError: TransientError,
    LDAPStartTLSError: TransientError,
    LDAPCommunicationError: TransientError,
}

PPOLICY_ERRORS = {
    0: "passwordExpired",
    1: "accountLocked",
    2: "changeAfterReset",
    3: "passwordModNotAllowed",
    4: "mustSupplyOldPassword",
    5: "insufficientPasswordQuality",
    6: "passwordTooShort",
    7: "passwordTooYoung",
    8: "passwordInHistory",
    9: "passwordTooLong",
}
_PPOLICY_CONTROL = [(PPOLICY_OID, False, None)]
_NO_ATTRIBUTES = ["1.1"]


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _refusal(flavour: str, result: Mapping[str, Any]) -> str:
    """A safe reason for a refused password: the result name and a structured code only."""
    reason = f"password refused by the directory ({result.get('description', 'refused')}"
    controls = result.get("controls") or {}
    code = ppolicy_error((controls.get(PPOLICY_OID) or {}).get("value"))
    if code is not None:
        reason += f", {PPOLICY_ERRORS.get(code, code)}"
    message = str(result.get("message", ""))
    if flavour == "ad" and message[:8].isalnum():
        reason += f", {message[:8]}"
    return reason + ")"


class LdapConnector:
    """Brings LDAP / AD entries to the gateway's desired state."""

    name: ClassVar[str] = "ldap"
    Config: ClassVar[type[BaseModel]] = LdapConfig
    Link: ClassVar[type[LdapLink]] = LdapLink
    allowed_actions: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "password_change": ("set", "maintain"),
        "expired": ("disable", "maintain", "force_change"),
        "locked": ("disable", "maintain"),
        "unlocked": ("restore", "maintain"),
    }
    # unicodePwd takes at most 256 characters; OpenLDAP has no limit of its own.
    password_limits: ClassVar[tuple[PasswordLimit, ...]] = (
        PasswordLimit(target="LDAP directory", max_length=256),
    )

    def __init__(
        self, resource: str, config: LdapConfig, link: Mapping[str, str] | None = None
    ) -> None:
        self.resource = resource
        self.config = config
        self.link = LdapLink.model_validate(dict(link or {}))
        self._flavour = FLAVOURS[config.flavour]
        self._pool = LdapPool(config, resource)
        self._password_exop: bool | None = None

    @classmethod
    def limits_for(cls, config: LdapConfig, resource: str) -> tuple[PasswordLimit, ...]:
        """The limits of one resource: AD adds its complexity rule (3 of 4 classes)."""
        if config.flavour == "ad":
            return (
                PasswordLimit(
                    target=resource, max_length=256, min_classes=3 if config.ad_complexity else 0
                ),
            )
        return (PasswordLimit(target=resource, max_length=256),)

    # -- operations ------------------------------------------------------------------------

    async def find_account(self, who: Identity) -> AccountRef | None:
        """Search with the link filter; None when nothing matches, NotFoundError if ambiguous."""
        local, _, domain = who.email.partition("@")
        values = {"email": who.email, "username": who.username, "local": local, "domain": domain}
        if not all(values[f] for f in self.link.fields):
            return None  # an empty value would make a filter that matches nothing or anything
        search_filter = self.link.filter.format(
            **{k: escape_filter_chars(v) for k, v in values.items()}
        )
        base = self.link.base or self.config.base_dn
        scope = SUBTREE if self.link.scope == "subtree" else LEVEL

        def search(conn: Connection) -> list[str]:
            try:
                conn.search(base, search_filter, scope, attributes=_NO_ATTRIBUTES, size_limit=2)
            except LDAPSizeLimitExceededResult:
                return ["", ""]
            except LDAPNoSuchObjectResult as exc:
                raise TargetConfigError(
                    "link search base does not exist", resource=self.resource
                ) from exc
            return [r["dn"] for r in conn.response or () if r.get("type") == "searchResEntry"]

        with translate(ERRORS, resource=self.resource, account=who.username):
            found = await self._pool.run(search)
        if len(found) > 1:
            raise NotFoundError(
                "the link filter matches more than one entry",
                resource=self.resource,
                account=who.username,
            )
        return AccountRef(key=found[0]) if found else None

    async def apply(
        self, account: AccountRef, desired: DesiredState, password: SecretStr | None
    ) -> frozenset[str]:
        """Bring the entry ``account.key`` (a DN) to ``desired``; return the new owned set."""
        dn = account.key
        with translate(ERRORS, resource=self.resource, account=dn):
            return await self._pool.run(lambda conn: self._apply(conn, dn, desired, password))

    async def check(self) -> None:
        """Connect, bind and read the base entry (and the server's extensions)."""

        def probe(conn: Connection) -> None:
            conn.search(self.config.base_dn, "(objectClass=*)", BASE, attributes=_NO_ATTRIBUTES)
            self._supports_exop(conn)

        with translate(ERRORS, resource=self.resource):
            await self._pool.run(probe)

    async def aclose(self) -> None:
        """Release the connections and threads."""
        self._pool.close()

    # -- the blocking part, run in a worker thread ------------------------------------------

    def _apply(
        self, conn: Connection, dn: str, desired: DesiredState, password: SecretStr | None
    ) -> frozenset[str]:
        flavour = self._flavour
        current = self._read(conn, dn, flavour.read_attrs)
        plan = flavour.plan(current, desired, password is not None, self.config.bind_dn)
        if plan.before:
            self._modify(conn, dn, plan.before)
        if password is not None:
            self._set_password(conn, dn, password.get_secret_value())
        if plan.after:
            self._modify(conn, dn, plan.after)
        return plan.owned

    def _read(self, conn: Connection, dn: str, attrs: Sequence[str]) -> dict[str, list[str]]:
        conn.search(dn, "(objectClass=*)", BASE, attributes=list(attrs))
        entries = [r for r in conn.response or () if r.get("type") == "searchResEntry"]
        if not entries:
            raise NotFoundError("entry not found", resource=self.resource, account=dn)
        raw = {k.lower(): v for k, v in entries[0]["raw_attributes"].items()}
        return {a: [_text(v) for v in raw.get(a.lower(), [])] for a in attrs}

    def _modify(self, conn: Connection, dn: str, changes: Mapping[str, list[Any]]) -> None:
        conn.modify(dn, {attr: [(MODIFY_REPLACE, values)] for attr, values in changes.items()})

    def _supports_exop(self, conn: Connection) -> bool:
        if self.config.flavour == "ad":
            return False
        if self._password_exop is None:
            conn.search("", "(objectClass=*)", BASE, attributes=["supportedExtension"])
            entries = [r for r in conn.response or () if r.get("type") == "searchResEntry"]
            raw = entries[0]["raw_attributes"] if entries else {}
            listed = {
                _text(v) for k, vs in raw.items() if k.lower() == "supportedextension" for v in vs
            }
            self._password_exop = PASSWD_MODIFY_OID in listed
        return self._password_exop

    def _set_password(self, conn: Connection, dn: str, password: str) -> None:
        try:
            if self.config.flavour == "ad":
                if not (conn.server.ssl or conn.tls_started):
                    raise TargetConfigError(
                        "Active Directory passwords are sent only over TLS",
                        resource=self.resource,
                        account=dn,
                    )
                conn.extend.microsoft.modify_password(dn, password)
            elif self._supports_exop(conn):
                conn.extend.standard.modify_password(
                    user=dn, new_password=password, controls=_PPOLICY_CONTROL
                )
            else:
                conn.modify(
                    dn,
                    {"userPassword": [(MODIFY_REPLACE, [password])]},
                    controls=_PPOLICY_CONTROL,
                )
        except (LDAPConstraintViolationResult, LDAPUnwillingToPerformResult) as exc:
            result = dict(conn.result or {})
            flavour = self._flavour
            settings_problem = flavour.binds_gateway(result)
            if (flavour.history_refusal(result) or settings_problem) and self._already_current(
                dn, password, result
            ):
                return
            if settings_problem:
                raise TargetConfigError(
                    _refusal(self.config.flavour, result)
                    + ": the bind DN is held to the user password policy; give it password"
                    " administrator (manage) rights",
                    resource=self.resource,
                    account=dn,
                ) from exc
            raise RejectedError(
                _refusal(self.config.flavour, result), resource=self.resource, account=dn
            ) from exc

    def _already_current(self, dn: str, password: str, refusal: Mapping[str, Any]) -> bool:
        """Verify with a bind that the refused password is the entry's current one."""
        conn = self._pool.connect(dn, password, bind=False)
        try:
            try:
                ok = bool(conn.bind())
            except LDAPOperationResult:
                ok = False
            result = dict(conn.result or {})
        finally:
            discard(conn)
        if self._flavour.bind_proves_password(ok, result):
            return True
        # OpenLDAP compares with the stored value itself; a lock makes the bind fail regardless.
        return self._flavour.same_as_current(refusal)
