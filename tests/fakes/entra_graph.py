"""A strict fake of Entra ID's token endpoint and Microsoft Graph v1.0 users (HTTPS, stdlib).

Implements what the m365 connector uses, as documented: OpenID configuration, the
client-credentials grant (secret or certificate assertion), ``GET /users?$filter``,
``GET/PATCH /users/{id}``, ``POST /users/{id}/revokeSignInSessions`` and JSON ``$batch`` (at most
20 requests, answers in shuffled order). Unknown fields, parameters and paths are refused.
Passwords follow Entra's rule (8–256 characters, 3 of 4 classes, no Unicode).
"""

from __future__ import annotations

import json
import random
import re
import secrets
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jwt

from tests.fakes import FakeServer, Reply, json_reply
from tests.fakes.certs import TlsFiles

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
USER_FIELDS = {"id", "userPrincipalName", "mail", "accountEnabled", "displayName"}
PATCHABLE = {"accountEnabled", "passwordProfile", "displayName"}
PROFILE_FIELDS = {
    "password",
    "forceChangePasswordNextSignIn",
    "forceChangePasswordNextSignInWithMfa",
}
BATCH_FIELDS = {"id", "method", "url", "headers", "body", "dependsOn"}
TOKEN_FIELDS = {
    "client_id",
    "grant_type",
    "client_info",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "scope",
}
COMPLEXITY = (
    "The specified password does not comply with password complexity requirements. "
    "Please provide a different password."
)


@dataclass
class GraphUser:
    """One Entra user as the fake keeps it."""

    id: str
    userPrincipalName: str
    mail: str | None = None
    accountEnabled: bool = True
    displayName: str = ""
    password: str | None = None
    forceChangePasswordNextSignIn: bool = False
    revocations: int = 0

    def view(self, select: set[str] | None = None) -> dict[str, Any]:
        """The user resource as Graph returns it (never the password)."""
        full = {k: getattr(self, k) for k in sorted(USER_FIELDS)}
        return {k: v for k, v in full.items() if select is None or k in select or k == "id"}


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    return json_reply(status, {"error": {"code": code, "message": message}}, headers)


def entra_violation(password: str) -> bool:
    """True if Entra's default cloud password rule refuses ``password``."""
    if not 8 <= len(password) <= 256 or not all(" " <= c <= "~" for c in password):
        return True
    classes = (
        any(c.islower() for c in password),
        any(c.isupper() for c in password),
        any(c.isdigit() for c in password),
        any(not c.isalnum() and c != " " for c in password),
    )
    return sum(classes) < 3


class FakeGraph(FakeServer):
    """Entra token endpoint + Graph users, with state, faults and counters."""

    def __init__(
        self,
        tls: TlsFiles,
        *,
        tenant: str = "tenant1",
        client_id: str = "gateway-app",
        client_secret: str | None = None,
        client_cert_pem: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(tls)
        self.tenant = tenant
        self.client_id = client_id
        self.client_secret = client_secret
        self.client_cert_pem = client_cert_pem
        self.users: dict[str, GraphUser] = {}
        self.tokens: set[str] = set()
        self.token_requests = 0
        self.discovery_requests = 0
        self.banned: dict[str, str] = {}
        self.batch_sizes: list[int] = []
        self._random = random.Random(seed)

    def add_user(self, upn: str, mail: str | None = None, enabled: bool = True) -> GraphUser:
        """Create a user (object id is a fresh UUID)."""
        user = GraphUser(str(uuid.uuid4()), upn, mail, enabled, displayName=upn.split("@")[0])
        with self.lock:
            self.users[user.id] = user
        return user

    def user(self, key: str) -> GraphUser | None:
        """A user by object id or UPN (case-insensitive)."""
        found = self.users.get(key)
        if found is not None:
            return found
        low = key.lower()
        return next((u for u in self.users.values() if u.userPrincipalName.lower() == low), None)

    @property
    def authority(self) -> str:
        """The authority host to configure (the tenant is appended by the connector)."""
        return self.base

    @property
    def graph_url(self) -> str:
        """The Graph base URL to configure."""
        return f"{self.base}/v1.0"

    # -- routing ----------------------------------------------------------------------------

    def route(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        """Token service, OpenID configuration or Graph."""
        path = urlsplit(target).path
        prefix = f"/{self.tenant}/"
        if path == f"{prefix}v2.0/.well-known/openid-configuration" and method == "GET":
            with self.lock:
                self.discovery_requests += 1
            return json_reply(200, self._openid())
        if path == f"{prefix}oauth2/v2.0/token" and method == "POST":
            return self._token(headers, body)
        if not path.startswith("/v1.0/"):
            return _error(404, "UnknownPath", "no such endpoint")
        if not self._authorized(headers):
            return _error(401, "InvalidAuthenticationToken", "Access token is empty or invalid.")
        rel = target[len("/v1.0") :]
        if rel.split("?")[0] == "/$batch" and method == "POST":
            return self._batch(headers, body)
        return self.call(method, rel, self._throttle, lambda: self._graph(method, rel, body))

    def _openid(self) -> dict[str, Any]:
        t = f"{self.base}/{self.tenant}"
        return {
            "token_endpoint": f"{t}/oauth2/v2.0/token",
            "authorization_endpoint": f"{t}/oauth2/v2.0/authorize",
            "issuer": f"{t}/v2.0",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
        }

    def _throttle(self, wait: float) -> Reply:
        seconds = max(1, int(wait + 0.999))
        return _error(429, "TooManyRequests", "Too many requests.", {"Retry-After": str(seconds)})

    def _authorized(self, headers: dict[str, str]) -> bool:
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.tokens

    def _token(self, headers: dict[str, str], body: bytes) -> Reply:
        with self.lock:
            self.token_requests += 1
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        unknown = set(form) - TOKEN_FIELDS
        if unknown or form.get("grant_type") != "client_credentials":
            return json_reply(400, {"error": "invalid_request", "error_codes": [900144]})
        if form.get("client_id") != self.client_id:
            return json_reply(400, {"error": "unauthorized_client", "error_codes": [700016]})
        if form.get("scope") != GRAPH_SCOPE:
            return json_reply(400, {"error": "invalid_scope", "error_codes": [1002012]})
        if not self._client_ok(form):
            return json_reply(
                401,
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                    "error_codes": [7000215],
                },
            )
        token = "fake-at-" + secrets.token_hex(16)
        with self.lock:
            self.tokens.add(token)
        return json_reply(
            200,
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": token,
            },
        )

    def _client_ok(self, form: dict[str, str]) -> bool:
        if "client_secret" in form:
            return self.client_secret is not None and form["client_secret"] == self.client_secret
        assertion = form.get("client_assertion")
        jwt_type = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        if not assertion or form.get("client_assertion_type") != jwt_type:
            return False
        if self.client_cert_pem is None:
            return False
        from cryptography import x509

        key = x509.load_pem_x509_certificate(self.client_cert_pem.encode()).public_key()
        try:
            claims = jwt.decode(
                assertion,
                key=key,  # type: ignore[arg-type]
                algorithms=["RS256", "PS256"],
                audience=f"{self.base}/{self.tenant}/oauth2/v2.0/token",
                options={"require": ["exp", "iss", "sub", "aud"]},
            )
        except jwt.PyJWTError:
            return False
        return bool(claims["iss"] == claims["sub"] == self.client_id)

    # -- Graph --------------------------------------------------------------------------------

    def _graph(self, method: str, rel: str, body: bytes) -> Reply:
        parts = urlsplit(rel)
        segs = [unquote(s) for s in parts.path.strip("/").split("/")]
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if segs == ["users"] and method == "GET":
            return self._list(query)
        if len(segs) < 2 or segs[0] != "users":
            return _error(400, "BadRequest", f"Resource not found for the segment '{segs[0]}'.")
        with self.lock:
            user = self.user(segs[1])
            if user is None:
                return _error(
                    404, "Request_ResourceNotFound", f"Resource '{segs[1]}' does not exist."
                )
            if len(segs) == 2 and method == "GET":
                return self._get(user, query)
            if len(segs) == 2 and method == "PATCH":
                return self._patch(user, query, body)
            if segs[2:] == ["revokeSignInSessions"] and method == "POST":
                if query or body.strip() not in (b"", b"{}"):
                    return _error(400, "BadRequest", "revokeSignInSessions takes no input")
                user.revocations += 1
                return json_reply(200, {"value": True})
        return _error(405, "Request_BadRequest", "method not allowed")

    def _select(self, query: dict[str, str], allowed: set[str]) -> set[str] | Reply | None:
        extra = set(query) - allowed
        if extra:
            return _error(400, "BadRequest", f"Query option '{sorted(extra)[0]}' is not allowed.")
        if "$select" not in query:
            return None
        fields = {f.strip() for f in query["$select"].split(",")}
        if fields - USER_FIELDS:
            bad = sorted(fields - USER_FIELDS)[0]
            return _error(400, "BadRequest", f"Could not find a property named '{bad}'.")
        return fields

    def _get(self, user: GraphUser, query: dict[str, str]) -> Reply:
        select = self._select(query, {"$select"})
        if isinstance(select, tuple):
            return select
        return json_reply(200, user.view(select))

    def _list(self, query: dict[str, str]) -> Reply:
        select = self._select(query, {"$select", "$filter", "$top"})
        if isinstance(select, tuple):
            return select
        users = list(self.users.values())
        if "$filter" in query:
            clauses = query["$filter"].split(" or ")
            wanted: list[tuple[str, str]] = []
            for clause in clauses:
                m = re.fullmatch(r"(userPrincipalName|mail|id) eq '((?:[^']|'')*)'", clause)
                if m is None:
                    return _error(400, "BadRequest", "Invalid filter clause")
                wanted.append((m.group(1), m.group(2).replace("''", "'").lower()))
            users = [
                u for u in users if any(str(getattr(u, a) or "").lower() == v for a, v in wanted)
            ]
        if "$top" in query:
            users = users[: int(query["$top"])]
        return json_reply(200, {"value": [u.view(select) for u in users]})

    def _patch(self, user: GraphUser, query: dict[str, str], body: bytes) -> Reply:
        if query:
            return _error(400, "BadRequest", "PATCH takes no query options")
        try:
            data = json.loads(body or b"null")
        except ValueError:
            return _error(400, "BadRequest", "Invalid JSON")
        if not isinstance(data, dict) or not data:
            return _error(400, "BadRequest", "Empty payload")
        unknown = set(data) - PATCHABLE
        if unknown:
            return _error(400, "Request_BadRequest", f"Invalid property '{sorted(unknown)[0]}'.")
        if "accountEnabled" in data and not isinstance(data["accountEnabled"], bool):
            return _error(400, "Request_BadRequest", "accountEnabled must be a boolean")
        profile = data.get("passwordProfile")
        if profile is not None:
            if not isinstance(profile, dict) or set(profile) - PROFILE_FIELDS:
                return _error(400, "Request_BadRequest", "Invalid passwordProfile")
            password = profile.get("password")
            if password is not None:
                if entra_violation(password):
                    return _error(400, "Request_BadRequest", COMPLEXITY)
                if password in self.banned:
                    return _error(400, "Request_BadRequest", self.banned[password])
        if "accountEnabled" in data:
            user.accountEnabled = data["accountEnabled"]
        if "displayName" in data:
            user.displayName = str(data["displayName"])
        if profile is not None and profile.get("password") is not None:
            user.password = profile["password"]
            user.forceChangePasswordNextSignIn = bool(
                profile.get("forceChangePasswordNextSignIn", True)
            )
        return 204, {}, b""

    def _batch(self, headers: dict[str, str], body: bytes) -> Reply:
        try:
            data = json.loads(body)
        except ValueError:
            return _error(400, "BadRequest", "Invalid batch payload")
        if not isinstance(data, dict) or set(data) != {"requests"}:
            return _error(400, "BadRequest", "Invalid batch payload")
        reqs = data["requests"]
        if not isinstance(reqs, list) or not reqs:
            return _error(400, "BadRequest", "Invalid batch payload")
        if len(reqs) > 20:
            return _error(400, "BadRequest", "Limit of 20 requests per batch exceeded.")
        ids = [r.get("id") for r in reqs if isinstance(r, dict)]
        if len(set(ids)) != len(reqs):
            return _error(400, "BadRequest", "Batch request ids must be unique.")
        with self.lock:
            self.batch_sizes.append(len(reqs))
        out = []
        for r in reqs:
            bad = set(r) - BATCH_FIELDS or not {"id", "method", "url"} <= set(r)
            if bad or not str(r["url"]).startswith("/"):
                return _error(400, "BadRequest", "Invalid batch request")
            inner = b""
            if "body" in r:
                ctype = {k.lower(): v for k, v in (r.get("headers") or {}).items()}
                if "application/json" not in ctype.get("content-type", ""):
                    return _error(400, "BadRequest", "Content-Type header required with a body")
                inner = json.dumps(r["body"]).encode()
            method, url = str(r["method"]).upper(), str(r["url"])
            status, hdrs, data_ = self.call(
                method, url, self._throttle, partial(self._graph, method, url, inner)
            )
            answer: dict[str, Any] = {"id": r["id"], "status": status, "headers": hdrs}
            if data_:
                answer["body"] = json.loads(data_)
            out.append(answer)
        self._random.shuffle(out)
        return json_reply(200, {"responses": out})
