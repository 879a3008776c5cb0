"""The ``radius`` connector: the gateway's own RADIUS listener is the target.

Its ``Config`` is the ``[connection]`` table of a RADIUS resource policy: the NAS clients (address
or network, shared secret by reference, legacy flag, options), how MFA is asked (``append`` or
``challenge``), the expired-password grace, the must-change message, group -> reply attribute
mappings, the success-cache TTL, the reject delay and the DAE port for Disconnect-Request.

Enforcement (reject, grace) happens in the listener (``gateway.radius``). ``apply()`` only acts
when the desired state is *disabled* (locked or expired with action ``disconnect``): it sends a
Disconnect-Request (RFC 5176) for every live session of the account and raises ``TransientError``
until every NAS has answered, so the dispatcher retries.

Example ``policies/wifi.toml``::

    connector = "radius"
    [actions]
    password_change = "maintain"
    expired = "grace"            # reject | grace | disconnect
    locked = "disconnect"        # reject | disconnect
    unlocked = "maintain"
    [connection]
    mfa = "challenge"            # or "append": the TOTP code follows the password
    expired_grace = { logins = 3 }
    success_cache_seconds = 0    # see gateway/radius/cache.py for the trade-off
    [[connection.clients]]
    name = "wlc-1"
    address = "10.0.0.0/24"
    secret = "file:/etc/gateway/radius-wlc.secret"
    [[connection.group_replies]]
    group = "staff"
    [connection.group_replies.attributes]
    "Tunnel-Type:1" = "VLAN"
    "Tunnel-Medium-Type:1" = "IEEE-802"
    "Tunnel-Private-Group-Id:1" = "20"
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from connectors.base import AccountRef, DesiredState, Identity, PasswordLimit
from gateway.errors import ConfigError, TransientError
from gateway.settings import check_secret_ref, resolving, secret_from_ref

log = logging.getLogger("connectors.radius")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_PASSWORD_OCTETS = 128  # RFC 2865 section 5.2


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RadiusClient(_Model):
    """One NAS (or a network of them) allowed to talk to the listener."""

    name: str = ""
    address: str = Field(description="an address or a network, e.g. 10.0.0.5 or 10.0.0.0/24")
    secret: str = Field(description="shared secret by reference: file:/path or env:NAME")
    legacy: bool = Field(
        default=False,
        description="accept Access-Request without Message-Authenticator (BlastRADIUS risk)",
    )
    dae_port: int | None = Field(default=None, ge=1, le=65535)
    nas_identifier: str = ""
    _secret: SecretStr = PrivateAttr(default=SecretStr(""))

    @field_validator("address")
    @classmethod
    def _network(cls, value: str) -> str:
        ipaddress.ip_network(value.strip(), strict=False)  # ValueError names the problem
        return value.strip()

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> RadiusClient:
        if not resolving(info.context):  # a documentation example: check the form only
            check_secret_ref(self.secret, resolve=False)
            return self
        try:
            secret = secret_from_ref(self.secret)
        except ConfigError as exc:  # reported with the field's location by the policy loader
            raise ValueError(str(exc)) from None
        if not secret.get_secret_value():
            raise ValueError("the shared secret is empty")
        self._secret = secret
        return self

    @property
    def network(self) -> IPNetwork:
        """The client's address as a network (a single address is a /32 or /128)."""
        return ipaddress.ip_network(self.address, strict=False)

    def shared_secret(self) -> bytes:
        """The resolved shared secret as bytes (never logged)."""
        return self._secret.get_secret_value().encode()


class ExpiredGrace(_Model):
    """Grace for an expired password (action ``grace``): N logins and/or N days."""

    logins: int | None = Field(default=3, ge=0, le=100)
    days: int | None = Field(default=None, ge=0, le=90)


class GroupReply(_Model):
    """Reply attributes for members of ``group``, e.g. a VLAN or a Filter-Id."""

    group: str = Field(min_length=1)
    attributes: dict[str, str | int | list[str | int]] = Field(min_length=1)

    @field_validator("attributes")
    @classmethod
    def _known(
        cls, value: dict[str, str | int | list[str | int]]
    ) -> dict[str, str | int | list[str | int]]:
        from gateway.radius.wire import check_reply_attributes

        check_reply_attributes(value)
        return value


class RadiusConfig(_Model):
    """The ``[connection]`` table of a RADIUS resource."""

    clients: tuple[RadiusClient, ...] = Field(min_length=1)
    mfa: Literal["append", "challenge"] = "challenge"
    challenge_seconds: int = Field(default=120, ge=10, le=600)
    challenge_message: str = "Enter the code from your authenticator app."
    expired_grace: ExpiredGrace = ExpiredGrace()
    grace_message: str = "Your password has expired. Change it now."
    must_change_message: str = "You must change your password before you can connect."
    group_replies: tuple[GroupReply, ...] = ()
    success_cache_seconds: int = Field(
        default=0, ge=0, le=3600, description="0 turns the success cache off"
    )
    reject_delay_seconds: float = Field(default=1.0, ge=0.0, le=10.0)
    duplicate_window_seconds: float = Field(default=30.0, ge=1.0, le=300.0)
    max_pending: int = Field(
        default=64, ge=1, le=10_000, description="authentications in flight, at most"
    )
    max_queue_seconds: float = Field(
        default=0.5,
        gt=0.0,
        le=30.0,
        description="shed a request that would wait longer than this for a hash worker",
    )
    dae_port: int = Field(default=3799, ge=1, le=65535)
    dae_timeout_seconds: float = Field(default=2.0, gt=0.0, le=30.0)
    dae_attempts: int = Field(default=3, ge=1, le=10)

    def client_for(self, address: str) -> RadiusClient | None:
        """The most specific client whose network holds ``address``, or None."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        best: RadiusClient | None = None
        for client in self.clients:
            net = client.network
            better = best is None or net.prefixlen > best.network.prefixlen
            if ip.version == net.version and ip in net and better:
                best = client
        return best

    def reply_attributes(self, groups: tuple[str, ...]) -> list[tuple[str, Any]]:
        """Reply attributes for an account in ``groups``, in policy order."""
        out: list[tuple[str, Any]] = []
        for mapping in self.group_replies:
            if mapping.group in groups:
                for name, value in mapping.attributes.items():
                    values = value if isinstance(value, list) else [value]
                    out.extend((name, v) for v in values)
        return out


class RadiusConnector:
    """Ends live RADIUS sessions (Disconnect-Request) when an account must be cut off."""

    name: ClassVar[str] = "radius"
    Config: ClassVar[type[BaseModel]] = RadiusConfig
    allowed_actions: ClassVar[dict[str, tuple[str, ...]]] = {
        "locked": ("reject", "disconnect"),
        "expired": ("reject", "grace", "disconnect"),
        "password_change": ("maintain",),
        "unlocked": ("maintain",),
    }
    password_limits: ClassVar[tuple[PasswordLimit, ...]] = (
        PasswordLimit(target="RADIUS", max_octets=MAX_PASSWORD_OCTETS),
    )

    def __init__(self, resource: str, config: BaseModel) -> None:
        assert isinstance(config, RadiusConfig)
        self.resource = resource
        self.config = config

    async def find_account(self, who: Identity) -> AccountRef | None:
        """The listener answers from the gateway's own store: the account is its username key."""
        from gateway.service import identity_key

        return AccountRef(key=identity_key(who.username))

    async def apply(
        self, account: AccountRef, desired: DesiredState, password: SecretStr | None
    ) -> frozenset[str]:
        """Disconnect every live session while the account is disabled; retry until answered."""
        if not desired.disabled:
            return frozenset()
        from gateway.radius.disconnect import disconnect_account

        pending = await disconnect_account(self.resource, self.config, account.key)
        if pending:
            raise TransientError(
                f"{pending} session(s) not yet disconnected",
                retry_after=self.config.dae_timeout_seconds,
                resource=self.resource,
                account=account.key,
            )
        return frozenset({"disconnected"})

    async def check(self) -> None:
        """Nothing to reach: the listener is part of the gateway."""

    async def aclose(self) -> None:
        """Nothing to close."""
