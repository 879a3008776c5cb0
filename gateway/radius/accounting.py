"""Accounting-Request -> a session record (Start, Interim-Update, Stop, Accounting-On/Off)."""

from __future__ import annotations

from pyrad import packet as rp

from gateway.radius import wire
from gateway.radius.sessions import Report

STATUS = {
    1: "start",
    2: "stop",
    3: "interim",
    7: "on",
    8: "off",
    "Start": "start",
    "Stop": "stop",
    "Interim-Update": "interim",
    "Accounting-On": "on",
    "Accounting-Off": "off",
}


def authentic(pkt: rp.AcctPacket) -> bool:
    """The Request Authenticator (and a Message-Authenticator, if present) verify."""
    try:
        if not pkt.VerifyAcctRequest():
            return False
    except Exception:  # noqa: BLE001
        return False
    return not wire.has_attribute(pkt, wire.MESSAGE_AUTHENTICATOR) or wire.ma_valid(
        pkt, zero_authenticator=True
    )


def report(pkt: rp.AcctPacket, resource: str, nas_address: str) -> Report | None:
    """The session record of an Accounting-Request; None when it cannot be used."""
    try:
        raw = (pkt.get("Acct-Status-Type") or [None])[0]
    except Exception:  # noqa: BLE001
        return None
    status = STATUS.get(raw) if raw is not None else None
    if status is None:
        return None
    session_id = wire.text(pkt, "Acct-Session-Id")
    user = wire.user_name(pkt)
    if status not in ("on", "off") and (not session_id or not user):
        return None
    return Report(
        resource=resource,
        nas_address=nas_address,
        status=status,
        acct_session_id=session_id[:253],
        username=user[:253],
        nas_ip=wire.text(pkt, "NAS-IP-Address")[:64],
        nas_identifier=wire.text(pkt, "NAS-Identifier")[:253],
        framed_ip=wire.text(pkt, "Framed-IP-Address")[:64],
    )
