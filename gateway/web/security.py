"""Web security plumbing: response headers, the client address, cookie flags, login throttles.

Every response gets a strict CSP (no scripts at all, ``frame-ancestors 'none'``), ``nosniff``,
``Referrer-Policy: no-referrer`` and, except static files, ``Cache-Control: no-store`` (token,
login and admin pages must never sit in a cache). The client address comes from
``X-Forwarded-For`` only when the TCP peer is one of ``settings.http.trusted_proxies``; the
rightmost address that is not a trusted proxy is the client. Cookies are ``Secure`` unless the
configured ``base_url`` is plain http on a loopback host (local development).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import deque
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
STATIC_PREFIX = "/static/"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def base_headers(*, https: bool) -> dict[str, str]:
    """The headers every response carries."""
    headers = {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
    }
    if https:
        headers["Strict-Transport-Security"] = "max-age=31536000"
    return headers


class SecurityHeaders:
    """ASGI middleware adding the security headers (a route may set its own CSP first)."""

    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.headers = base_headers(https=https)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Wrap ``send`` to add the headers to the response start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith(STATIC_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    if name not in headers:
                        headers[name] = value
                if not static:
                    headers["Cache-Control"] = "no-store"
                    headers["Pragma"] = "no-cache"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """Parse trusted proxy entries (addresses or CIDR networks)."""
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in items if item.strip())


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address, nets: tuple[Network, ...]
) -> bool:
    return any(addr in net for net in nets)


def client_address(request: Request, trusted: tuple[Network, ...]) -> str:
    """The client's address; ``X-Forwarded-For`` counts only behind a trusted proxy."""
    peer_text = request.client.host if request.client else ""
    peer = _ip(peer_text)
    if peer is None or not _trusted(peer, trusted):
        return peer_text
    hops: list[str] = []
    for header in request.headers.getlist("x-forwarded-for"):
        hops.extend(part for part in header.split(",") if part.strip())
    for hop in reversed(hops):
        addr = _ip(hop)
        if addr is None:
            return peer_text  # garbage from a proxy: fall back to the peer
        if not _trusted(addr, trusted):
            return str(addr)
    return str(_ip(hops[0])) if hops else peer_text


def is_https(base_url: str) -> bool:
    """True when the portal is served over https."""
    return urlsplit(base_url).scheme == "https"


def cookie_secure(base_url: str) -> bool:
    """``Secure`` cookies, unless ``base_url`` is plain http on a loopback host (development)."""
    parts = urlsplit(base_url)
    if parts.scheme == "https":
        return True
    host = parts.hostname or ""
    if host == "localhost":
        return False
    addr = _ip(host)
    return not (addr is not None and addr.is_loopback)


class RateLimiter:
    """Sliding-window limit per key (client address) in this process: ``limit`` per ``window``."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Count one attempt for ``key``; False when over the limit."""
        now = time.monotonic()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            if len(self._hits) > 10000:
                self._hits = {
                    k: v for k, v in self._hits.items() if v and v[-1] > now - self.window
                }
            return True
