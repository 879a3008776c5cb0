"""`gateway serve`: /healthz, clean SIGTERM, one node per SQLite, SIGHUP keeps good policies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import daemon
from gateway.clock import FrozenClock
from gateway.orgpolicy import LockoutRules
from tests.support.postgres import free_port
from tests.support.runtime import make_runtime, make_settings

ORG = "[lockout]\nthreshold = 3\nwindow_minutes = 15\nduration_minutes = 30\n"
BAD_ORG = "[lockout]\nthreshold = 3\nwindow_minutes = 0\n"


def write_config(tmp: Path, port: int) -> Path:
    path = tmp / f"gateway-{port}.toml"
    path.write_text(
        f'policies_dir = "{tmp / "policies"}"\n'
        f'[database]\nurl = "sqlite:///{tmp / "gateway.db"}"\n'
        f'[secrets]\nkey_file = "{tmp / "secret.key"}"\n'
        f'[mail]\nmaildir = "{tmp / "mail"}"\n'
        f'[http]\nlisten = "127.0.0.1:{port}"\nbase_url = "http://127.0.0.1:{port}"\n',
        encoding="utf-8",
    )
    return path


class Node:
    """One `gateway serve` subprocess with its log in a file."""

    def __init__(self, config: Path, port: int) -> None:
        self.port = port
        self.log = config.with_suffix(".log")
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "--config", str(config), "serve"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "GATEWAY_CONFIG": str(config)},
            )

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def health(self) -> tuple[int, dict[str, str]]:
        url = f"http://127.0.0.1:{self.port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, {}

    def wait_healthy(self, timeout: float = 45) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"daemon exited {self.proc.returncode}:\n{self.text()}"
            try:
                status, body = self.health()
                if status == 200:
                    return body
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"no /healthz within {timeout}s:\n{self.text()}")

    def wait_log(self, needle: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert time.monotonic() < deadline, f"{needle!r} not logged:\n{self.text()}"
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    make_settings(tmp_path, f"sqlite:///{tmp_path / 'gateway.db'}", org_toml=ORG)
    port = free_port()
    running = Node(write_config(tmp_path, port), port)
    try:
        yield running
    finally:
        running.stop()


def test_serve_health_second_node_sighup_and_sigterm(node: Node, tmp_path: Path) -> None:
    body = node.wait_healthy()
    assert body["status"] == "ok"

    # a second node on the same SQLite file is refused with a clear message and exit 2
    port2 = free_port()
    second = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(write_config(tmp_path, port2)), "serve"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GATEWAY_CONFIG": str(write_config(tmp_path, port2))},
    )
    assert second.returncode == 2, second.stderr
    assert "another gateway already runs on" in second.stderr
    assert "PostgreSQL" in second.stderr
    assert node.health()[0] == 200  # the first node is untouched

    # SIGHUP with a broken org.toml: the daemon keeps serving and names file, line and field
    org = tmp_path / "policies" / "org.toml"
    org.write_text(BAD_ORG, encoding="utf-8")
    node.proc.send_signal(signal.SIGHUP)
    node.wait_log("keeping the last good policies")
    assert f"{org}:line 3, field lockout.window_minutes" in node.text()
    assert node.proc.poll() is None and node.health()[0] == 200
    # a good file is picked up by the next SIGHUP
    org.write_text(ORG.replace("threshold = 3", "threshold = 4"), encoding="utf-8")
    node.proc.send_signal(signal.SIGHUP)
    node.wait_log("reloaded org.toml")

    # SIGTERM: clean exit, lock released, and a new node may start
    assert node.stop() == 0
    assert "gateway stopped" in node.text()
    port3 = free_port()
    third = Node(write_config(tmp_path, port3), port3)
    try:
        third.wait_healthy()
    finally:
        assert third.stop() == 0


def test_reload_keeps_last_good_org_in_force(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", org_toml=ORG)
    rt = make_runtime(settings, FrozenClock())
    try:
        good = rt.org_policy
        assert good.lockout == LockoutRules(threshold=3, window_minutes=15, duration_minutes=30)
        org = Path(settings.policies_dir) / "org.toml"
        org.write_text(BAD_ORG, encoding="utf-8")
        daemon.reload(rt)
        assert rt.org_policy is good and rt.service.org is good
        org.write_text(ORG.replace("threshold = 3", "threshold = 7"), encoding="utf-8")
        daemon.reload(rt)
        assert rt.service.org.lockout.threshold == 7
    finally:
        rt.close()
