"""Throwaway keys for the HTTPS fakes: the shared test CA (tests.support.tlsca), RSA client keys."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.support.tlsca import TlsFiles

__all__ = ["TlsFiles", "rsa_identity", "service_account_key", "write_private"]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def rsa_identity(cn: str) -> tuple[str, str]:
    """A fresh RSA private key and a self-signed certificate for it, both PEM text."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    return _pem_key(key).decode(), cert.public_bytes(serialization.Encoding.PEM).decode()


def write_private(path: Path, text: str) -> Path:
    """Write a secret file with mode 0600 (the gateway refuses looser ones)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)
    return path


def service_account_key(
    out: Path, client_email: str, token_uri: str, identity: tuple[str, str] | None = None
) -> tuple[Path, str]:
    """Write a service-account JSON key file (0600); returns its path and the public cert PEM."""
    key_pem, cert_pem = identity or rsa_identity(client_email)
    info = {
        "type": "service_account",
        "project_id": "gateway-test",
        "private_key_id": "kid-" + os.urandom(4).hex(),
        "private_key": key_pem,
        "client_email": client_email,
        "client_id": "1234567890",
        "token_uri": token_uri,
    }
    return write_private(out, json.dumps(info)), cert_pem
