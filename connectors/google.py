"""Google Workspace connector: passwords, suspension and must-change through the Directory API.

- password: ``users.update`` with ``password`` and ``changePasswordAtNextLogin`` (always explicit);
- lock / expiry → ``suspended=true`` only if the user is active now (the gateway then owns the
  suspension); unlock restores only an owned suspension, so a hand-suspended user stays suspended;
- expiry → must-change: ``changePasswordAtNextLogin=true``, cleared again when the expiry ends;
- every call goes through a batch request (explicit ``batch_uri``).

``users.update`` has patch semantics and costs less quota than ``users.patch`` (Google's advice).
Needs a service account with domain-wide delegation for exactly the scope
``https://www.googleapis.com/auth/admin.directory.user``, impersonating an admin allowed to manage
the users (``admin_subject``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from connectors.base import AccountRef, DesiredState, Identity, PasswordLimit
from connectors.google_directory import BATCH_LIMIT, TARGET, DirectoryCall, DirectoryClient
from connectors.http_common import (
    ENABLED_HINT,
    FORCE_CHANGE,
    BatchedConnector,
    check_secret_ref,
    https_url,
)
from gateway.errors import NotFoundError

__all__ = ["GoogleConfig", "GoogleConnector"]


class GoogleConfig(BaseModel):
    """Connection settings of one Google Workspace domain (key by ``file:``/``env:`` reference)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service_account_key: str
    admin_subject: str = Field(min_length=3, pattern=r".+@.+")
    api_endpoint: str = "https://admin.googleapis.com/"
    token_uri: str = "https://oauth2.googleapis.com/token"
    batch_uri: str = "https://admin.googleapis.com/batch"
    ca_bundle: str | None = None
    timeout_s: float = Field(default=30.0, gt=0, le=300)
    max_calls_per_second: float | None = Field(default=None, gt=0)
    batch_size: int = Field(default=100, ge=1, le=BATCH_LIMIT)

    @field_validator("service_account_key")
    @classmethod
    def _resolves(cls, value: str, info: ValidationInfo) -> str:
        return check_secret_ref(value, info)

    @field_validator("api_endpoint", "token_uri", "batch_uri")
    @classmethod
    def _https(cls, value: str) -> str:
        return https_url(value)


class GoogleConnector(BatchedConnector[DirectoryCall]):
    """Brings Google Workspace users to the gateway's desired state."""

    name: ClassVar[str] = "google"
    Config: ClassVar[type[BaseModel]] = GoogleConfig
    password_limits: ClassVar[tuple[PasswordLimit, ...]] = (
        PasswordLimit(target=TARGET, min_length=8, max_length=100, ascii_only=True),
    )
    allowed_actions: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "password_change": ("set", "maintain"),
        "expired": ("suspend", "maintain", "force_change"),
        "locked": ("suspend", "maintain"),
        "unlocked": ("restore", "maintain"),
    }

    def __init__(self, resource_name: str, config: BaseModel) -> None:
        if not isinstance(config, GoogleConfig):
            raise TypeError("GoogleConnector needs a GoogleConfig")
        self.config = config
        self.client = DirectoryClient(resource_name, config)
        self._start(
            "google", resource_name, self.client, config.batch_size, config.max_calls_per_second
        )

    async def find_account(self, who: Identity) -> AccountRef | None:
        """Find the user whose primary e-mail is the gateway account's e-mail (not an alias)."""
        try:
            user = await self._worker.submit(DirectoryCall("get", who.email))
        except NotFoundError:
            return None
        if not user or str(user.get("primaryEmail", "")).lower() != who.email.lower():
            return None
        enabled = "false" if user.get("suspended") else "true"
        extra = {"primaryEmail": str(user["primaryEmail"]), ENABLED_HINT: enabled}
        return AccountRef(key=str(user["id"]), extra=extra)

    async def _active(self, account: AccountRef) -> bool:
        user = await self._worker.submit(DirectoryCall("get", account.key))
        return bool(isinstance(user, dict) and not user.get("suspended", False))

    async def apply(
        self, account: AccountRef, desired: DesiredState, password: SecretStr | None
    ) -> frozenset[str]:
        """Bring one user to ``desired``; returns what the gateway now owns at this user."""
        owned = set(desired.owned)
        body: dict[str, Any] = {}
        secrets: tuple[str, ...] = ()
        force = desired.temporary or desired.force_change
        if password is not None:
            value = password.get_secret_value()
            body["password"] = value
            body["changePasswordAtNextLogin"] = force
            secrets = (value,)
        elif force and FORCE_CHANGE not in owned:
            body["changePasswordAtNextLogin"] = True
        elif not force and FORCE_CHANGE in owned:
            body["changePasswordAtNextLogin"] = False
        if "changePasswordAtNextLogin" in body:
            owned.discard(FORCE_CHANGE)
            if force:
                owned.add(FORCE_CHANGE)

        async def active() -> bool:
            return await self._active(account)

        change = await self._suspensions.plan(account, desired.disabled, owned, active)
        if change is not None:
            body["suspended"] = change
        if body:
            await self._worker.submit(DirectoryCall("update", account.key, body, secrets))
        return frozenset(owned)

    async def check(self) -> None:
        """Prove the key, the delegation and the scope by reading the admin's own user."""
        await self._worker.call(self.client.get, self.config.admin_subject)
