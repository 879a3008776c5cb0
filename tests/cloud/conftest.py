"""Fixtures: the HTTPS fakes and connectors pointed at them (secrets in 0600 files)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.google import GoogleConfig, GoogleConnector
from connectors.m365 import M365Config, M365Connector
from tests.fakes.certs import (
    TlsFiles,
    rsa_identity,
    service_account_key,
    write_private,
)
from tests.fakes.entra_graph import FakeGraph
from tests.fakes.google_directory import FakeDirectory
from tests.support.tlsca import make_tls_files

ADMIN = "admin@example.org"
SA_EMAIL = "gateway@gateway-test.iam.gserviceaccount.com"


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """One CA and server certificate for every fake in the session."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def graph(tls: TlsFiles) -> Iterator[FakeGraph]:
    """A running Entra + Graph fake that knows the client secret ``s3cr3t-value``."""
    fake = FakeGraph(tls, client_secret="s3cr3t-value").start()
    try:
        yield fake
    finally:
        fake.stop()


def m365_config(graph: FakeGraph, tls: TlsFiles, tmp: Path, **extra: object) -> M365Config:
    """Settings pointing the m365 connector at the fake."""
    secret = write_private(tmp / "m365.secret", "s3cr3t-value\n")
    values: dict[str, object] = {
        "tenant": graph.tenant,
        "client_id": graph.client_id,
        "client_secret": f"file:{secret}",
        "authority_host": graph.authority,
        "graph_url": graph.graph_url,
        "ca_bundle": str(tls.ca),
        "timeout_s": 2.0,
    }
    values.update(extra)
    return M365Config.model_validate(values)


@pytest.fixture
def m365(graph: FakeGraph, tls: TlsFiles, tmp_path: Path) -> Iterator[M365Connector]:
    """An m365 connector bound to the fake."""
    conn = M365Connector("office", m365_config(graph, tls, tmp_path))
    yield conn
    asyncio.run(conn.aclose())


@pytest.fixture(scope="session")
def sa_identity() -> tuple[str, str]:
    """The service account's RSA key and certificate (one per session: key generation is slow)."""
    return rsa_identity(SA_EMAIL)


@pytest.fixture
def directory(
    tls: TlsFiles, tmp_path: Path, sa_identity: tuple[str, str]
) -> Iterator[FakeDirectory]:
    """A running Google token + Directory fake with its service-account key file."""
    key_path = tmp_path / "sa.json"
    fake = FakeDirectory(tls, client_email=SA_EMAIL, public_cert_pem="", admin=ADMIN).start()
    _, cert = service_account_key(key_path, SA_EMAIL, fake.token_uri, sa_identity)
    fake.public_cert_pem = cert
    fake.key_path = key_path
    try:
        yield fake
    finally:
        fake.stop()


def google_config(directory: FakeDirectory, tls: TlsFiles, **extra: object) -> GoogleConfig:
    """Settings pointing the google connector at the fake."""
    values: dict[str, object] = {
        "service_account_key": f"file:{directory.key_path}",
        "admin_subject": ADMIN,
        "api_endpoint": directory.base + "/",
        "token_uri": directory.token_uri,
        "batch_uri": directory.base + "/batch",
        "ca_bundle": str(tls.ca),
        "timeout_s": 2.0,
    }
    values.update(extra)
    return GoogleConfig.model_validate(values)


@pytest.fixture
def google(directory: FakeDirectory, tls: TlsFiles) -> Iterator[GoogleConnector]:
    """A google connector bound to the fake."""
    conn = GoogleConnector("workspace", google_config(directory, tls))
    yield conn
    asyncio.run(conn.aclose())
