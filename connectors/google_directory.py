"""Blocking Admin SDK Directory client: service account with domain-wide delegation, batches.

Runs only in the connector's worker thread (httplib2 is not thread-safe). Errors are mapped
here, once, by ``error.errors[].reason`` rather than by status alone:

- ``userRateLimitExceeded`` / ``rateLimitExceeded`` / ``quotaExceeded`` (often 403),
  ``backendError``, 429 and 5xx, timeouts, connection errors → ``TransientError``;
- 401, 403 ``forbidden`` and other 403s, a refused token grant, a bad CA → ``TargetConfigError``;
- 404 → ``NotFoundError``; 400 (``invalid``: e.g. an invalid password) → ``RejectedError``.

The credentials, the ``httplib2.Http`` (with an explicit CA file, never the environment's)
and the service object are built on first use.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import google_auth_httplib2
import httplib2
from google.auth.exceptions import RefreshError, TransportError
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from connectors.base import translate
from connectors.http_common import ca_bundle, retry_after, safe_text
from gateway.errors import (
    ConnectorError,
    NotFoundError,
    RejectedError,
    TargetConfigError,
    TransientError,
)
from gateway.settings import secret_from_ref

if TYPE_CHECKING:
    from connectors.google import GoogleConfig

TARGET = "Google Workspace"
SCOPE = "https://www.googleapis.com/auth/admin.directory.user"
BATCH_LIMIT = 1000
TRANSIENT_REASONS = frozenset(
    {"userRateLimitExceeded", "rateLimitExceeded", "quotaExceeded", "backendError"}
)

_LIBRARY_ERRORS: Mapping[type[BaseException], type[ConnectorError]] = {
    ssl.SSLCertVerificationError: TargetConfigError,
    TimeoutError: TransientError,
    socket.timeout: TransientError,
    httplib2.ServerNotFoundError: TransientError,
    httplib2.HttpLib2Error: TransientError,
    TransportError: TransientError,
    ConnectionError: TransientError,
    OSError: TransientError,
    ValueError: TargetConfigError,
}


@dataclass(frozen=True)
class DirectoryCall:
    """One Directory API call: ``get`` a user or ``update`` it with ``body``."""

    op: str
    user_key: str
    body: Mapping[str, Any] | None = field(default=None, repr=False)  # may hold a password
    secrets: tuple[str, ...] = field(default=(), repr=False)


def google_error(
    exc: HttpError, *, resource: str, account: str = "", secrets: Sequence[str] = ()
) -> ConnectorError:
    """Map one Directory API error to the gateway's error tree, by reason first."""
    status = int(exc.resp.status)
    try:
        payload = json.loads(exc.content.decode("utf-8"))
    except (ValueError, AttributeError):
        payload = {}
    err = payload.get("error", {}) if isinstance(payload, dict) else {}
    err = err if isinstance(err, dict) else {}
    reasons = {str(e.get("reason", "")) for e in err.get("errors", []) if isinstance(e, dict)}
    message = safe_text(err.get("message", ""), secrets)
    if reasons & TRANSIENT_REASONS or status == 429 or status >= 500:
        delay = retry_after(exc.resp.get("retry-after"))
        why = ",".join(sorted(reasons & TRANSIENT_REASONS)) or str(status)
        return TransientError(
            f"{TARGET} throttled or busy ({why})",
            retry_after=delay,
            resource=resource,
            account=account,
        )
    if status in (401, 403):
        why = ",".join(sorted(reasons)) or str(status)
        return TargetConfigError(
            f"{TARGET} denied access ({why})", resource=resource, account=account
        )
    if status == 404:
        return NotFoundError(f"{TARGET} has no such account", resource=resource, account=account)
    if status == 400:
        return RejectedError(
            f"{TARGET} refused the change: {message or 'invalid'}",
            resource=resource,
            account=account,
        )
    return ConnectorError(f"{TARGET} answered {status}", resource=resource, account=account)


class DirectoryClient:
    """A blocking Directory API client for one resource, used by one worker thread."""

    def __init__(self, resource: str, config: GoogleConfig) -> None:
        self.resource = resource
        self.config = config
        self._service: Any = None
        self._creds: Any = None
        self._users: Any = None
        self._http: httplib2.Http | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> Any:
        with self._lock:
            if self._service is None:
                cfg = self.config
                info = json.loads(secret_from_ref(cfg.service_account_key).get_secret_value())
                info["token_uri"] = cfg.token_uri
                load: Any = service_account.Credentials.from_service_account_info
                creds = load(info, scopes=[SCOPE]).with_subject(cfg.admin_subject)
                http = httplib2.Http(ca_certs=ca_bundle(cfg.ca_bundle), timeout=cfg.timeout_s)
                authed = google_auth_httplib2.AuthorizedHttp(creds, http=http)
                self._creds, self._http = creds, http
                self._service = build(
                    "admin",
                    "directory_v1",
                    http=authed,
                    static_discovery=True,
                    cache_discovery=False,
                    client_options={"api_endpoint": cfg.api_endpoint},
                )
                self._users = self._service.users()  # building a resource costs ~7 ms
            return self._service

    def _request(self, call: DirectoryCall) -> Any:
        self._ensure()
        users = self._users
        if call.op == "get":
            return users.get(userKey=call.user_key, fields="id,primaryEmail,suspended")
        if call.op == "update":
            return users.update(userKey=call.user_key, body=dict(call.body or {}))
        raise ValueError(f"unknown Directory call {call.op}")

    def _translated(self, exc: BaseException, secrets: Sequence[str], account: str) -> Any:
        if isinstance(exc, HttpError):
            return google_error(exc, resource=self.resource, account=account, secrets=secrets)
        if isinstance(exc, RefreshError):
            if exc.retryable:
                return TransientError(f"{TARGET} token service busy", resource=self.resource)
            return TargetConfigError(
                f"{TARGET} refused the service-account grant", resource=self.resource
            )
        try:
            with translate(_LIBRARY_ERRORS, resource=self.resource, account=account):
                raise exc
        except ConnectorError as mapped:
            return mapped

    def _fresh_token(self) -> None:
        """Refresh the token through our own Http (with the configured CA file)."""
        # BatchHttpRequest would refresh through a plain httplib2.Http(), ignoring the CA file
        self._ensure()
        if not self._creds.valid:
            self._creds.refresh(google_auth_httplib2.Request(self._http))

    def run_batch(self, calls: list[DirectoryCall]) -> list[Any | ConnectorError]:
        """Send the calls as one batch request; one result or error per call, in order."""
        results: dict[str, Any] = {}

        def done(request_id: str, response: Any, exception: BaseException | None) -> None:
            results[request_id] = exception if exception is not None else response

        secrets = [s for c in calls for s in c.secrets]
        try:
            self._fresh_token()
            batch = BatchHttpRequest(callback=done, batch_uri=self.config.batch_uri)
            for i, call in enumerate(calls):
                batch.add(self._request(call), request_id=str(i))
            batch.execute()
        except Exception as exc:
            raise self._translated(exc, secrets, "") from exc
        out: list[Any | ConnectorError] = []
        for i, call in enumerate(calls):
            result = results.get(str(i))
            if isinstance(result, BaseException):
                out.append(self._translated(result, call.secrets, call.user_key))
            else:
                out.append(result)
        return out

    def get(self, user_key: str) -> dict[str, Any] | None:
        """One user by key (primary e-mail, alias or id), or None when there is none."""
        try:
            return dict(self._request(DirectoryCall("get", user_key)).execute())
        except HttpError as exc:
            if int(exc.resp.status) == 404:
                return None
            raise self._translated(exc, (), user_key) from exc
        except Exception as exc:
            raise self._translated(exc, (), user_key) from exc

    def close(self) -> None:
        """Close the HTTP connections."""
        with self._lock:
            if self._service is not None:
                self._service.close()
            self._service = None
            self._creds = self._http = self._users = None
