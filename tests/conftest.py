"""Shared fixtures: both database backends, a frozen clock, a ready runtime."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.clock import FrozenClock
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests.support.postgres import Cluster
from tests.support.runtime import make_runtime, make_settings

BACKENDS = ["sqlite", "postgres"]
if os.environ.get("GATEWAY_TEST_BACKENDS"):
    BACKENDS = os.environ["GATEWAY_TEST_BACKENDS"].split(",")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One throwaway PostgreSQL cluster for the whole session."""
    cluster = Cluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gateway.db'}"
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    return cluster.new_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database (tests that need only one backend)."""
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
def clock() -> FrozenClock:
    """A frozen clock at 2026-01-01 00:00 UTC."""
    return FrozenClock(datetime(2026, 1, 1, tzinfo=UTC))


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    """Settings on a fresh migrated database of each backend."""
    return make_settings(tmp_path, db_url)


@pytest.fixture
def rt(settings: Settings, clock: FrozenClock) -> Iterator[Runtime]:
    """A runtime with a frozen clock, on each backend."""
    runtime = make_runtime(settings, clock)
    try:
        yield runtime
    finally:
        runtime.close()
