"""Engine and session set-up for SQLite (WAL, synchronous=FULL, foreign keys) and PostgreSQL.

Write transactions on SQLite start with ``BEGIN IMMEDIATE`` so that a read-modify-write of an
account (the lockout counter) is serialised; on PostgreSQL the same code takes a row lock with
``SELECT … FOR UPDATE``. Some writes may be *relaxed*: committed without waiting for the disk
(``synchronous=NORMAL`` / ``synchronous_commit=off``); losing one in a crash is harmless.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from gateway.errors import ConfigError


def make_engine(url: str, pool_size: int = 8) -> Engine:
    """Create an engine for ``url`` with the gateway's durability settings."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed, pool_size=pool_size, max_overflow=pool_size, connect_args={"timeout": 30}
        )
        _sqlite_events(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(
            parsed, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
        )
    raise ConfigError(f"unsupported database {parsed.get_backend_name()!r}")


def _sqlite_events(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        _record.info["synchronous"] = "FULL"
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        opts = conn.get_execution_options()
        raw = conn.connection.dbapi_connection  # plain sqlite3: this runs on every transaction
        info = conn.connection.info
        if opts.get("write", False):
            mode = "NORMAL" if opts.get("relaxed", False) else "FULL"
            if info.get("synchronous") != mode:  # only when it changes (it is per connection)
                raw.execute(f"PRAGMA synchronous={mode}")
                info["synchronous"] = mode
            raw.execute("BEGIN IMMEDIATE")
        else:
            raw.execute("BEGIN")


class Store:
    """Hands out sessions: ``write()`` for read-modify-write, ``read()`` for queries."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(engine.execution_options(write=True), expire_on_commit=False)
        self._relaxed = sessionmaker(
            engine.execution_options(write=True, relaxed=True), expire_on_commit=False
        )

    @contextmanager
    def write(self, *, relaxed: bool = False) -> Iterator[Session]:
        """A write transaction; committed on success, rolled back on error."""
        maker = self._relaxed if relaxed else self._write
        with maker() as session, session.begin():
            if relaxed and not self.is_sqlite:
                session.connection().exec_driver_sql("SET LOCAL synchronous_commit = off")
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session."""
        with self._read() as session, session.begin():
            yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
