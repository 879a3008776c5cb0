"""Settings of the LDAP / Active Directory connector: ``[connection]`` and ``[link]`` models.

Both are checked when the policy file loads. ``bind_password`` is a reference
(``file:/path`` or ``env:NAME``) resolved at each connect, never an inline secret. Plain LDAP
(``tls = "none"``) is accepted only for loopback addresses, and never for Active Directory.
"""

from __future__ import annotations

import ipaddress
import string
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LINK_FIELDS = frozenset({"email", "username", "local", "domain"})


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LdapConfig(BaseModel):
    """``[connection]`` of an ``ldap`` resource."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    urls: tuple[str, ...] = Field(min_length=1)
    flavour: Literal["openldap", "389ds", "ad"] = "openldap"
    bind_dn: str = Field(min_length=1)
    bind_password: str
    base_dn: str = Field(min_length=1)
    tls: Literal["ldaps", "starttls", "none"] = "starttls"
    ca_file: Path | None = None
    tls_hostname: str | None = None
    connect_timeout: float = Field(default=5.0, gt=0, le=120)
    timeout: float = Field(default=10.0, gt=0, le=600)
    pool_size: int = Field(default=4, ge=1, le=32)
    ad_complexity: bool = True

    @model_validator(mode="before")
    @classmethod
    def _one_url(cls, data: object) -> object:
        """Accept ``url = "..."`` as a one-element ``urls``."""
        if isinstance(data, dict) and "url" in data:
            data = dict(data)
            url = data.pop("url")
            if "urls" in data:
                raise ValueError("give either url or urls, not both")
            data["urls"] = [url] if isinstance(url, str) else url
        return data

    @field_validator("bind_password")
    @classmethod
    def _reference_only(cls, value: str) -> str:
        """A reference (resolved at each connect), never the secret itself."""
        kind, _, rest = value.partition(":")
        if kind not in ("file", "env") or not rest:
            raise ValueError("give the password as file:/path or env:NAME, never inline")
        return value

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        """Every URL is ldap:// or ldaps:// with a host."""
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
                raise ValueError(f"{url!r} is not an ldap:// or ldaps:// URL with a host")
            if parts.path not in ("", "/"):
                raise ValueError(f"{url!r}: put the base DN in base_dn, not in the URL")
        return urls

    @model_validator(mode="after")
    def _check_tls(self) -> LdapConfig:
        """TLS mode must fit the URLs; cleartext only on loopback; AD always over TLS."""
        schemes = {urlsplit(u).scheme for u in self.urls}
        if self.tls == "ldaps" and schemes != {"ldaps"}:
            raise ValueError('tls = "ldaps" needs ldaps:// URLs')
        if self.tls in ("starttls", "none") and schemes != {"ldap"}:
            raise ValueError(f'tls = "{self.tls}" needs ldap:// URLs')
        if self.tls == "none":
            if self.flavour == "ad":
                raise ValueError("Active Directory takes passwords (unicodePwd) only over TLS")
            remote = [u for u in self.urls if not _is_loopback(urlsplit(u).hostname or "")]
            if remote:
                raise ValueError(f'tls = "none" is allowed only for loopback, not {remote[0]}')
        if self.ca_file is not None and self.tls == "none":
            raise ValueError('ca_file makes no sense with tls = "none"')
        return self


class LdapLink(BaseModel):
    """``[link]`` of an ``ldap`` resource: how a gateway account finds its entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    filter: str = "(mail={email})"
    base: str | None = None
    scope: Literal["subtree", "one"] = "subtree"

    @field_validator("filter")
    @classmethod
    def _check_filter(cls, value: str) -> str:
        """A parenthesised filter whose placeholders are known identity fields."""
        if not (value.startswith("(") and value.endswith(")")):
            raise ValueError("an LDAP filter is written in parentheses, e.g. (mail={email})")
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as exc:
            raise ValueError(f"bad placeholder: {exc}") from None
        unknown = names - LINK_FIELDS
        if unknown:
            allowed = ", ".join("{" + n + "}" for n in sorted(LINK_FIELDS))
            raise ValueError(f"unknown placeholder {sorted(unknown)[0]!r}; use {allowed}")
        if not names:
            raise ValueError("the filter must use at least one placeholder, e.g. {email}")
        return value

    @property
    def fields(self) -> frozenset[str]:
        """The identity fields the filter uses."""
        return frozenset(f for _, f, _, _ in string.Formatter().parse(self.filter) if f)
