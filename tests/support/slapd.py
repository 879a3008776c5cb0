"""A throwaway OpenLDAP slapd (mdb + ppolicy, LDAP with StartTLS and LDAPS) owned by the test.

Usage::

    from tests.support.slapd import Slapd, slapd  # noqa: F401  (``slapd`` is a module fixture)

    def test_x(slapd: Slapd) -> None:
        dn = slapd.add_user("bob", "bob@example.org", "Initial-Pass-1")
        assert slapd.can_bind(dn, "Initial-Pass-1")

``Slapd`` runs ``/usr/sbin/slapd -d 0`` in the foreground as a child process on two free ports
(``url`` = ldap:// with StartTLS, ``ldaps_url`` = ldaps://), with a throwaway CA
(``tls.ca``) whose server certificate has SAN IP:127.0.0.1. ``admin_dn`` is the rootdn (exempt
from ppolicy); ``service_dn`` is an ordinary entry with manage rights, which ppolicy treats like
a real gateway service account (history and quality checks apply to it): bind the connector as
``service_dn`` so that "hand" changes made through ``admin()`` / ``admin_lock()`` are told apart
from the gateway's (the connector recognises its own lock by ``modifiersName``). The default
password policy: history 3, must-change after an administrative reset, lockout after 5 failures.
``stop()`` / ``start()`` keep the data, so a test can take the server down and bring it back.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ldap3 import MODIFY_REPLACE, NONE, SIMPLE, Connection, Server

from tests.support.postgres import free_port
from tests.support.tlsca import TlsFiles, make_tls_files

SLAPD = "/usr/sbin/slapd"
SCHEMA = Path("/etc/ldap/schema")
LOCKED_FOREVER = "000001010000Z"
OPERATIONAL = (
    "pwdAccountLockedTime",
    "pwdReset",
    "pwdChangedTime",
    "pwdFailureTime",
    "pwdHistory",
)

_CONF = """\
include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/nis.schema
include {schema}/inetorgperson.schema

modulepath /usr/lib/ldap
moduleload back_mdb
moduleload ppolicy

pidfile  {root}/slapd.pid
argsfile {root}/slapd.args
loglevel none

TLSCACertificateFile {ca}
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}

database mdb
suffix   "{base}"
rootdn   "{admin}"
rootpw   {admin_pw}
directory {root}/db
maxsize  104857600
index objectClass eq
index uid,mail eq

overlay ppolicy
ppolicy_default "cn=default,ou=policies,{base}"
ppolicy_use_lockout
ppolicy_hash_cleartext

access to attrs=userPassword
  by dn.exact="{service}" write
  by self write
  by anonymous auth
  by * none
access to *
  by dn.exact="{service}" write
  by * read
"""


class Slapd:
    """One slapd in a temporary directory; ``start()``, ``stop()``, ``restart()``, ``close()``."""

    base_dn = "dc=example,dc=org"
    admin_dn = "cn=admin,dc=example,dc=org"
    admin_password = "admin-secret"
    people_dn = "ou=people,dc=example,dc=org"
    service_dn = "cn=gateway,ou=services,dc=example,dc=org"
    service_password = "gateway-service-secret"
    policy_dn = "cn=default,ou=policies,dc=example,dc=org"

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="gw-slapd-"))
        (self.root / "db").mkdir()
        self.port = free_port()
        self.ldaps_port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.ldaps_url = f"ldaps://127.0.0.1:{self.ldaps_port}"
        self.tls: TlsFiles = make_tls_files(self.root / "tls")
        self.proc: subprocess.Popen[bytes] | None = None
        self._loaded = False
        (self.root / "slapd.conf").write_text(
            _CONF.format(
                schema=SCHEMA,
                root=self.root,
                ca=self.tls.ca,
                cert=self.tls.cert,
                key=self.tls.key,
                base=self.base_dn,
                admin=self.admin_dn,
                admin_pw=self.admin_password,
                service=self.service_dn,
            ),
            encoding="utf-8",
        )

    # -- process -----------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Start slapd in the foreground as a child and wait until it answers; load data once."""
        if self.proc is not None:
            return
        with open(self.root / "slapd.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    SLAPD,
                    "-d",
                    "0",
                    "-f",
                    str(self.root / "slapd.conf"),
                    "-h",
                    f"{self.url}/ {self.ldaps_url}/",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                tail = (self.root / "slapd.log").read_text(errors="replace")[-2000:]
                self.proc = None
                raise RuntimeError(f"slapd exited at start: {tail}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("slapd did not answer in time") from None
                time.sleep(0.01)
        if not self._loaded:
            self._load()
            self._loaded = True

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM slapd and wait for the process to exit (SIGKILL after ``timeout``)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        """Stop and start again on the same ports with the same data."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and delete the directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def running(self) -> bool:
        """True while the child process lives."""
        return self.proc is not None and self.proc.poll() is None

    # -- data --------------------------------------------------------------------------------

    def admin(self) -> Connection:
        """A bound connection as the rootdn (caller unbinds)."""
        return Connection(
            Server(self.url, get_info=NONE),
            self.admin_dn,
            self.admin_password,
            auto_bind=True,
            raise_exceptions=True,
        )

    def _load(self) -> None:
        b = self.base_dn
        entries: list[tuple[str, list[str], dict[str, object]]] = [
            (b, ["dcObject", "organization"], {"dc": "example", "o": "Example"}),
            (self.people_dn, ["organizationalUnit"], {"ou": "people"}),
            (f"ou=policies,{b}", ["organizationalUnit"], {"ou": "policies"}),
            (f"ou=services,{b}", ["organizationalUnit"], {"ou": "services"}),
            (
                self.policy_dn,
                ["pwdPolicy", "device"],
                {
                    "cn": "default",
                    "pwdAttribute": "userPassword",
                    "pwdInHistory": "3",
                    "pwdMaxFailure": "5",
                    "pwdLockout": "TRUE",
                    "pwdLockoutDuration": "0",
                    "pwdMustChange": "TRUE",
                    "pwdAllowUserChange": "TRUE",
                    "pwdSafeModify": "FALSE",
                },
            ),
            (
                self.service_dn,
                ["organizationalRole", "simpleSecurityObject"],
                {"cn": "gateway", "userPassword": self.service_password},
            ),
        ]
        conn = self.admin()
        try:
            for dn, classes, attrs in entries:
                conn.add(dn, classes, attrs)
        finally:
            conn.unbind()

    def user_dn(self, uid: str) -> str:
        """The DN ``add_user`` gives ``uid``."""
        return f"uid={uid},{self.people_dn}"

    def add_user(self, uid: str, mail: str, password: str) -> str:
        """Add an inetOrgPerson under ``people_dn`` and return its DN."""
        dn = self.user_dn(uid)
        conn = self.admin()
        try:
            conn.add(
                dn,
                ["inetOrgPerson"],
                {"uid": uid, "cn": uid, "sn": uid, "mail": mail, "userPassword": password},
            )
        finally:
            conn.unbind()
        return dn

    def operational(self, dn: str) -> dict[str, list[str]]:
        """The entry's ppolicy operational attributes (absent ones map to an empty list)."""
        conn = self.admin()
        try:
            conn.search(dn, "(objectClass=*)", "BASE", attributes=list(OPERATIONAL))
            found = conn.response[0]["raw_attributes"]
            return {a: [bytes(v).decode() for v in found.get(a, [])] for a in OPERATIONAL}
        finally:
            conn.unbind()

    def modify(self, dn: str, changes: dict[str, list[str]]) -> None:
        """Replace attributes as the rootdn (an empty list deletes); for admin actions in tests."""
        conn = self.admin()
        try:
            conn.modify(dn, {a: [(MODIFY_REPLACE, v)] for a, v in changes.items()})
        finally:
            conn.unbind()

    def admin_lock(self, dn: str) -> None:
        """Lock an entry by hand, as a directory admin would (not the gateway)."""
        self.modify(dn, {"pwdAccountLockedTime": [LOCKED_FOREVER]})

    def can_bind(self, dn: str, password: str) -> bool:
        """A simple bind with ldap3 (no exceptions); True on success."""
        conn = Connection(Server(self.url, get_info=NONE), dn, password, authentication=SIMPLE)
        try:
            return bool(conn.bind())
        finally:
            conn.unbind()

    def whoami(self, dn: str, password: str) -> subprocess.CompletedProcess[str]:
        """Run the real ``ldapwhoami`` as ``dn`` (returncode 0 on success)."""
        return subprocess.run(
            ["ldapwhoami", "-x", "-H", self.url, "-D", dn, "-y", self._pwfile(password)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )

    def _pwfile(self, password: str) -> str:
        fd, path = tempfile.mkstemp(dir=self.root, prefix="pw-")
        with os.fdopen(fd, "w") as fh:
            fh.write(password)  # ldapwhoami -y reads the whole file, no newline
        return path


@pytest.fixture(scope="module")
def slapd() -> Iterator[Slapd]:
    """One running slapd per test module; tests add their own uniquely named users."""
    server = Slapd()
    server.start()
    try:
        yield server
    finally:
        server.close()
