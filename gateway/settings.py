"""Settings: a TOML file (``--config`` or ``GATEWAY_CONFIG``) plus ``GATEWAY_*`` variables.

Nested keys come from variables with a double underscore, e.g. ``GATEWAY_DATABASE__URL``.
Every key is documented in ``settings.example.toml``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from gateway.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    """Where the store lives."""

    url: str = "sqlite:///var/gateway.db"
    pool_size: int = Field(default=8, ge=1, le=64)


class HttpSettings(_Section):
    """The portal, admin API and health endpoint."""

    listen: str = "127.0.0.1:8080"
    base_url: str = "http://127.0.0.1:8080"
    trusted_proxies: list[str] = Field(default_factory=list)
    metrics_allow: list[str] = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])


class RadiusSettings(_Section):
    """The RADIUS listener (disabled when ``listen`` is empty)."""

    listen: list[str] = Field(default_factory=list)


class LdapSettings(_Section):
    """The LDAP bind front-end (disabled when ``listen`` is empty)."""

    listen: str = ""
    base_dn: str = "dc=example,dc=org"


class MailSettings(_Section):
    """Outgoing mail: SMTP when ``host`` is set, otherwise a local Maildir."""

    host: str = ""
    port: int = 587
    tls: str = Field(default="starttls", pattern="^(starttls|tls|none)$")
    username: str = ""
    password_file: Path | None = None
    sender: str = "gateway@localhost"
    maildir: Path = Path("var/mail")


class SecretsSettings(_Section):
    """The sealing key (AES-GCM) for pending passwords and TOTP seeds; it never enters the DB."""

    key_file: Path = Path("var/secret.key")


class HashingSettings(_Section):
    """argon2id parameters and the bounded verification pool."""

    time_cost: int = Field(default=2, ge=2)
    memory_kib: int = Field(default=19456, ge=19456)
    parallelism: int = Field(default=1, ge=1)
    workers: int = Field(default=0, ge=0, description="0 = one per CPU core")
    queue_limit: int = Field(default=256, ge=1)


class Settings(BaseSettings):
    """All gateway settings."""

    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    database: DatabaseSettings = DatabaseSettings()
    http: HttpSettings = HttpSettings()
    radius: RadiusSettings = RadiusSettings()
    ldap: LdapSettings = LdapSettings()
    mail: MailSettings = MailSettings()
    secrets: SecretsSettings = SecretsSettings()
    hashing: HashingSettings = HashingSettings()
    policies_dir: Path = Path("policies")
    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = os.environ.get("GATEWAY_CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(path)))
        return tuple(sources)


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Load settings from ``config`` (or ``GATEWAY_CONFIG``) and the environment."""
    if config is not None:
        os.environ["GATEWAY_CONFIG"] = str(config)
    path = os.environ.get("GATEWAY_CONFIG")
    if path and not Path(path).is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from None
    if settings.mail.password_file is not None:
        check_private(settings.mail.password_file)
    return settings


def check_private(path: Path) -> None:
    """Refuse a secret file that group or others can read (or that is missing)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"secret file {path} does not exist") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"secret file {path} is readable by group or others "
            f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
        )


def read_secret(path: Path) -> SecretStr:
    """Read a secret from a private file, stripping one trailing newline."""
    check_private(path)
    text = path.read_text(encoding="utf-8")
    return SecretStr(text[:-1] if text.endswith("\n") else text)


def check_secret_ref(ref: str, *, resolve: bool = True) -> str:
    """Check a secret reference for a policy validator: it must be ``file:``/``env:`` and, unless
    ``resolve`` is False (documentation examples), resolve now. Returns the reference."""
    kind, _, value = ref.partition(":")
    if kind not in ("file", "env") or not value:
        raise ValueError("a secret must be given as file:/path or env:NAME, never inline")
    if resolve:
        try:
            secret_from_ref(ref)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return ref


def resolving(context: Any) -> bool:
    """False when a policy file is validated as a documentation example (``*.example.toml``)."""
    return not (isinstance(context, dict) and context.get("example", False))


def secret_from_ref(ref: str) -> SecretStr:
    """Resolve a secret reference: ``file:/path`` or ``env:NAME``; inline secrets are refused."""
    kind, _, value = ref.partition(":")
    if kind == "file" and value:
        return read_secret(Path(value))
    if kind == "env" and value:
        if value not in os.environ:
            raise ConfigError(f"environment variable {value} is not set")
        return SecretStr(os.environ[value])
    raise ConfigError("a secret must be given as file:/path or env:NAME, never inline")
