"""A strict fake of Google's OAuth token endpoint and the Admin SDK Directory API (HTTPS, stdlib).

The token endpoint takes only the JWT-bearer grant and verifies the assertion's RS256 signature
with the service account's public certificate, its ``iss``, ``sub`` (the delegated admin),
``scope`` (exactly ``admin.directory.user``) and ``aud`` (always Google's token URI, whatever
``token_uri`` the client uses). The Directory part serves ``users.get/update/patch`` and
multipart ``/batch`` (at most 1,000 parts); unknown fields and parameters are refused; passwords
are 8–100 ASCII characters unless a ``hashFunction`` is given.
"""

from __future__ import annotations

import email
import email.policy
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from google.auth import jwt as gjwt

from tests.fakes import FakeServer, Reply, json_reply
from tests.fakes.certs import TlsFiles

SCOPE = "https://www.googleapis.com/auth/admin.directory.user"
GOOGLE_AUD = "https://oauth2.googleapis.com/token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
USERS = "/admin/directory/v1/users/"
WRITABLE = {
    "password",
    "hashFunction",
    "changePasswordAtNextLogin",
    "suspended",
    "name",
    "orgUnitPath",
    "archived",
    "includeInGlobalAddressList",
}
BOOLEANS = {"changePasswordAtNextLogin", "suspended", "archived", "includeInGlobalAddressList"}
QUERY = {"GET": {"alt", "fields", "projection", "viewType", "customFieldMask"}}
HASHES = {"MD5", "SHA-1", "crypt"}


@dataclass
class GoogleUser:
    """One Workspace user as the fake keeps it."""

    id: str
    primaryEmail: str
    aliases: list[str] = field(default_factory=list)
    suspended: bool = False
    changePasswordAtNextLogin: bool = False
    password: str | None = None
    hashFunction: str | None = None
    orgUnitPath: str = "/"

    def view(self, fields: set[str] | None = None) -> dict[str, Any]:
        """The user resource as the API returns it (never the password)."""
        full = {
            "kind": "admin#directory#user",
            "id": self.id,
            "primaryEmail": self.primaryEmail,
            "aliases": list(self.aliases),
            "suspended": self.suspended,
            "changePasswordAtNextLogin": self.changePasswordAtNextLogin,
            "orgUnitPath": self.orgUnitPath,
        }
        return {k: v for k, v in full.items() if fields is None or k in fields}


def google_error(status: int, reason: str, message: str, headers: Any = None) -> Reply:
    """An error body in Google's shape, with ``error.errors[].reason``."""
    body = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
        }
    }
    return json_reply(status, body, headers)


class FakeDirectory(FakeServer):
    """Google token endpoint + Directory users, with state, faults and counters."""

    def __init__(
        self, tls: TlsFiles, *, client_email: str, public_cert_pem: str, admin: str
    ) -> None:
        super().__init__(tls)
        self.client_email = client_email
        self.public_cert_pem = public_cert_pem
        self.admin = admin
        self.users: dict[str, GoogleUser] = {}
        self.tokens: set[str] = set()
        self.token_requests = 0
        self.token_rejections: list[str] = []
        self.banned: dict[str, str] = {}
        self.batch_sizes: list[int] = []
        self.key_path: Path | None = None  # the service-account key file the tests wrote
        self._next_id = 100000
        self.add_user(admin)

    def add_user(self, primary: str, aliases: tuple[str, ...] = ()) -> GoogleUser:
        """Create a user with a numeric id."""
        with self.lock:
            self._next_id += 1
            user = GoogleUser(str(self._next_id), primary, list(aliases))
            self.users[user.id] = user
        return user

    def user(self, key: str) -> GoogleUser | None:
        """A user by id, primary e-mail or alias (case-insensitive)."""
        if key in self.users:
            return self.users[key]
        low = key.lower()
        for u in self.users.values():
            if u.primaryEmail.lower() == low or low in (a.lower() for a in u.aliases):
                return u
        return None

    @property
    def token_uri(self) -> str:
        """The token URI to configure."""
        return f"{self.base}/token"

    # -- routing ----------------------------------------------------------------------------

    def route(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        """Token endpoint, batch endpoint or a Directory call."""
        path = urlsplit(target).path
        if path == "/token" and method == "POST":
            return self._token(body)
        if path == "/batch" and method == "POST":
            return self._batch(headers, body)
        return self._directory_call(method, target, headers, body)

    def _directory_call(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> Reply:
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            return google_error(401, "authError", "Invalid Credentials")
        return self.call(method, target, self._throttle, lambda: self._users(method, target, body))

    def _throttle(self, wait: float) -> Reply:
        seconds = max(1, int(wait + 0.999))
        return google_error(
            403, "userRateLimitExceeded", "User Rate Limit Exceeded", {"Retry-After": str(seconds)}
        )

    def _token(self, body: bytes) -> Reply:
        with self.lock:
            self.token_requests += 1
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if set(form) != {"assertion", "grant_type"} or form["grant_type"] != JWT_GRANT:
            return json_reply(400, {"error": "unsupported_grant_type"})
        try:
            decode: Any = gjwt.decode
            claims = decode(form["assertion"], certs=self.public_cert_pem, audience=GOOGLE_AUD)
        except ValueError as exc:
            self.token_rejections.append(f"signature: {exc}")
            return json_reply(400, {"error": "invalid_grant", "error_description": "Invalid JWT"})
        problems = []
        if claims.get("iss") != self.client_email:
            problems.append("iss")
        if claims.get("sub") != self.admin:
            problems.append("sub")
        if claims.get("scope") != SCOPE:
            problems.append("scope")
        if problems:
            self.token_rejections.append(",".join(problems))
            return json_reply(
                401,
                {
                    "error": "unauthorized_client",
                    "error_description": "Client is unauthorized to retrieve access tokens "
                    "using this method, or client not authorized for any of the scopes requested.",
                },
            )
        token = "ya29.fake-" + secrets.token_hex(16)
        with self.lock:
            self.tokens.add(token)
        return json_reply(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    # -- Directory ----------------------------------------------------------------------------

    def _users(self, method: str, target: str, body: bytes) -> Reply:
        parts = urlsplit(target)
        if not parts.path.startswith(USERS) or "/" in parts.path[len(USERS) :]:
            return google_error(404, "notFound", "Not Found")
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        allowed = QUERY.get(method, {"alt", "fields"})
        if set(query) - allowed:
            bad = sorted(set(query) - allowed)[0]
            return google_error(400, "invalidParameter", f"Invalid parameter: {bad}")
        fields = {f.strip() for f in query["fields"].split(",")} if "fields" in query else None
        key = unquote(parts.path[len(USERS) :])
        with self.lock:
            user = self.user(key)
            if user is None:
                return google_error(404, "notFound", "Resource Not Found: userKey")
            if method == "GET":
                return json_reply(200, user.view(fields))
            if method in ("PUT", "PATCH"):
                return self._update(user, body, fields)
        return google_error(405, "httpMethodNotAllowed", "Method not allowed")

    def _update(self, user: GoogleUser, body: bytes, fields: set[str] | None) -> Reply:
        try:
            data = json.loads(body or b"null")
        except ValueError:
            return google_error(400, "parseError", "Parse Error")
        if not isinstance(data, dict):
            return google_error(400, "invalid", "Invalid Input")
        unknown = set(data) - WRITABLE
        if unknown:
            return google_error(
                400, "invalid", f"Invalid Input: unknown field {sorted(unknown)[0]}"
            )
        for name in BOOLEANS & set(data):
            if not isinstance(data[name], bool):
                return google_error(400, "invalid", f"Invalid Input: {name}")
        password = data.get("password")
        if password is not None:
            hashed = data.get("hashFunction")
            if hashed is not None and hashed not in HASHES:
                return google_error(400, "invalid", "Invalid Input: hashFunction")
            if hashed is None and (not 8 <= len(password) <= 100 or not password.isascii()):
                return google_error(400, "invalid", "Invalid Password")
            if password in self.banned:
                return google_error(400, "invalid", self.banned[password])
            user.password = password
            user.hashFunction = hashed
        for name in ("suspended", "changePasswordAtNextLogin"):
            if name in data:
                setattr(user, name, data[name])
        if "orgUnitPath" in data:
            user.orgUnitPath = str(data["orgUnitPath"])
        return json_reply(200, user.view(fields))

    def _batch(self, headers: dict[str, str], body: bytes) -> Reply:
        ctype = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
        if not ctype.startswith("multipart/mixed"):
            return google_error(400, "badContent", "Batch needs multipart/mixed")
        msg = email.message_from_bytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body, policy=email.policy.HTTP
        )
        parts = list(msg.iter_parts())
        if not parts or len(parts) > 1000:
            return google_error(400, "invalid", "A batch holds 1 to 1000 calls")
        with self.lock:
            self.batch_sizes.append(len(parts))
        outer_auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        boundary = "batch_" + secrets.token_hex(8)
        out = []
        for part in parts:
            if part.get_content_type() != "application/http":
                return google_error(400, "invalid", "Each part must be application/http")
            cid = str(part["Content-ID"] or "").strip("<>")
            raw = part.get_payload(decode=True)
            assert isinstance(raw, bytes)
            head, _, inner_body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
            lines = head.decode().split("\n")
            method, target, _ = lines[0].split(" ", 2)
            inner = dict(line.split(": ", 1) for line in lines[1:] if line)
            inner.setdefault("Authorization", outer_auth)
            status, hdrs, data = self._directory_call(method, target, inner, inner_body)
            extra = "".join(f"{k}: {v}\r\n" for k, v in hdrs.items() if k.lower() != "content-type")
            out.append(
                f"--{boundary}\r\nContent-Type: application/http\r\n"
                f"Content-ID: <response-{cid}>\r\n\r\n"
                f"HTTP/1.1 {status} {'OK' if status < 300 else 'Error'}\r\n"
                f"Content-Type: application/json; charset=UTF-8\r\n{extra}"
                f"Content-Length: {len(data)}\r\n\r\n{data.decode()}\r\n"
            )
        payload = ("".join(out) + f"--{boundary}--\r\n").encode()
        return 200, {"Content-Type": f"multipart/mixed; boundary={boundary}"}, payload
