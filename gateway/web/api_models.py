"""Request and response models of the admin API (pydantic; unknown fields are refused)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from gateway.apikeys import KeyInfo
from gateway.views import AccountView

NameStr = Annotated[str, Field(min_length=1, max_length=255)]
EmailStr = Annotated[str, Field(min_length=3, max_length=320)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# ---------------------------------------------------------------- auth
class LoginIn(_In):
    """Administrator login: password, plus the TOTP code when MFA is enrolled."""

    username: str = Field(min_length=1, max_length=320, description="Username or e-mail.")
    password: SecretStr = Field(min_length=1, max_length=1024)
    totp_code: SecretStr | None = Field(default=None, max_length=16)


class LoginOut(_Out):
    """A short-lived bearer token (shown once)."""

    access_token: str
    token_type: str = "bearer"
    expires_at: datetime
    expires_in: int


class WhoAmI(_Out):
    """The authenticated caller."""

    kind: str = Field(description="admin (login token) or apikey")
    name: str
    client: str


class ApiKeyIn(_In):
    """A new API key's name (letters, digits, '.', '_', '-'; never reused)."""

    name: str = Field(min_length=1, max_length=64)


class ApiKeyOut(_Out):
    """An API key as it may be shown (never the key or its hash)."""

    name: str
    key_id: str
    created_at: datetime
    created_by: str
    last_used_at: datetime | None
    last_used_from: str
    revoked_at: datetime | None

    @classmethod
    def of(cls, info: KeyInfo) -> ApiKeyOut:
        """Convert a core ``KeyInfo``."""
        return cls.model_validate(info)


class ApiKeyCreated(_Out):
    """A new API key: ``key`` is shown this once and cannot be retrieved again."""

    key: str
    api_key: ApiKeyOut


# ---------------------------------------------------------------- accounts
class AccountOut(_Out):
    """A user or an administrator as the API shows it (no hash, no seed)."""

    id: int
    kind: str
    username: str
    email: str
    display_name: str
    groups: list[str]
    attributes: dict[str, Any]
    state: str
    locked: bool
    locked_until: datetime | None
    lock_reason: str | None
    failed_count: int
    must_change: bool
    temporary: bool
    never_expires: bool
    password_set: bool
    password_changed_at: datetime | None
    password_expires_at: datetime | None
    recovery_email: str | None
    recovery_email_verified_at: datetime | None
    mfa_enrolled: bool
    last_login_at: datetime | None
    version: int

    @classmethod
    def of(cls, view: AccountView) -> AccountOut:
        """Convert a core ``AccountView``."""
        return cls.model_validate(view)


class _PasswordChoice(_In):
    password: SecretStr | None = Field(default=None, max_length=1024)
    generate_password: bool = False

    @model_validator(mode="after")
    def _one(self) -> _PasswordChoice:
        if self.password is not None and self.generate_password:
            raise ValueError("give either password or generate_password, not both")
        return self


class UserCreate(_PasswordChoice):
    """A new user; without a password the account waits for a reset or a temporary one."""

    username: NameStr
    email: EmailStr
    display_name: str = Field(default="", max_length=255)
    groups: list[str] = Field(default_factory=list, max_length=200)
    never_expires: bool = False


class AdminCreate(_PasswordChoice):
    """A new administrator (admin password rules: 12-64, no username or e-mail)."""

    username: NameStr
    email: EmailStr
    display_name: str = Field(default="", max_length=255)


class AccountCreated(_Out):
    """The new account, and the generated temporary password (shown once) if one was asked."""

    account: AccountOut
    temporary_password: str | None = None


class UserUpdate(_In):
    """Profile changes; fields left out stay as they are."""

    email: str | None = Field(default=None, min_length=3, max_length=320)
    display_name: str | None = Field(default=None, max_length=255)
    groups: list[str] | None = Field(default=None, max_length=200)
    never_expires: bool | None = None
    enabled: bool | None = Field(default=None, description="false disables the account")


class LockIn(_In):
    """Lock for ``minutes``, or until an administrator unlocks (omitted)."""

    minutes: int | None = Field(default=None, ge=1, le=60 * 24 * 365)


class TemporaryPasswordIn(_In):
    """A must-change temporary password: typed (full rules apply) or generated (default)."""

    password: SecretStr | None = Field(default=None, max_length=1024)


class TemporaryPasswordOut(_Out):
    """The account after the change; ``temporary_password`` only when it was generated."""

    account: AccountOut
    temporary_password: str | None = None


class RecoveryEmailIn(_In):
    """A password-recovery address (must differ from the work address)."""

    address: EmailStr


class AdminResetIn(_In):
    """What the admin UI's "Save" does for a user: temporary password and/or recovery e-mail."""

    temporary_password: SecretStr | None = Field(default=None, max_length=1024)
    generate_password: bool = False
    recovery_email: str | None = Field(default=None, min_length=3, max_length=320)

    @model_validator(mode="after")
    def _something(self) -> AdminResetIn:
        if self.temporary_password is not None and self.generate_password:
            raise ValueError("give either temporary_password or generate_password, not both")
        if (
            self.temporary_password is None
            and not self.generate_password
            and self.recovery_email is None
        ):
            raise ValueError("nothing to do")
        return self


class Accepted(_Out):
    """The request was accepted; the e-mail is queued."""

    detail: str


# ---------------------------------------------------------------- audit
class AuditRow(_Out):
    """One audit entry: who, what, when, from where, outcome and reason (never a secret)."""

    id: int
    at: datetime
    actor: str
    action: str
    account_id: int | None
    subject: str
    outcome: str
    reason: str
    via: str
    client: str
    details: dict[str, Any]
