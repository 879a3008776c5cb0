"""PostgreSQL LISTEN/NOTIFY: wake every node's dispatcher when any node commits a change.

The outbox (and ``sync retry``) call ``notify`` inside the writing transaction; PostgreSQL
delivers the notification on commit. Each dispatcher runs a ``Listener`` thread on its own
autocommit connection that calls ``wake`` for each notification, and reconnects on error.
On SQLite (one node) both are no-ops: the after-commit callback already wakes the dispatcher.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

CHANNEL = "gateway_propagation"
log = logging.getLogger("gateway.pgnotify")


def notify(session: Session) -> None:
    """Queue a wake-up for every dispatcher; sent by PostgreSQL when the transaction commits."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"NOTIFY {CHANNEL}"))


def conninfo(engine: Engine) -> str:
    """A libpq connection string for ``engine`` (driver suffix removed)."""
    url = engine.url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class Listener:
    """A thread that LISTENs on the channel and calls ``wake`` for each notification."""

    def __init__(self, engine: Engine, wake: Callable[[], None]) -> None:
        self._dsn = conninfo(engine)
        self._wake = wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-listen", daemon=True)

    def start(self) -> None:
        """Begin listening."""
        self._thread.start()

    def stop(self) -> None:
        """Stop within about a second."""
        self._stop.set()
        self._thread.join(timeout=3)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._wake()  # anything committed while we were not listening
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            self._wake()
            except psycopg.Error as exc:
                log.warning("LISTEN connection lost (%s); reconnecting", type(exc).__name__)
                self._stop.wait(1.0)
