"""Disconnect-Request sender (RFC 5176): end every live session of an account at its NAS.

Each request carries User-Name, Acct-Session-Id (and NAS-IP-Address / NAS-Identifier when the
NAS reported them) and a Message-Authenticator; it is retransmitted unchanged up to
``dae_attempts`` times. A Disconnect-ACK, or a NAK saying the session is unknown, ends the
session record; an unanswered session stays live, and the caller raises ``TransientError`` so
the dispatcher tries again later.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from pyrad import packet as rp

from connectors.radius import RadiusConfig
from gateway.clock import SystemClock
from gateway.radius import sessions, wire

log = logging.getLogger("gateway.radius")
SESSION_NOT_FOUND = 503


class _Reply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.queue.put_nowait(data)


async def send_disconnect(
    host: str,
    port: int,
    secret: bytes,
    attributes: dict[str, str],
    *,
    timeout: float,
    attempts: int,
) -> int | None:
    """Send one Disconnect-Request; the reply code (ACK 41 / NAK 42), or None if unanswered."""
    request = rp.CoAPacket(code=rp.DisconnectRequest, secret=secret, dict=wire.dictionary())
    request.add_message_authenticator()
    for name, value in attributes.items():
        if value:
            request.AddAttribute(name, value)
    raw = request.RequestPacket()
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    transport, proto = await loop.create_datagram_endpoint(
        _Reply, remote_addr=(host, port), family=family
    )
    try:
        for _ in range(attempts):
            transport.sendto(raw)
            deadline = loop.time() + timeout
            while (left := deadline - loop.time()) > 0:
                try:
                    data = await asyncio.wait_for(proto.queue.get(), left)
                except TimeoutError:
                    break
                code = _verified(request, data)
                if code is not None:
                    return code
        return None
    finally:
        transport.close()


def _verified(request: rp.CoAPacket, data: bytes) -> int | None:
    try:
        reply = rp.CoAPacket(packet=data, secret=request.secret, dict=wire.dictionary())
    except Exception:  # noqa: BLE001 - garbage is ignored
        return None
    if reply.code not in (rp.DisconnectACK, rp.DisconnectNAK):
        return None
    if not request.VerifyReply(reply, data):
        return None
    if reply.code == rp.DisconnectNAK:
        try:
            causes = list(reply.get("Error-Cause") or [])
        except Exception:  # noqa: BLE001
            causes = []
        if SESSION_NOT_FOUND in causes or "Session-Context-Not-Found" in causes:
            ack: int = rp.DisconnectACK
            return ack  # nothing left to end
    code: int = reply.code
    return code


async def disconnect_account(resource: str, config: RadiusConfig, account_key: str) -> int:
    """Disconnect every live session of ``account_key``; returns how many remain unanswered."""
    store = sessions.bound()
    loop = asyncio.get_running_loop()
    live = await loop.run_in_executor(None, sessions.live, store, resource, account_key)

    async def one(s: sessions.LiveSession) -> bool:
        client = config.client_for(s.nas_address)
        if client is None:
            log.warning("no RADIUS client for NAS %s any more; session left", s.nas_address)
            return False
        attributes = {
            "User-Name": s.username,
            "Acct-Session-Id": s.acct_session_id,
            "NAS-IP-Address": s.nas_ip,
            "NAS-Identifier": s.nas_identifier,
        }
        code = await send_disconnect(
            s.nas_address,
            client.dae_port or config.dae_port,
            client.shared_secret(),
            attributes,
            timeout=config.dae_timeout_seconds,
            attempts=config.dae_attempts,
        )
        if code is None:
            return False
        reason = "disconnect-ack" if code == rp.DisconnectACK else "disconnect-nak"
        await loop.run_in_executor(None, sessions.end, store, s.id, reason, SystemClock().now())
        return True

    results = await asyncio.gather(*(one(s) for s in live))
    return sum(1 for ok in results if not ok)
