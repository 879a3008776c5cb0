"""AES-GCM sealing: round trip, purpose binding, tamper detection, key file permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.sealing import KEY_BYTES, Sealer, create_key_file


def test_key_file_created_private_and_kept(tmp_path: Path) -> None:
    key = tmp_path / "sub" / "secret.key"
    assert create_key_file(key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = key.read_bytes()
    assert len(first) == KEY_BYTES
    assert not create_key_file(key)
    assert key.read_bytes() == first


def test_round_trip_and_fresh_nonces(tmp_path: Path) -> None:
    key = tmp_path / "k"
    create_key_file(key)
    sealer = Sealer.from_file(key)
    a, b = (
        sealer.seal("JBSWY3DPEHPK3PXP", "totp-seed"),
        sealer.seal("JBSWY3DPEHPK3PXP", "totp-seed"),
    )
    assert a != b and b"JBSWY3DP" not in a
    assert sealer.open(a, "totp-seed") == "JBSWY3DPEHPK3PXP" == sealer.open(b, "totp-seed")
    assert sealer.open(sealer.seal("pässwörd😀", "p"), "p") == "pässwörd😀"


def test_purpose_binding_tamper_and_wrong_key(tmp_path: Path) -> None:
    sealer = Sealer(os.urandom(KEY_BYTES))
    sealed = sealer.seal("secret", "totp-seed")
    with pytest.raises(ConfigError):
        sealer.open(sealed, "pending-password")
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(ConfigError):
        sealer.open(flipped, "totp-seed")
    with pytest.raises(ConfigError):
        Sealer(os.urandom(KEY_BYTES)).open(sealed, "totp-seed")
    with pytest.raises(ConfigError):
        Sealer(b"short")


def test_loose_key_file_refused(tmp_path: Path) -> None:
    key = tmp_path / "k"
    create_key_file(key)
    for mode in (0o640, 0o604, 0o660, 0o644):
        key.chmod(mode)
        with pytest.raises(ConfigError, match="readable by group or others"):
            Sealer.from_file(key)


def test_repr_hides_key() -> None:
    raw = os.urandom(KEY_BYTES)
    assert raw.hex() not in repr(Sealer(raw)) and "hidden" in repr(Sealer(raw))
