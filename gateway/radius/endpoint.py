"""A UDP socket on the asyncio loop that reads every queued datagram per wake-up.

asyncio's datagram transport reads one datagram per readiness event, so under load every
request costs a full loop iteration. This endpoint drains up to ``batch`` datagrams each time
the socket is readable and sends replies straight away (a reply that does not fit the socket
buffer is dropped, as UDP allows; the NAS retransmits and gets the cached reply).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("gateway.radius")
Addr = tuple[Any, ...]
RECEIVE_BUFFER = 4 * 1024 * 1024


class Sender(Protocol):
    """Where replies go."""

    def sendto(self, data: bytes, addr: Addr) -> None: ...

    def is_closing(self) -> bool: ...


class Endpoint:
    """One bound UDP socket handing datagrams to ``handler(endpoint, data, addr)``."""

    def __init__(
        self,
        sock: socket.socket,
        handler: Callable[[Endpoint, bytes, Addr], None],
        batch: int = 64,
    ) -> None:
        self.sock = sock
        self.handler = handler
        self.batch = batch
        self.dropped = 0
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)

    @classmethod
    def open(
        cls, host: str, port: int, handler: Callable[[Endpoint, bytes, Addr], None]
    ) -> Endpoint:
        """Bind ``host``:``port`` (IPv6 when the host has a colon) and start reading."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:  # so "[::]:1812" and "0.0.0.0:1812" can both bind
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.bind((host, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return cls(sock, handler)

    @property
    def address(self) -> tuple[str, int]:
        """The bound address and port."""
        name = self.sock.getsockname()
        return str(name[0]), int(name[1])

    def _readable(self) -> None:
        for _ in range(self.batch):
            try:
                data, addr = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP errors surfacing on the socket
                log.debug("radius socket error: %s", type(exc).__name__)
                return
            self.handler(self, data, addr)

    def sendto(self, data: bytes, addr: Addr) -> None:
        """Send one reply now; dropped (and counted) when the socket buffer is full."""
        if self._closed:
            return
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.dropped += 1
        except OSError as exc:
            log.debug("radius send failed: %s", type(exc).__name__)

    def is_closing(self) -> bool:
        """True once closed."""
        return self._closed

    def close(self) -> None:
        """Stop reading and close the socket."""
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
