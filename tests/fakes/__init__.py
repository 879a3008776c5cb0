"""Strict local HTTPS fakes of the cloud APIs (Entra ID + Graph, Google Directory).

Shared here: a TLS ``ThreadingHTTPServer`` run in a thread, faults injected on demand (a status
with headers and body, or a delay for timeouts), an optional token-bucket rate limit per call
(a call is one direct request or one part of a batch), and request counters.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from tests.fakes.certs import TlsFiles

Reply = tuple[int, dict[str, str], bytes]


def json_reply(status: int, obj: Any = None, headers: Mapping[str, str] | None = None) -> Reply:
    """A JSON response (no body when ``obj`` is None)."""
    hdrs = dict(headers or {})
    if obj is None:
        return status, hdrs, b""
    hdrs.setdefault("Content-Type", "application/json; charset=utf-8")
    return status, hdrs, json.dumps(obj).encode()


@dataclass
class Fault:
    """Answer calls matching ``method`` and ``path`` (a regex searched in the path) this way."""

    path: str = ""
    method: str = ""
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    times: int = 1

    def matches(self, method: str, path: str) -> bool:
        """True if this fault applies to the call."""
        return (not self.method or self.method == method) and re.search(self.path, path) is not None


class RateLimit:
    """A token bucket: ``rate`` calls per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else rate
        self._tokens = self.burst
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Consume one token; returns 0, or the seconds until one is available."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.rate


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeServer
    tls: ssl.SSLContext

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.fake.errors += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, headers, data = self.server.fake.dispatch(
            self.command, self.path, dict(self.headers.items()), body
        )
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any


class FakeServer:
    """Base of the fakes: TLS server thread, faults, rate limit, counters."""

    def __init__(self, tls: TlsFiles) -> None:
        self.tls = tls
        self.faults: list[Fault] = []
        self.rate_limit: RateLimit | None = None
        self.http_requests = 0
        self.calls = 0
        self.throttled = 0
        self.errors = 0
        self.seen: Counter[str] = Counter()
        self.log: list[tuple[float, str, str]] = []
        self.lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base(self) -> str:
        """``https://127.0.0.1:<port>``."""
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> Self:
        """Listen on a free port and serve in a daemon thread."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.tls.cert, self.tls.key)
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        server.tls = ctx
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def add_fault(self, fault: Fault) -> Fault:
        """Queue a fault; it answers the next ``fault.times`` matching calls."""
        with self.lock:
            self.faults.append(fault)
        return fault

    def fault_for(self, method: str, path: str) -> Fault | None:
        """The first queued fault for this call (consumed), or None."""
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and fault.matches(method, path):
                    fault.times -= 1
                    return fault
        return None

    def dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        """Count the HTTP request, apply outer faults, then route it."""
        with self.lock:
            self.http_requests += 1
        path = target.split("?", 1)[0]
        reply = self.faulted(method, path)
        if reply is not None:
            return reply
        return self.route(method, target, headers, body)

    def faulted(self, method: str, path: str) -> Reply | None:
        """Apply a matching fault (sleeping first for timeouts), or None."""
        fault = self.fault_for(method, path)
        if fault is None:
            return None
        if fault.delay:
            time.sleep(fault.delay)
        return json_reply(fault.status, fault.body, fault.headers)

    def call(
        self, method: str, target: str, throttle: Callable[[float], Reply], run: Callable[[], Reply]
    ) -> Reply:
        """One API call (direct or a batch part): count, fault, rate-limit, then ``run``."""
        path = target.split("?", 1)[0]
        with self.lock:
            self.calls += 1
            self.seen[f"{method} {path}"] += 1
            self.log.append((time.monotonic(), method, path))
        reply = self.faulted(method, path)
        if reply is not None:
            return reply
        if self.rate_limit is not None:
            wait = self.rate_limit.take()
            if wait > 0:
                with self.lock:
                    self.throttled += 1
                return throttle(wait)
        return run()

    def route(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        """Handle one HTTP request (overridden)."""
        raise NotImplementedError
