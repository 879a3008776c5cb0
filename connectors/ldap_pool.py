"""A small pool of bound ldap3 connections used from asyncio through a bounded thread pool.

ldap3 is blocking, so every operation runs in a worker thread; at most ``size`` run at once and
each takes an idle bound connection (or opens one). A connection that failed at the socket level
is dropped; one taken from the idle list that turns out stale (the server restarted) is replaced
and the operation retried once, which is safe because every connector operation is idempotent.
Library exceptions pass through untranslated: the connector translates them once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar
from urllib.parse import urlsplit

from ldap3 import NONE, SIMPLE, Connection, Server, Tls
from ldap3.core.exceptions import (
    LDAPCommunicationError,
    LDAPException,
    LDAPOperationResult,
    LDAPSessionTerminatedByServerError,
    LDAPSocketOpenError,
    LDAPStartTLSError,
)

from connectors.ldap_config import LdapConfig
from gateway.errors import GatewayError
from gateway.settings import secret_from_ref

T = TypeVar("T")

_STALE = (LDAPCommunicationError, LDAPSessionTerminatedByServerError)
# the server answered (or our own checks refused): the connection itself is still good
_HEALTHY = (LDAPOperationResult, GatewayError)


class TlsVerifyError(LDAPException):  # type: ignore[misc]
    """The server's certificate did not verify against the configured CA (a setup error)."""


def _tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        text = str(seen)
        if "CERTIFICATE_VERIFY_FAILED" in text or "doesn't match" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return any("CERTIFICATE_VERIFY_FAILED" in str(a) for a in getattr(exc, "args", ()))


def discard(conn: Connection) -> None:
    """Unbind, and make sure the socket is closed even when the unbind cannot be sent."""
    with contextlib.suppress(Exception):
        conn.unbind()
    sock = getattr(conn, "socket", None)
    if sock is not None:
        with contextlib.suppress(Exception):
            sock.close()


class VerifiedTls(Tls):  # type: ignore[misc]
    """TLS through Python's own context: CA chain and host name (or ``tls_hostname``) checked.

    ldap3's built-in check calls the deprecated ``ssl.match_hostname``; this uses the standard
    library's verification instead. The context (reading the CA file) is built on first use.
    """

    def __init__(self, ca_file: str | None, hostname: str | None) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file)
        self._ca_file = ca_file
        self._hostname = hostname
        self._context: ssl.SSLContext | None = None

    def wrap_socket(self, connection: Connection, do_handshake: bool = False) -> None:
        """Wrap the connection's socket, verifying the server certificate."""
        if self._context is None:
            self._context = ssl.create_default_context(cafile=self._ca_file)
            self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        connection.socket = self._context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=self._hostname or connection.server.host,
        )


class LdapPool:
    """Bound connections to one directory, handed out to worker threads."""

    def __init__(self, config: LdapConfig, name: str) -> None:
        self.config = config
        self._name = name
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def _server(self, url: str) -> Server:
        cfg = self.config
        parts = urlsplit(url)
        tls = None
        if cfg.tls != "none":
            tls = VerifiedTls(str(cfg.ca_file) if cfg.ca_file else None, cfg.tls_hostname)
        return Server(
            parts.hostname,
            port=parts.port or (636 if parts.scheme == "ldaps" else 389),
            use_ssl=parts.scheme == "ldaps",
            tls=tls,
            get_info=NONE,
            connect_timeout=cfg.connect_timeout,
        )

    def connect(self, user: str, password: str, *, bind: bool = True) -> Connection:
        """Open a connection (first reachable URL), StartTLS when configured, then bind."""
        last: Exception | None = None
        # fresh Server objects: ldap3 remembers an address as unavailable after one failure
        for server in [self._server(url) for url in self.config.urls]:
            conn = Connection(
                server,
                user=user,
                password=password,
                authentication=SIMPLE,
                raise_exceptions=True,
                receive_timeout=math.ceil(self.config.timeout),
                auto_referrals=False,
                read_only=False,
            )
            try:
                conn.open()
                if self.config.tls == "starttls":
                    conn.start_tls()
            except (LDAPSocketOpenError, LDAPStartTLSError, LDAPCommunicationError) as exc:
                discard(conn)
                if _tls_failure(exc):
                    raise TlsVerifyError(f"TLS verification failed for {server.host}") from exc
                last = exc
                continue
            except BaseException:
                discard(conn)
                raise
            if bind:
                try:
                    conn.bind()
                except Exception:
                    discard(conn)
                    raise
            return conn
        assert last is not None
        raise last

    def _open(self) -> Connection:
        password = secret_from_ref(self.config.bind_password).get_secret_value()
        return self.connect(self.config.bind_dn, password)

    def _take(self) -> tuple[Connection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._open(), False

    def _give(self, conn: Connection) -> None:
        with self._lock:
            if len(self._idle) < self.config.pool_size:
                self._idle.append(conn)
                return
        discard(conn)

    def _call(self, fn: Callable[[Connection], T]) -> T:
        conn, reused = self._take()
        try:
            result = fn(conn)
        except _STALE:
            discard(conn)
            if not reused:
                raise
            conn = self._open()
            try:
                result = fn(conn)
            except _HEALTHY:
                self._give(conn)
                raise
            except BaseException:
                discard(conn)
                raise
        except _HEALTHY:
            self._give(conn)
            raise
        except BaseException:
            discard(conn)
            raise
        self._give(conn)
        return result

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(bound_connection)`` in a worker thread and return its result."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.config.pool_size, thread_name_prefix=f"ldap-{self._name}"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    def close(self) -> None:
        """Unbind idle connections and stop the worker threads (a later ``run`` starts afresh)."""
        with self._lock:
            idle, self._idle = self._idle, []
            executor, self._executor = self._executor, None
        for conn in idle:
            discard(conn)
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
