"""Password rules (pure): NFKC, length in code points, identity words, blocklist; generation.

Rules, in order: length ``min_length``..``max_length`` code points after NFKC (never truncated),
not containing the username, the e-mail or its local part (case-insensitive), not on the bundled
blocklist of common passwords. History is checked by the service against stored hashes.
No composition rules (NIST SP 800-63B).
"""

from __future__ import annotations

import secrets
import string
import unicodedata
from functools import lru_cache
from importlib import resources

from gateway.errors import PolicyViolation
from gateway.orgpolicy import PasswordRules

MIN_IDENTITY_WORD = 3


def normalise(password: str) -> str:
    """NFKC-normalise a password; every path (portal, RADIUS, LDAP, API, CLI) uses this."""
    return unicodedata.normalize("NFKC", password)


def identity_words(username: str, email: str) -> list[str]:
    """Words a password must not contain: the username, the e-mail and its local part."""
    words = {normalise(username).casefold(), normalise(email).casefold()}
    words.add(normalise(email).split("@", 1)[0].casefold())
    return sorted(w for w in words if len(w) >= MIN_IDENTITY_WORD)


@lru_cache(maxsize=1)
def blocklist() -> frozenset[str]:
    """The bundled list of common passwords, case-folded."""
    text = resources.files("gateway").joinpath("data/blocklist.txt").read_text(encoding="utf-8")
    return frozenset(
        line.strip().casefold() for line in text.splitlines() if line.strip() and line[0] != "#"
    )


def violations(password: str, rules: PasswordRules, username: str, email: str) -> list[str]:
    """Every rule ``password`` breaks, as messages safe to show; empty when it passes."""
    pw = normalise(password)
    found: list[str] = []
    length = len(pw)
    if length < rules.min_length:
        found.append(f"must be at least {rules.min_length} characters long")
    if length > rules.max_length:
        found.append(f"must be at most {rules.max_length} characters long")
    if rules.forbid_identity:
        folded = pw.casefold()
        if any(word in folded for word in identity_words(username, email)):
            found.append("must not contain your username or e-mail address")
    if rules.blocklist and pw.casefold() in blocklist():
        found.append("is too common; choose another")
    return found


def check(password: str, rules: PasswordRules, username: str, email: str) -> str:
    """Return the normalised password, or raise ``PolicyViolation`` listing what it breaks."""
    found = violations(password, rules, username, email)
    if found:
        raise PolicyViolation("password", "The password " + "; ".join(found) + ".")
    return normalise(password)


_ALPHABET = string.ascii_letters + string.digits + "-_.!@#%+="


def generate(length: int = 20) -> str:
    """A random password that passes every target's rules (all four character classes)."""
    while True:
        candidate = "".join(secrets.choice(_ALPHABET) for _ in range(length))
        if (
            any(c.islower() for c in candidate)
            and any(c.isupper() for c in candidate)
            and any(c.isdigit() for c in candidate)
            and any(not c.isalnum() for c in candidate)
        ):
            return candidate
