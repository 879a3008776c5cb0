"""Microsoft 365 (Entra ID) connector: passwords, suspension and must-change through Graph v1.0.

- password: ``PATCH /users/{id}`` with ``passwordProfile {password, forceChangePasswordNextSignIn}``
  (the flag always explicit: Graph turns it on when it is left out);
- lock / expiry → ``accountEnabled=false`` only if the account is enabled now (then the gateway
  owns the suspension); unlock restores only an owned suspension; optional
  ``POST /users/{id}/revokeSignInSessions`` when suspending;
- must-change: sent with every password (a temporary one sets it); Graph cannot demand a new
  password without setting one (a ``passwordProfile`` without a password changes nothing), so
  ``expired = "force_change"`` is refused when the policy file loads: use ``suspend`` here;
- state changes go through JSON ``$batch`` (at most 20 calls per request).

Application permissions (admin consent): ``User.Read.All`` (lookups),
``User-PasswordProfile.ReadWrite.All`` (passwords), ``User.EnableDisableAccount.All``
(suspend/restore), ``User.RevokeSessions.All`` (only with ``revoke_sessions``);
``User.ReadWrite.All`` covers the first three. Resetting passwords app-only also needs a
directory role on the app (User Administrator; Privileged Authentication Administrator for
accounts that hold admin roles).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from connectors.base import AccountRef, DesiredState, Identity, PasswordLimit
from connectors.http_common import (
    ENABLED_HINT,
    FORCE_CHANGE,
    BatchedConnector,
    check_secret_ref,
    https_url,
)
from connectors.m365_graph import (
    BATCH_LIMIT,
    TARGET,
    GraphCall,
    GraphClient,
    find_url,
    user_url,
)
from gateway.errors import ConnectorError, RejectedError

__all__ = ["M365Config", "M365Connector"]

log = logging.getLogger("connectors.m365")
T = TypeVar("T")


class M365Config(BaseModel):
    """Connection settings of one Microsoft 365 tenant (secrets by ``file:``/``env:`` reference)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: str | None = None
    client_certificate: str | None = None
    authority_host: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com/v1.0"
    scope: str = "https://graph.microsoft.com/.default"
    ca_bundle: str | None = None
    timeout_s: float = Field(default=30.0, gt=0, le=300)
    max_calls_per_second: float | None = Field(default=None, gt=0)
    match: tuple[Literal["userPrincipalName", "mail"], ...] = ("userPrincipalName", "mail")
    revoke_sessions: bool = False
    batch_size: int = Field(default=BATCH_LIMIT, ge=1, le=BATCH_LIMIT)

    @field_validator("client_secret", "client_certificate")
    @classmethod
    def _resolves(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else check_secret_ref(value, info)

    @field_validator("authority_host", "graph_url")
    @classmethod
    def _https(cls, value: str) -> str:
        return https_url(value)

    @model_validator(mode="after")
    def _one_credential(self) -> M365Config:
        if (self.client_secret is None) == (self.client_certificate is None):
            raise ValueError("give exactly one of client_secret or client_certificate")
        if not self.match:
            raise ValueError("match needs at least one attribute")
        return self


class M365Connector(BatchedConnector[GraphCall]):
    """Brings Entra ID accounts to the gateway's desired state."""

    name: ClassVar[str] = "m365"
    Config: ClassVar[type[BaseModel]] = M365Config
    password_limits: ClassVar[tuple[PasswordLimit, ...]] = (
        PasswordLimit(target=TARGET, min_length=8, max_length=256, ascii_only=True, min_classes=3),
    )
    allowed_actions: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "password_change": ("set", "maintain"),
        "expired": ("suspend", "maintain"),  # see the module docstring on force_change
        "locked": ("suspend", "maintain"),
        "unlocked": ("restore", "maintain"),
    }

    def __init__(self, resource_name: str, config: BaseModel) -> None:
        if not isinstance(config, M365Config):
            raise TypeError("M365Connector needs an M365Config")
        self.config = config
        self.client = GraphClient(resource_name, config)
        self._start(
            "m365", resource_name, self.client, config.batch_size, config.max_calls_per_second
        )

    async def find_account(self, who: Identity) -> AccountRef | None:
        """Find the user whose UPN or mail (per ``match``) equals the gateway account's e-mail."""
        result = await self._worker.submit(GraphCall("GET", find_url(who.email, self.config.match)))
        found = result.get("value", []) if isinstance(result, dict) else []
        if not found:
            return None
        if len(found) > 1:
            raise ConnectorError(
                f"{TARGET} has {len(found)} accounts for this e-mail",
                resource=self.resource,
                account=who.username,
            )
        user = found[0]
        upn = str(user.get("userPrincipalName") or "")
        enabled = "true" if user.get("accountEnabled") else "false"
        return AccountRef(
            key=str(user["id"]), extra={"userPrincipalName": upn, ENABLED_HINT: enabled}
        )

    async def _enabled(self, account: AccountRef) -> bool:
        user = await self._worker.submit(
            GraphCall("GET", user_url(account.key, "?$select=id,accountEnabled"))
        )
        return bool(isinstance(user, dict) and user.get("accountEnabled", False))

    async def apply(
        self, account: AccountRef, desired: DesiredState, password: SecretStr | None
    ) -> frozenset[str]:
        """Bring one user to ``desired``; returns what the gateway now owns at this user."""
        owned = set(desired.owned)
        body: dict[str, Any] = {}
        secrets: tuple[str, ...] = ()
        if password is not None:
            force = desired.temporary or desired.force_change
            value = password.get_secret_value()
            body["passwordProfile"] = {"password": value, "forceChangePasswordNextSignIn": force}
            secrets = (value,)
            owned.discard(FORCE_CHANGE)
            if force:
                owned.add(FORCE_CHANGE)
        elif desired.force_change and FORCE_CHANGE not in owned:
            raise RejectedError(
                f"{TARGET} cannot demand a new password at next sign-in without setting one; "
                "set a temporary password or map expiry to suspend",
                resource=self.resource,
                account=account.key,
            )
        elif not desired.force_change:
            owned.discard(FORCE_CHANGE)

        async def enabled() -> bool:
            return await self._enabled(account)

        change = await self._suspensions.plan(account, desired.disabled, owned, enabled)
        if change is not None:
            body["accountEnabled"] = not change
        calls = []
        if body:
            calls.append(GraphCall("PATCH", user_url(account.key), body, secrets))
        revoke = change is True and (desired.revoke_sessions or self.config.revoke_sessions)
        if revoke:
            calls.append(GraphCall("POST", user_url(account.key, "/revokeSignInSessions")))
        results = await asyncio.gather(
            *(self._worker.submit(c) for c in calls), return_exceptions=True
        )
        if results and isinstance(results[0], BaseException):
            raise results[0]
        if revoke and isinstance(results[-1], BaseException):
            log.warning(
                "revokeSignInSessions failed: %s",
                type(results[-1]).__name__,
                extra={"resource": self.resource, "account": account.key},
            )
        return frozenset(owned)

    async def check(self) -> None:
        """Prove the credentials and permissions with one token request and one read."""
        await self._worker.call(self.client.ping)
