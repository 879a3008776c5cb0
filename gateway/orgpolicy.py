"""The organisation rules read from ``policies/org.toml`` (pydantic, ``extra="forbid"``, frozen)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.errors import PolicyFileError

M = TypeVar("M", bound=BaseModel)

ADMIN_MIN_LENGTH = 12
ADMIN_MAX_LENGTH = 64
ADMIN_TOTP_ATTEMPTS = 5


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PasswordRules(_Model):
    """Password rules for users (admins use fixed rules, see ``admin_rules``)."""

    min_length: int = Field(default=12, ge=12, le=64)
    max_length: int = Field(default=64, ge=12, le=64)
    forbid_identity: bool = True
    history: int = Field(default=5, ge=0, le=24)
    blocklist: bool = True

    @model_validator(mode="after")
    def _order(self) -> PasswordRules:
        if self.min_length > self.max_length:
            raise ValueError("min_length must not exceed max_length")
        return self


def admin_rules(history: int) -> PasswordRules:
    """The fixed admin rule set: 12–64 code points and no identity words."""
    return PasswordRules(
        min_length=ADMIN_MIN_LENGTH,
        max_length=ADMIN_MAX_LENGTH,
        forbid_identity=True,
        history=history,
        blocklist=True,
    )


class ExpiryRules(_Model):
    """Password age: ``max_age_days`` 0 means passwords never expire."""

    max_age_days: int = Field(default=0, ge=0, le=3650)
    warn_days: int = Field(default=14, ge=0, le=365)
    temporary_hours: int = Field(default=72, ge=1, le=24 * 30)


class LockoutRules(_Model):
    """Failed-attempt lockout; ``duration_minutes`` 0 means only an admin unlocks."""

    threshold: int = Field(default=5, ge=1, le=100)
    window_minutes: int = Field(default=15, ge=1, le=24 * 60)
    duration_minutes: int = Field(default=30, ge=0, le=7 * 24 * 60)


class MfaRules(_Model):
    """TOTP attempt limits and enforcement."""

    user_totp_attempts: int = Field(default=5, ge=1, le=20)
    enforce_for_portal: bool = False
    allow_reset_before_enrolment: bool = False


class RecoveryRules(_Model):
    """Recovery e-mail; off until an admin enables it."""

    enabled: bool = False
    verify_hours: int = Field(default=4, ge=1, le=4)


class ResetRules(_Model):
    """Reset-link lifetimes."""

    self_service_hours: int = Field(default=1, ge=1, le=1)
    admin_initiated_hours: int = Field(default=24, ge=1, le=24)


class OrgPolicy(_Model):
    """Everything in ``org.toml``."""

    passwords: PasswordRules = PasswordRules()
    admin_password_history: int = Field(default=5, ge=0, le=24)
    expiry: ExpiryRules = ExpiryRules()
    lockout: LockoutRules = LockoutRules()
    mfa: MfaRules = MfaRules()
    recovery_email: RecoveryRules = RecoveryRules()
    reset: ResetRules = ResetRules()

    def rules_for(self, kind: str) -> PasswordRules:
        """The password rules for an account kind (``user`` or ``admin``)."""
        return admin_rules(self.admin_password_history) if kind == "admin" else self.passwords

    def totp_attempts_for(self, kind: str) -> int:
        """How many wrong TOTP codes an account kind may enter before it is locked."""
        return ADMIN_TOTP_ATTEMPTS if kind == "admin" else self.mfa.user_totp_attempts


_HEADER = re.compile(r"^\[\s*([^\[\]]+?)\s*\](?:\s*#.*)?$")


def _line_of(text: str, loc: tuple[str | int, ...]) -> int:
    """Best-effort line number of the key at ``loc`` in TOML ``text``."""
    section = ".".join(str(p) for p in loc[:-1])
    key = str(loc[-1]) if loc else ""
    in_section = not section
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        header = _HEADER.match(line)
        if header:  # "[table]  # a comment" names the table without the comment
            name = header.group(1).strip()
            in_section = name == section
            if len(loc) == 1 and name == key:
                return number
            continue
        if in_section and line.split("=", 1)[0].strip() == key:
            return number
    return 1


def parse_model(model: type[M], path: Path) -> M:
    """Parse and validate one TOML policy file, reporting file, line and field on error."""
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = match.group(1) if match else "?"
        raise PolicyFileError(str(path), f"line {line}", str(exc)) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        field = ".".join(str(p) for p in loc) or "(file)"
        raise PolicyFileError(
            str(path), f"line {_line_of(text, loc)}, field {field}", err["msg"]
        ) from None


def load_org(policies_dir: Path) -> OrgPolicy:
    """Load ``org.toml`` from ``policies_dir``; a missing file means the defaults."""
    path = policies_dir / "org.toml"
    if not path.exists():
        return OrgPolicy()
    return parse_model(OrgPolicy, path)
