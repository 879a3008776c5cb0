"""TOTP (RFC 6238) rules (pure): ±1 step window, each code accepted once, attempt limit.

The last accepted time step is remembered per credential; a code for that step or an earlier
one is refused, so a code is accepted at most once. Wrong codes count towards the account's
TOTP attempt limit (admins: five), and exceeding it locks the account.
"""

from __future__ import annotations

import hmac
import unicodedata
from dataclasses import dataclass
from datetime import datetime

import pyotp

STEP_SECONDS = 30
WINDOW = 1


def new_seed() -> str:
    """A new base32 TOTP seed (160 bits)."""
    return pyotp.random_base32(32)


def provisioning_uri(seed: str, account: str, issuer: str) -> str:
    """The otpauth:// URI for a QR code."""
    return pyotp.TOTP(seed).provisioning_uri(name=account, issuer_name=issuer)


@dataclass(frozen=True)
class Check:
    """Result of checking one code: the matched step, or None when refused."""

    step: int | None


def check(seed: str, code: str, last_step: int | None, now: datetime) -> Check:
    """Match ``code`` against steps now±1 that are newer than ``last_step``."""
    code = unicodedata.normalize("NFKC", code).strip().replace(" ", "")
    if len(code) != 6 or not (code.isascii() and code.isdigit()):  # "١٢٣" passes isdigit()
        return Check(None)
    totp = pyotp.TOTP(seed)
    current = int(now.timestamp()) // STEP_SECONDS
    for step in range(current - WINDOW, current + WINDOW + 1):
        if last_step is not None and step <= last_step:
            continue
        if hmac.compare_digest(totp.at(step * STEP_SECONDS), code):
            return Check(step)
    return Check(None)


def code_at(seed: str, now: datetime) -> str:
    """The code an authenticator shows at ``now`` (tests and enrolment checks)."""
    return pyotp.TOTP(seed).at(int(now.timestamp()))
