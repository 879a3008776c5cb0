"""Live servers for web tests (uvicorn in a thread, or the real daemon) and Debian Chromium.

``LiveApp`` serves ``create_app(rt)`` on a free port in a background thread, together with
daemon components (the mail sender), so HTTP tests talk over a real socket while sharing the
test's runtime and frozen clock. ``Daemon`` runs ``python -m gateway serve`` as a subprocess
for browser tests. ``chromium()`` launches the Debian package's Chromium through Playwright
(never a downloaded browser).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from gateway.runtime import Runtime
from tests.support.postgres import free_port

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"
ROOT = Path(__file__).resolve().parents[2]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class LiveApp:
    """``create_app(rt)`` on 127.0.0.1:<free port> in a thread, plus component factories."""

    def __init__(
        self, rt: Runtime, port: int, components: tuple[Callable[[Runtime], Any], ...] = ()
    ) -> None:
        from gateway.web.app import create_app

        self.rt = rt
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            create_app(rt),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            proxy_headers=False,
            server_header=False,
        )
        self.server = _Server(config)
        self.factories = components
        self.thread = threading.Thread(target=self._run, name="live-app", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        async def main() -> None:
            started = []
            for factory in self.factories:
                component = factory(self.rt)
                await component.start()
                started.append(component)
            try:
                await self.server.serve()
            finally:
                for component in reversed(started):
                    await component.stop()

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by start()/stop()
            self.error = exc

    def start(self) -> LiveApp:
        """Start serving and wait until the socket answers."""
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if self.error is not None or not self.thread.is_alive():
                raise RuntimeError(f"live app did not start: {self.error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("live app did not start in 15 s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop the server and its components."""
        self.server.should_exit = True
        self.thread.join(timeout=40)


def write_config(tmp: Path, settings_toml: str) -> Path:
    """Write a settings file for the daemon (0600)."""
    path = tmp / "gateway.toml"
    path.write_text(settings_toml, encoding="utf-8")
    path.chmod(0o600)
    return path


class Daemon:
    """The real daemon (``python -m gateway --config FILE serve``) as a subprocess."""

    def __init__(self, config: Path, url: str, log: Path) -> None:
        self.config = config
        self.url = url
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        """Start and wait for ``/healthz``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env["GATEWAY_CONFIG"] = str(self.config)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited: {self.log.read_text(errors='replace')}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"daemon did not answer: {self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        """SIGTERM, then wait (kill after 20 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def have_chromium() -> bool:
    """True when the Debian Chromium is installed."""
    return Path(CHROMIUM).exists()


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Debian Chromium driven by Playwright's sync API."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def shot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under ``test-artifacts/web/`` (kept as a test artefact)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def port() -> int:
    """A free TCP port."""
    return free_port()
