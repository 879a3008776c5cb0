"""The asyncio daemon: HTTP server, scheduled jobs and pluggable components; clean SIGTERM.

Components (propagation dispatcher, mail sender, RADIUS listener, …) are started in order and
stopped in reverse. SIGHUP calls every reload hook (policy files); a bad file keeps the last
good set. On SQLite a lock file refuses a second node.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Protocol

import uvicorn
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.engine import make_url

from gateway.errors import ConfigError
from gateway.runtime import Runtime
from gateway.web.app import create_app

log = logging.getLogger("gateway.daemon")


class Component(Protocol):
    """A long-running part of the daemon."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


ComponentFactory = Callable[[Runtime], Component | None]
COMPONENTS: list[ComponentFactory] = []  # filled in ``_register`` below, one line per area
RELOAD_HOOKS: list[Callable[[Runtime], None]] = []


def _single_node_lock(rt: Runtime) -> IO[str] | None:
    url = make_url(rt.settings.database.url)
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    path = Path(url.database + ".lock")
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(
            f"another gateway already runs on {url.database}; SQLite supports one node "
            "(use PostgreSQL for several)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling; the daemon owns SIGTERM/SIGINT/SIGHUP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


async def _in_thread(fn: Callable[[], object]) -> None:
    await asyncio.get_running_loop().run_in_executor(None, fn)


def _job(name: str, fn: Callable[[], object]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        try:
            await _in_thread(fn)
        except Exception:
            log.exception("job failed", extra={"job": name})

    return run


async def serve(rt: Runtime, *, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop`` is set)."""
    lock = _single_node_lock(rt)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: reload(rt))

    scheduler = AsyncIOScheduler(timezone="UTC")
    scheduler.add_job(
        _job("auto_unlock", rt.service.auto_unlock_due),
        "interval",
        seconds=15,
        id="auto_unlock",
        max_instances=1,
        coalesce=True,
    )
    scheduler.add_job(
        _job("expiry_sweep", rt.service.expiry_sweep),
        "interval",
        seconds=60,
        id="expiry_sweep",
        max_instances=1,
        coalesce=True,
    )

    host, port = _host_port(rt.settings.http.listen)
    config = uvicorn.Config(
        create_app(rt),
        host=host,
        port=port,
        log_level="warning",
        proxy_headers=False,
        server_header=False,
        lifespan="off",
    )
    server = _QuietServer(config)

    started: list[Component] = []
    try:
        for factory in COMPONENTS:
            component = factory(rt)
            if component is not None:
                await component.start()
                started.append(component)
                log.info("started %s", component.name)
        scheduler.start()
        http_task = asyncio.create_task(server.serve())
        log.info("gateway listening on http://%s:%d", host, port)
        stop_task = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({http_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if http_task in done and http_task.exception() is not None:
            raise ConfigError(f"HTTP server failed: {http_task.exception()}")
        server.should_exit = True
        await http_task
        stop_task.cancel()
    finally:
        scheduler.shutdown(wait=False)
        for component in reversed(started):
            try:
                await component.stop()
            except Exception:
                log.exception("stopping %s failed", component.name)
        rt.close()
        if lock is not None:
            lock.close()
        log.info("gateway stopped")


def reload(rt: Runtime) -> None:
    """SIGHUP: reload policy files; a bad file keeps the last good set and says why."""
    for hook in RELOAD_HOOKS:
        try:
            hook(rt)
        except Exception as exc:  # noqa: BLE001 - the daemon keeps serving
            log.error("reload failed, keeping the last good policies: %s", exc)


def _register() -> None:
    """Each area adds its component factory here (one line per area)."""
    from gateway import dispatcher, mail, policies
    from gateway.radius import listener as radius_listener
    from gateway.web import sessions

    COMPONENTS.append(dispatcher.Dispatcher)  # propagation
    RELOAD_HOOKS.append(policies.reload_hook)  # resource policy files
    COMPONENTS.append(radius_listener.component)  # RADIUS listener
    COMPONENTS.append(mail.sender_component)  # mail sender
    COMPONENTS.append(sessions.janitor)  # expired web sessions


_register()
