"""Blocking Microsoft Graph v1.0 client: msal client-credentials tokens, ``$batch`` and lookups.

Runs only in the connector's worker thread. Errors are mapped here, once:

- 429 and 503 → ``TransientError`` with the ``Retry-After`` delay; other 5xx and timeouts →
  ``TransientError``;
- 400 (password policy, bad value) → ``RejectedError`` with Microsoft's reason;
- 401 / 403 and refused token requests → ``TargetConfigError``;
- 404 → ``NotFoundError``.

The msal application and the HTTP session are created on first use (msal fetches the
authority's OpenID configuration in its constructor). The session ignores the environment
(``trust_env=False``) and verifies servers with the configured CA bundle.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import msal
import requests
from msal.exceptions import MsalServiceError

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
    from connectors.m365 import M365Config

TARGET = "Microsoft 365"
BATCH_LIMIT = 20

_LIBRARY_ERRORS: Mapping[type[BaseException], type[ConnectorError]] = {
    requests.exceptions.SSLError: TargetConfigError,
    requests.exceptions.Timeout: TransientError,
    requests.exceptions.ConnectionError: TransientError,
    MsalServiceError: TransientError,
    requests.exceptions.RequestException: TransientError,
    ValueError: TargetConfigError,
}
_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.S)


@dataclass(frozen=True)
class GraphCall:
    """One Graph request inside a ``$batch`` (``url`` relative to the Graph base)."""

    method: str
    url: str
    body: Mapping[str, Any] | None = field(default=None, repr=False)  # may hold a password
    secrets: tuple[str, ...] = field(default=(), repr=False)


def user_url(key: str, suffix: str = "") -> str:
    """The relative URL of a user (by object id or UPN)."""
    return f"/users/{quote(key, safe='@')}{suffix}"


def find_url(value: str, attributes: Sequence[str]) -> str:
    """The relative URL finding users whose ``attributes`` equal ``value`` (``$filter``, or-ed)."""
    quoted = value.replace("'", "''")
    flt = " or ".join(f"{attr} eq '{quoted}'" for attr in attributes)
    query = {"$filter": flt, "$select": "id,userPrincipalName,mail,accountEnabled"}
    return "/users?" + urlencode(query, quote_via=quote, safe="$@,")


def graph_error(
    status: int,
    payload: Any,
    headers: Mapping[str, str],
    *,
    resource: str,
    account: str = "",
    secrets: Sequence[str] = (),
) -> ConnectorError:
    """Map one Graph error response to the gateway's error tree."""
    err = payload.get("error", {}) if isinstance(payload, dict) else {}
    err = err if isinstance(err, dict) else {}
    code = safe_text(err.get("code", ""), secrets, 80)
    message = safe_text(err.get("message", ""), secrets)
    lowered = {k.lower(): v for k, v in headers.items()}
    if status in (429, 503):
        delay = retry_after(lowered.get("retry-after"))
        return TransientError(
            f"{TARGET} throttled ({status})", retry_after=delay, resource=resource, account=account
        )
    if status >= 500:
        return TransientError(
            f"{TARGET} server error ({status})", resource=resource, account=account
        )
    if status in (401, 403):
        return TargetConfigError(
            f"{TARGET} denied access ({status} {code})", resource=resource, account=account
        )
    if status == 404:
        return NotFoundError(f"{TARGET} has no such account", resource=resource, account=account)
    if status == 400:
        return RejectedError(
            f"{TARGET} refused the change: {message or code}", resource=resource, account=account
        )
    return ConnectorError(f"{TARGET} answered {status} {code}", resource=resource, account=account)


class GraphClient:
    """A blocking Graph client for one resource; thread-safe for the single worker using it."""

    def __init__(self, resource: str, config: M365Config) -> None:
        self.resource = resource
        self.config = config
        self._session: requests.Session | None = None
        self._app: msal.ConfidentialClientApplication | None = None
        self._lock = threading.Lock()
        self.http_requests = 0

    def _credential(self) -> str | dict[str, str]:
        cfg = self.config
        if cfg.client_secret:
            return secret_from_ref(cfg.client_secret).get_secret_value()
        assert cfg.client_certificate is not None
        pem = secret_from_ref(cfg.client_certificate).get_secret_value()
        blocks = {m.group(1): m.group(0) for m in _PEM.finditer(pem)}
        key = next((v for k, v in blocks.items() if k.endswith("PRIVATE KEY")), None)
        cert = blocks.get("CERTIFICATE")
        if key is None or cert is None:
            raise TargetConfigError(
                "the client certificate file needs a private key and a certificate (PEM)",
                resource=self.resource,
            )
        return {"private_key": key, "public_certificate": cert}

    def _ensure(self) -> tuple[requests.Session, msal.ConfidentialClientApplication]:
        with self._lock:
            if self._session is None:
                session = requests.Session()
                session.trust_env = False
                session.verify = ca_bundle(self.config.ca_bundle)
                self._session = session
            if self._app is None:
                authority = f"{self.config.authority_host.rstrip('/')}/{self.config.tenant}"
                self._app = msal.ConfidentialClientApplication(
                    self.config.client_id,
                    client_credential=self._credential(),
                    authority=authority,
                    http_client=self._session,
                    instance_discovery=False,
                    token_cache=msal.TokenCache(),
                    timeout=self.config.timeout_s,
                )
            return self._session, self._app

    def _token(self) -> str:
        _, app = self._ensure()
        result = app.acquire_token_for_client(scopes=[self.config.scope])
        token = result.get("access_token") if isinstance(result, dict) else None
        if token:
            return str(token)
        error = str(result.get("error", "unknown")) if isinstance(result, dict) else "unknown"
        if error in ("temporarily_unavailable", "server_error"):
            raise TransientError(f"{TARGET} token service unavailable", resource=self.resource)
        raise TargetConfigError(
            f"{TARGET} refused the token request ({safe_text(error, (), 60)})",
            resource=self.resource,
        )

    def _send(
        self, method: str, url: str, *, params: Mapping[str, str] | None = None, body: Any = None
    ) -> requests.Response:
        session, _ = self._ensure()
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json"}
        self.http_requests += 1
        return session.request(
            method,
            self.config.graph_url.rstrip("/") + url,
            params=params,
            json=body,
            headers=headers,
            timeout=self.config.timeout_s,
        )

    def run_batch(self, calls: list[GraphCall]) -> list[Any | ConnectorError]:
        """Send up to 20 calls as one JSON ``$batch``; one result or error per call, in order."""
        if len(calls) > BATCH_LIMIT:
            raise ValueError("a Graph $batch holds at most 20 requests")
        secrets = [s for c in calls for s in c.secrets]
        requests_ = []
        for i, call in enumerate(calls):
            entry: dict[str, Any] = {"id": str(i), "method": call.method, "url": call.url}
            if call.body is not None:
                entry["headers"] = {"Content-Type": "application/json"}
                entry["body"] = dict(call.body)
            requests_.append(entry)
        with translate(_LIBRARY_ERRORS, resource=self.resource):
            resp = self._send("POST", "/$batch", body={"requests": requests_})
            if resp.status_code != 200:
                raise graph_error(
                    resp.status_code,
                    _json(resp),
                    resp.headers,
                    resource=self.resource,
                    secrets=secrets,
                )
            answers = {str(r.get("id")): r for r in _json(resp).get("responses", [])}
        out: list[Any | ConnectorError] = []
        for i, call in enumerate(calls):
            answer = answers.get(str(i))
            if answer is None:
                lost = ConnectorError(f"{TARGET} $batch lost a response", resource=self.resource)
                out.append(lost)
                continue
            status = int(answer.get("status", 0))
            if 200 <= status < 300:
                out.append(answer.get("body"))
            else:
                out.append(
                    graph_error(
                        status,
                        answer.get("body"),
                        answer.get("headers") or {},
                        resource=self.resource,
                        account=call.url,
                        secrets=call.secrets,
                    )
                )
        return out

    def ping(self) -> None:
        """Get a token and read one user (proves credentials, consent and reachability)."""
        with translate(_LIBRARY_ERRORS, resource=self.resource):
            resp = self._send("GET", "/users", params={"$top": "1", "$select": "id"})
            if resp.status_code != 200:
                raise graph_error(
                    resp.status_code, _json(resp), resp.headers, resource=self.resource
                )

    def close(self) -> None:
        """Close pooled connections."""
        with self._lock:
            if self._session is not None:
                self._session.close()
            self._session = None
            self._app = None


def _json(resp: requests.Response) -> dict[str, Any]:
    if not resp.content:
        return {}
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
