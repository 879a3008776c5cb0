"""What a connector is, as the core sees it, and the one place library errors are translated.

A connector has a ``name`` (equal to its entry-point name in the group ``gateway.connectors``),
a pydantic ``Config`` model checked when the policy file loads, and async operations that bring
one target account to a desired state. Constructors do no network I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, SecretStr

from gateway.errors import ConnectorError

__all__ = [
    "AccountRef",
    "Connector",
    "DesiredState",
    "Identity",
    "PasswordLimit",
    "translate",
]


@dataclass(frozen=True)
class Identity:
    """How the gateway knows an account, used to find it at a target."""

    username: str
    email: str
    groups: tuple[str, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AccountRef:
    """A linked account at a target (a DN, an object id, a primary e-mail)."""

    key: str
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DesiredState:
    """What one target account should look like; the core has already applied the resource policy.

    ``disabled`` is True when a trigger (locked, expired) maps to disable/suspend at this resource.
    ``force_change`` asks the target to demand a new password at next sign-in (expiry mapped to
    ``force_change``, or a temporary password). ``owned`` lists what the gateway itself changed at
    this target earlier (e.g. ``{"disabled"}``): a connector undoes only what is in ``owned``, so an
    account an admin disabled by hand stays disabled. ``apply`` returns the new ``owned`` set.
    """

    version: int
    disabled: bool = False
    force_change: bool = False
    temporary: bool = False
    revoke_sessions: bool = False
    owned: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PasswordLimit:
    """A limit a target puts on passwords, checked by the core before it accepts one."""

    target: str
    min_length: int = 0
    max_length: int | None = None
    max_octets: int | None = None
    ascii_only: bool = False
    min_classes: int = 0

    def violation(self, password: str) -> str | None:
        """Return why the target would refuse ``password``, or None."""
        if len(password) < self.min_length:
            return f"{self.target} needs at least {self.min_length} characters"
        if self.max_length is not None and len(password) > self.max_length:
            return f"{self.target} accepts at most {self.max_length} characters"
        if self.max_octets is not None and len(password.encode()) > self.max_octets:
            return f"{self.target} accepts at most {self.max_octets} octets"
        if self.ascii_only and not password.isascii():
            return f"{self.target} accepts only ASCII characters"
        if self.min_classes:
            classes = sum(
                (
                    any(c.islower() for c in password),
                    any(c.isupper() for c in password),
                    any(c.isdigit() for c in password),
                    any(not c.isalnum() and not c.isspace() for c in password),
                )
            )
            if classes < self.min_classes:
                return (
                    f"{self.target} needs {self.min_classes} of 4 character classes "
                    "(lower case, upper case, digits, symbols)"
                )
        return None


@runtime_checkable
class Connector(Protocol):
    """A target system the gateway propagates account state to."""

    name: ClassVar[str]
    Config: ClassVar[type[BaseModel]]
    password_limits: ClassVar[tuple[PasswordLimit, ...]]

    async def find_account(self, who: Identity) -> AccountRef | None: ...

    async def apply(
        self, account: AccountRef, desired: DesiredState, password: SecretStr | None
    ) -> frozenset[str]: ...

    async def check(self) -> None: ...

    async def aclose(self) -> None: ...


@contextmanager
def translate(
    table: Mapping[type[BaseException], type[ConnectorError]],
    *,
    resource: str,
    account: str = "",
    **extra: Any,
) -> Iterator[None]:
    """Map library exceptions to the gateway's connector errors, most specific class first.

    Unmapped exceptions become a plain ``ConnectorError`` (dead-lettered). The original exception
    is chained for logs, but its text is kept out of the message in case it echoes a secret.
    """
    try:
        yield
    except ConnectorError:
        raise
    except Exception as exc:
        for lib_cls, our_cls in table.items():
            if isinstance(exc, lib_cls):
                raise our_cls(
                    f"{type(exc).__name__}", resource=resource, account=account, **extra
                ) from exc
        raise ConnectorError(
            f"unexpected {type(exc).__name__}", resource=resource, account=account
        ) from exc
