"""A throwaway Samba AD DC (LDAP service only) as a real Active Directory for tests.

Samba's LDAP ports are fixed (389/636), so the DC listens on ``127.0.0.2`` (added to ``lo``
when missing; root only); ``available()`` says why a DC cannot run.
The fixture skips only when samba is not installed; any other obstacle fails the tests.
``SambaDC.start()`` provisions a domain EXAMPLE.TEST in a temporary directory (about 2.5 s),
installs a throwaway CA and a server certificate with SAN IP:127.0.0.2, and runs
``samba -i -M single`` in the foreground as a child whose stdin pipe is a dead-man switch (the
DC exits when the test process dies). ``add_user`` creates an enabled user with a password.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ldap3 import MODIFY_REPLACE, NONE, Connection, Server

from connectors.ldap_pool import VerifiedTls
from tests.support.tlsca import TlsFiles, make_tls_files

SAMBA = "/usr/sbin/samba"
SAMBA_TOOL = "/usr/bin/samba-tool"
HOST = "127.0.0.2"


def _has_address(ip: str) -> bool:
    out = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True)
    return f" {ip}/" in out.stdout


def available() -> str | None:
    """None when a DC can run here, else the reason it cannot."""
    if not (os.path.exists(SAMBA) and os.path.exists(SAMBA_TOOL)):
        return "samba is not installed (scripts/install-system-deps installs it)"
    if os.geteuid() != 0:
        return "the Samba AD DC needs root"
    if not _has_address(HOST):
        added = subprocess.run(
            ["ip", "addr", "add", f"{HOST}/8", "dev", "lo"], capture_output=True, text=True
        )
        if added.returncode != 0 and not _has_address(HOST):
            return f"cannot add {HOST} to lo: {added.stderr.strip()}"
    for port in (389, 636):
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                return f"{HOST}:{port} is already in use"
    return None


class SambaDC:
    """One Samba AD DC for the domain EXAMPLE.TEST on 127.0.0.2."""

    realm = "EXAMPLE.TEST"
    base_dn = "DC=example,DC=test"
    users_dn = "CN=Users,DC=example,DC=test"
    admin_dn = "CN=Administrator,CN=Users,DC=example,DC=test"
    admin_password = "Adm1n-Passw0rd-Test!"
    url = f"ldap://{HOST}"
    ldaps_url = f"ldaps://{HOST}"

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="gw-samba-"))
        self.conf = self.root / "etc" / "smb.conf"
        self.tls: TlsFiles | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def _tool(self, *args: str) -> None:
        subprocess.run(
            [SAMBA_TOOL, *args], check=True, capture_output=True, timeout=120, cwd=self.root
        )

    def provision(self) -> None:
        """Provision the domain and write a test-friendly smb.conf."""
        t = self.root
        (t / "log").mkdir()
        (t / "run").mkdir()
        empty = t / "empty.conf"
        empty.write_text("")
        self._tool(
            "domain",
            "provision",
            "-s",
            str(empty),
            f"--realm={self.realm}",
            "--domain=EXAMPLE",
            "--server-role=dc",
            "--dns-backend=NONE",
            f"--adminpass={self.admin_password}",
            "--host-name=dc1",
            f"--host-ip={HOST}",
            f"--targetdir={t}",
            f"--option=interfaces={HOST}",
            "--option=bind interfaces only=yes",
            f"--option=pid directory={t}/run",
            f"--option=ncalrpc dir={t}/run/ncalrpc",
            f"--option=winbindd socket directory={t}/run/winbindd",
            f"--option=ntp signd socket directory={t}/run/ntp_signd",
            f"--option=log file={t}/log/%m.log",
        )
        self.tls = make_tls_files(t / "tls", hostname="dc1.example.test", ips=(HOST,))
        text = self.conf.read_text()
        text = re.sub(r"(?m)^\s*server services = .*$", "", text)
        extra = (
            "\tserver services = ldap\n"
            "\told password allowed period = 0\n"
            "\ttls enabled = yes\n"
            f"\ttls certfile = {self.tls.cert}\n"
            f"\ttls keyfile = {self.tls.key}\n"
            f"\ttls cafile = {self.tls.ca}\n"
        )
        text = text.replace("[global]\n", "[global]\n" + extra, 1)
        self.conf.write_text(text)
        self._tool(
            "domain",
            "passwordsettings",
            "set",
            "-s",
            str(self.conf),
            "--min-pwd-age=0",
            "--account-lockout-threshold=5",
            "--account-lockout-duration=30",
            "--reset-account-lockout-after=30",
        )

    def start(self, timeout: float = 30.0) -> None:
        """Provision (first time) and run the DC until it completes an LDAPS handshake."""
        if self.proc is not None:
            return
        if self.tls is None:
            self.provision()
        with open(self.root / "samba.log", "ab") as log:
            self.proc = subprocess.Popen(
                [SAMBA, "-i", "-M", "single", "-s", str(self.conf), "--maximum-runtime=900"],
                stdin=subprocess.PIPE,  # dead-man switch: EOF on stdin stops the DC
                stdout=log,
                stderr=log,
            )
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                tail = (self.root / "samba.log").read_text(errors="replace")[-2000:]
                self.proc = None
                raise RuntimeError(f"samba exited at start: {tail}")
            try:
                with (
                    socket.create_connection((HOST, 636), timeout=1) as raw,
                    ctx.wrap_socket(raw),
                ):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("samba did not answer in time") from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the DC and wait for it (exit status 127 on SIGTERM is normal for samba)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()

    def close(self) -> None:
        """Stop and remove the directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def admin(self) -> Connection:
        """A bound LDAPS connection as Administrator, verifying the test CA (caller unbinds)."""
        assert self.tls is not None
        server = Server(
            HOST, port=636, use_ssl=True, get_info=NONE, tls=VerifiedTls(str(self.tls.ca), None)
        )
        return Connection(
            server, self.admin_dn, self.admin_password, auto_bind=True, raise_exceptions=True
        )

    def user_dn(self, name: str) -> str:
        """The DN ``add_user`` gives ``name``."""
        return f"CN={name},{self.users_dn}"

    def add_user(self, name: str, mail: str, password: str) -> str:
        """Create an enabled user (sAMAccountName ``name``) with ``password``; return its DN."""
        dn = self.user_dn(name)
        conn = self.admin()
        try:
            conn.add(
                dn,
                ["top", "person", "organizationalPerson", "user"],
                {
                    "sAMAccountName": name,
                    "userPrincipalName": f"{name}@example.test",
                    "mail": mail,
                },
            )
            conn.extend.microsoft.modify_password(dn, password)
            conn.modify(dn, {"userAccountControl": [(MODIFY_REPLACE, ["512"])]})
        finally:
            conn.unbind()
        return dn

    def read(self, dn: str, *attrs: str) -> dict[str, list[str]]:
        """Attribute values of an entry, as text."""
        conn = self.admin()
        try:
            conn.search(dn, "(objectClass=*)", "BASE", attributes=list(attrs))
            raw = {k.lower(): v for k, v in conn.response[0]["raw_attributes"].items()}
            return {a: [bytes(v).decode() for v in raw.get(a.lower(), [])] for a in attrs}
        finally:
            conn.unbind()

    def modify(self, dn: str, changes: dict[str, list[str]]) -> None:
        """Replace attributes as Administrator (an admin acting by hand)."""
        conn = self.admin()
        try:
            conn.modify(dn, {a: [(MODIFY_REPLACE, v)] for a, v in changes.items()})
        finally:
            conn.unbind()

    def bind(self, dn: str, password: str) -> tuple[bool, str]:
        """A simple bind over LDAPS: (success, diagnostic message with the AD sub-code)."""
        assert self.tls is not None
        server = Server(
            HOST, port=636, use_ssl=True, get_info=NONE, tls=VerifiedTls(str(self.tls.ca), None)
        )
        conn = Connection(server, dn, password)
        try:
            ok = bool(conn.bind())
            return ok, str(conn.result.get("message", ""))
        finally:
            conn.unbind()


@pytest.fixture(scope="module")
def samba_dc() -> Iterator[SambaDC]:
    """One Samba AD DC per test module; skipped with the reason when it cannot run here."""
    reason = available()
    if reason is not None:
        if "not installed" in reason:
            pytest.skip(reason)
        pytest.fail(f"Samba AD DC cannot run: {reason}")
    dc = SambaDC()
    try:
        dc.start()
        yield dc
    finally:
        dc.close()
