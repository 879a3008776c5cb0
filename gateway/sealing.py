"""AES-GCM sealing of secrets at rest (pending passwords, TOTP seeds) under a key file.

The key lives in a file outside the database, mode 0600; the daemon refuses looser permissions.
Each sealed value carries a fresh 96-bit nonce and is bound to its purpose by associated data,
so a sealed TOTP seed cannot be passed off as a pending password.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import ConfigError
from gateway.settings import check_private

KEY_BYTES = 32
NONCE_BYTES = 12


def create_key_file(path: Path) -> bool:
    """Create a new random key file (0600) unless one exists; True if created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(AESGCM.generate_key(bit_length=KEY_BYTES * 8))
    return True


class Sealer:
    """Seal and open small secrets with AES-256-GCM."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ConfigError(f"sealing key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_file(cls, path: Path) -> Sealer:
        """Load the key from a private key file."""
        check_private(path)
        return cls(path.read_bytes())

    def seal(self, plaintext: str, purpose: str) -> bytes:
        """Encrypt ``plaintext`` for ``purpose``; returns nonce + ciphertext."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext.encode(), purpose.encode())

    def open(self, sealed: bytes, purpose: str) -> str:
        """Decrypt a value sealed for ``purpose``."""
        try:
            data = self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], purpose.encode())
        except InvalidTag:
            raise ConfigError("sealed value does not open with this key") from None
        return data.decode()

    def __repr__(self) -> str:
        return "Sealer(<key hidden>)"
