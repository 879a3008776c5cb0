"""`gateway serve` runs the RADIUS listener (IPv4 and IPv6) from settings + policy file, and a
SIGHUP policy reload reaches it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from gateway.audit import Actor
from tests.radius.conftest import PASSWORD, SECRET
from tests.support.postgres import free_port
from tests.support.runtime import make_runtime, make_settings

POLICY = """connector = "radius"
[actions]
password_change = "maintain"
expired = "reject"
locked = "disconnect"
unlocked = "maintain"
[connection]
reject_delay_seconds = 0.1
[[connection.clients]]
address = "127.0.0.1"
secret = "env:GW_TEST_RADIUS_SECRET"
[[connection.clients]]
address = "::1"
secret = "env:GW_TEST_RADIUS_SECRET"
"""


def _udp_port(family: socket.AddressFamily = socket.AF_INET) -> int:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        return int(s.getsockname()[1])


def _radclient(target: str, text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["radclient", "-x", "-r", "1", "-t", "1", target, "auth", SECRET],
        input=text,
        capture_output=True,
        text=True,
        timeout=20,
    )


def _wait_accept(target: str, text: str, needle: str = "Access-Accept") -> str:
    deadline = time.monotonic() + 20
    out = ""
    while time.monotonic() < deadline:
        out = _radclient(target, text).stdout
        if needle in out:
            return out
        time.sleep(0.2)
    raise AssertionError(out)


def test_serve_runs_the_radius_listener(tmp_path: Path) -> None:
    os.environ["GW_TEST_RADIUS_SECRET"] = SECRET
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'gateway.db'}")
    policy = Path(settings.policies_dir) / "wifi.toml"
    policy.write_text(POLICY)
    rt = make_runtime(settings)
    asyncio.run(
        rt.service.create_account(
            kind="user",
            username="alice",
            email="alice@example.org",
            actor=Actor("test"),
            password=PASSWORD,
            groups=["staff"],
        )
    )
    rt.close()
    http, p4, p6 = free_port(), _udp_port(), _udp_port(socket.AF_INET6)
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'policies_dir = "{settings.policies_dir}"\n'
        f'[database]\nurl = "sqlite:///{tmp_path / "gateway.db"}"\n'
        f'[secrets]\nkey_file = "{settings.secrets.key_file}"\n'
        f'[mail]\nmaildir = "{tmp_path / "mail"}"\n'
        f'[http]\nlisten = "127.0.0.1:{http}"\n'
        f'[radius]\nlisten = ["127.0.0.1:{p4}", "[::1]:{p6}"]\n'
    )
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--config", str(config), "serve"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "GATEWAY_CONFIG": str(config)},
    )
    request = f"User-Name = alice, User-Password = '{PASSWORD}', Message-Authenticator = 0x00\n"
    try:
        _wait_accept(f"127.0.0.1:{p4}", request)
        _wait_accept(f"[::1]:{p6}", request)
        wrong = request.replace(PASSWORD, "not-the-password")
        assert "Access-Reject" in _radclient(f"127.0.0.1:{p4}", wrong).stdout
        # reload: a new group -> Filter-Id mapping reaches the running listener
        policy.write_text(
            POLICY + '[[connection.group_replies]]\ngroup = "staff"\n'
            'attributes = { "Filter-Id" = "staff-acl" }\n'
        )
        proc.send_signal(signal.SIGHUP)
        out = _wait_accept(f"127.0.0.1:{p4}", request, needle='Filter-Id = "staff-acl"')
        assert "Access-Accept" in out
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert code == 0, text
    assert "BlastRADIUS" not in text  # no legacy client configured
    assert SECRET not in text
