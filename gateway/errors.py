"""The gateway's error tree; every layer raises these and nothing else crosses a boundary.

GatewayError
 ├─ PolicyViolation(rule, message)    shown to the user; never retried.
 │   └─ Locked(until)                 the account is locked (shown only where state may be revealed)
 ├─ AuthenticationFailed              uniform failure: unknown, wrong, locked, expired, disabled
 ├─ NotFound                          an admin named an account that does not exist
 ├─ Conflict                          an account with that name or e-mail already exists
 ├─ Overloaded                        the hash pool is saturated; shed the request
 ├─ ConfigError(message)              bad settings or secret files; exit code 2
 ├─ PolicyFileError(path, location)   the last good policy set stays active
 └─ ConnectorError(resource, account) unmapped library errors land here -> dead-letter
     ├─ TransientError(retry_after)   network, timeouts, 429, 5xx -> retry with backoff
     ├─ NotFoundError                 target account missing -> dead-letter, relink
     ├─ RejectedError                 target refused the value -> dead-letter
     └─ TargetConfigError             bad credentials / permissions -> pause the resource
"""

from __future__ import annotations

from datetime import datetime


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class PolicyViolation(GatewayError):
    """A rule refused the operation; the message is safe to show to the user."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


class Locked(PolicyViolation):
    """The account is locked until ``until`` (None: until an admin unlocks it)."""

    def __init__(self, until: datetime | None) -> None:
        super().__init__("lockout", "the account is locked")
        self.until = until


class AuthenticationFailed(GatewayError):
    """Uniform authentication failure; the real reason is only in the audit row."""

    def __init__(self) -> None:
        super().__init__("authentication failed")


class NotFound(GatewayError):
    """An administrative operation named an account that does not exist."""


class Conflict(GatewayError):
    """An account with that username or e-mail already exists."""


class Overloaded(GatewayError):
    """The bounded hash pool is full; the caller should shed the request."""


class ConfigError(GatewayError):
    """Settings, secret files or the environment are unusable."""


class PolicyFileError(GatewayError):
    """A policy file is invalid; ``location`` names the line and field."""

    def __init__(self, path: str, location: str, message: str) -> None:
        super().__init__(f"{path}:{location}: {message}")
        self.path = path
        self.location = location
        self.message = message


class ConnectorError(GatewayError):
    """A connector failed; unmapped library errors land here and are dead-lettered."""

    def __init__(self, message: str, *, resource: str = "", account: str = "") -> None:
        super().__init__(message)
        self.resource = resource
        self.account = account


class TransientError(ConnectorError):
    """Network trouble, timeouts, throttling or 5xx: retry later, honouring ``retry_after``."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        resource: str = "",
        account: str = "",
    ) -> None:
        super().__init__(message, resource=resource, account=account)
        self.retry_after = retry_after


class NotFoundError(ConnectorError):
    """The target account does not exist: dead-letter and relink."""


class RejectedError(ConnectorError):
    """The target refused the value (constraint, password policy): dead-letter."""


class TargetConfigError(ConnectorError):
    """Credentials, consent or permissions are wrong: pause the resource."""
