"""RADIUS wire helpers over pyrad: the shipped dictionary, decoding and signed replies.

pyrad decodes requests and encodes attribute values with the shipped dictionary. The hot steps
are done here with one C call each: the Message-Authenticator check (RFC 3579), User-Password
decryption (RFC 2865 section 5.2) and reply signing. Every reply carries a Message-Authenticator
as its first attribute and echoes the request's Proxy-State attributes in order. Nothing here
logs a packet or a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import struct
from collections.abc import Mapping
from functools import lru_cache
from importlib.resources import files
from typing import Any

from pyrad import packet as rp
from pyrad.dictionary import Dictionary

MIN_PACKET = 20
MAX_PACKET = 4096  # RFC 2865 section 3
MAX_PASSWORD_OCTETS = 128
ACCESS_REQUEST = rp.AccessRequest
ACCESS_ACCEPT = rp.AccessAccept
ACCESS_REJECT = rp.AccessReject
ACCESS_CHALLENGE = rp.AccessChallenge
ACCOUNTING_REQUEST = rp.AccountingRequest
ACCOUNTING_RESPONSE = rp.AccountingResponse
MESSAGE_AUTHENTICATOR = 80
PROXY_STATE = 33
USER_NAME = 1
USER_PASSWORD = 2
STATE = 24
# attributes a policy may not put into a reply (they belong to the protocol, not to policy)
RESERVED = frozenset(
    {
        "User-Password",
        "Message-Authenticator",
        "Proxy-State",
        "State",
        "EAP-Message",
        "CHAP-Password",
    }
)


class WireError(Exception):
    """A packet that cannot be decoded; the listener discards it."""


@lru_cache(maxsize=1)
def dictionary() -> Dictionary:
    """The dictionary shipped in the package (``gateway/radius/gateway.dict``)."""
    text = files("gateway.radius").joinpath("gateway.dict").read_text(encoding="utf-8")
    return Dictionary(io.StringIO(text))


def check_reply_attributes(attrs: Mapping[str, Any]) -> None:
    """Raise ValueError unless every name is a known, non-reserved attribute with a valid value."""
    d = dictionary()
    probe = rp.AuthPacket(code=ACCESS_ACCEPT, secret=b"probe", authenticator=bytes(16), dict=d)
    for key, value in attrs.items():
        name = key.split(":", 1)[0]
        if name not in d.attributes:
            raise ValueError(f"unknown RADIUS attribute {name!r}")
        if name in RESERVED:
            raise ValueError(f"{name} cannot be set by policy")
        for v in value if isinstance(value, list) else [value]:
            try:
                probe.AddAttribute(key, v)
                probe.ReplyPacket()
            except Exception as exc:  # noqa: BLE001 - pyrad raises assorted types
                raise ValueError(f"invalid value for {key}: {type(exc).__name__}") from None
            del probe[name]


def decode_access(data: bytes, secret: bytes) -> rp.AuthPacket:
    """Decode an Access-Request (raises ``WireError``)."""
    try:
        return rp.AuthPacket(packet=data, secret=secret, dict=dictionary())
    except Exception as exc:  # noqa: BLE001 - pyrad raises PacketError, KeyError, struct.error …
        raise WireError(type(exc).__name__) from None


def decode_accounting(data: bytes, secret: bytes) -> rp.AcctPacket:
    """Decode an Accounting-Request (raises ``WireError``)."""
    try:
        return rp.AcctPacket(packet=data, secret=secret, dict=dictionary())
    except Exception as exc:  # noqa: BLE001
        raise WireError(type(exc).__name__) from None


def has_attribute(pkt: rp.Packet, code: int) -> bool:
    """True when the raw attribute ``code`` is present."""
    return dict.__contains__(pkt, code)


def raw_values(pkt: rp.Packet, code: int) -> list[bytes]:
    """The raw values of attribute ``code``."""
    values: list[bytes] = list(dict.get(pkt, code, []))
    return values


def _offset(raw: bytes, code: int) -> int | None:
    """Where attribute ``code`` starts in a raw packet (its first occurrence), or None."""
    i, end = 20, len(raw)
    while i + 2 <= end:
        length = raw[i + 1]
        if length < 2:
            return None
        if raw[i] == code:
            return i
        i += length
    return None


def ma_valid(pkt: rp.Packet, *, zero_authenticator: bool = False) -> bool:
    """Verify the Message-Authenticator of a received request (False on any problem).

    Access-Request: HMAC-MD5 over the packet as received with the value zeroed (RFC 3579
    section 3.2); Accounting-Request (``zero_authenticator``): also with a zero Authenticator.
    """
    values = raw_values(pkt, MESSAGE_AUTHENTICATOR)
    raw = pkt.raw_packet
    if len(values) != 1 or len(values[0]) != 16 or not raw:
        return False
    at = _offset(raw, MESSAGE_AUTHENTICATOR)
    if at is None or raw[at + 1] != 18:
        return False
    head = raw[:4] + bytes(16) + raw[20:at] if zero_authenticator else raw[:at]
    expected = hmac.digest(pkt.secret, head + raw[at : at + 2] + bytes(16) + raw[at + 18 :], "md5")
    return hmac.compare_digest(expected, values[0])


def user_name(pkt: rp.Packet) -> str:
    """The User-Name as text ('' when absent); undecodable octets are replaced."""
    values = raw_values(pkt, USER_NAME)
    return values[0].decode("utf-8", "replace") if values else ""


def text(pkt: rp.Packet, name: str) -> str:
    """The first value of a string attribute, or '' (undecodable values count as absent)."""
    try:
        values = pkt.get(name) or []
    except Exception:  # noqa: BLE001
        return ""
    value = values[0] if values else ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def password(pkt: rp.AuthPacket) -> str | None:
    """The decrypted User-Password (RFC 2865 section 5.2).

    None when absent, repeated, not a multiple of 16 octets, over 128 octets or not UTF-8.
    """
    values = raw_values(pkt, USER_PASSWORD)
    if len(values) != 1:
        return None
    raw = values[0]
    if not raw or len(raw) > MAX_PASSWORD_OCTETS or len(raw) % 16:
        return None
    secret, last = pkt.secret, pkt.authenticator
    out = bytearray()
    for i in range(0, len(raw), 16):
        block = raw[i : i + 16]
        key = hashlib.md5(secret + last).digest()  # noqa: S324 - RFC 2865 is defined on MD5
        out += (int.from_bytes(block, "big") ^ int.from_bytes(key, "big")).to_bytes(16, "big")
        last = block
    try:
        return bytes(out).rstrip(b"\x00").decode("utf-8")
    except UnicodeDecodeError:
        return None


@lru_cache(maxsize=1024)
def encode_attributes(attributes: tuple[tuple[str, Any], ...]) -> bytes:
    """Attributes encoded with the shipped dictionary (pyrad), without header."""
    if not attributes:
        return b""
    probe = rp.AuthPacket(code=ACCESS_ACCEPT, id=0, secret=b"-", authenticator=bytes(16))
    probe.dict = dictionary()
    for name, value in attributes:
        probe.AddAttribute(name, value)
    raw: bytes = probe.ReplyPacket()
    return raw[20:]


def sign_reply(
    code: int,
    ident: int,
    request_authenticator: bytes,
    secret: bytes,
    proxy_states: list[bytes],
    attributes: bytes,
) -> bytes:
    """A reply with Message-Authenticator first, the Proxy-States echoed, then ``attributes``."""
    rest = b"".join(bytes((PROXY_STATE, len(p) + 2)) + p for p in proxy_states) + attributes
    header = struct.pack("!BBH", code, ident, 38 + len(rest))
    zeroed = b"\x50\x12" + bytes(16)
    ma = hmac.digest(secret, header + request_authenticator + zeroed + rest, "md5")
    body = b"\x50\x12" + ma + rest
    response = hashlib.md5(header + request_authenticator + body + secret).digest()  # noqa: S324
    return header + response + body


def access_reply(
    request: rp.AuthPacket, code: int, attributes: tuple[tuple[str, Any], ...] = ()
) -> bytes:
    """Encode a signed reply: Message-Authenticator first, Proxy-State echoed."""
    return sign_reply(
        code,
        request.id,
        request.authenticator,
        request.secret,
        raw_values(request, PROXY_STATE),
        encode_attributes(attributes),
    )


def accounting_reply(request: rp.AcctPacket) -> bytes:
    """Encode a signed Accounting-Response: Message-Authenticator first, Proxy-State echoed."""
    reply = request.CreateReply()
    reply.message_authenticator = True
    reply.add_message_authenticator()
    data: bytes = reply.ReplyPacket()
    return data
