"""Propagation throughput and latency against a real slapd (ppolicy), measured in one run.

1. Throughput: N pending password changes (default 10,000), already linked to their entries,
   delivered by the dispatcher (SQLite store, StartTLS, the ldap connector), against a plain
   sequential ldap3 loop doing the same password modifies on one connection (same TLS, same
   service account) in the same run. Prints ratio = loop time / dispatcher time (goal >= 1.0).
2. Latency at low load: sequential password changes through the service with the dispatcher
   idle; commit -> row marked delivered. Prints p50 / p95 (goal p50 < 50 ms).

Run: .venv/bin/python -m benchmarks.propagation [--rows 10000] [--concurrency 16] [--latency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ldap3 import NONE, SIMPLE, Connection, Server, Tls
from sqlalchemy import func, select

from gateway import dispatcher as dispatcher_module
from gateway.audit import Actor
from gateway.dispatcher import Dispatcher
from gateway.propagation_models import DELIVERED, DesiredRow
from gateway.runtime import Runtime, build
from gateway.store.models import Account
from tests.support.bulk import pending_passwords
from tests.support.runtime import make_settings
from tests.support.slapd import Slapd

ADMIN = Actor("bench")


def policy(server: Slapd, secret: Path, concurrency: int) -> str:
    return f"""connector = "ldap"
enabled = true
concurrency = {concurrency}

[link]
filter = "(mail={{email}})"

[actions]
password_change = "set"
expired = "force_change"
locked = "disable"
unlocked = "restore"

[connection]
url = "{server.url}"
tls = "starttls"
ca_file = "{server.tls.ca}"
bind_dn = "{server.service_dn}"
bind_password = "file:{secret}"
base_dn = "{server.base_dn}"
pool_size = {concurrency}
"""


def add_entries(server: Slapd, names: list[str]) -> None:
    """Add the entries with ldapadd (one process, one connection)."""
    ldif = Path(server.root) / "bench.ldif"
    with ldif.open("w") as fh:
        for name in names:
            fh.write(
                f"dn: {server.user_dn(name)}\nobjectClass: inetOrgPerson\nuid: {name}\n"
                f"cn: {name}\nsn: {name}\nmail: {name}@example.org\n"
                f"userPassword: Start-0-{name}\n\n"
            )
    subprocess.run(
        [
            "ldapadd",
            "-x",
            "-c",
            "-H",
            server.url,
            "-D",
            server.admin_dn,
            "-w",
            server.admin_password,
            "-f",
            str(ldif),
        ],
        check=True,
        capture_output=True,
    )


def seed_rows(rt: Runtime, server: Slapd, names: list[str], tag: str) -> None:
    """Accounts and pending passwords through the outbox listener, already linked (steady state)."""
    pending_passwords(rt, names, lambda name: f"{tag}-{name}")
    with rt.store.write() as s:
        for row, acc in s.execute(select(DesiredRow, Account).join(Account)).all():
            row.target_key = server.user_dn(acc.username)


def delivered(rt: Runtime) -> int:
    with rt.store.read() as s:
        return int(s.scalar(select(func.count()).where(DesiredRow.status == DELIVERED)) or 0)


async def run_dispatcher(rt: Runtime, total: int) -> float:
    d = Dispatcher(rt, poll_interval=0.5)
    start = time.perf_counter()
    await d.start()
    try:
        await d.idle(timeout=3600)
    finally:
        await d.stop()
    elapsed = time.perf_counter() - start
    assert delivered(rt) == total, f"only {delivered(rt)} of {total} delivered"
    return elapsed


def sequential_loop(server: Slapd, names: list[str], tag: str) -> float:
    tls = Tls(ca_certs_file=str(server.tls.ca), validate=2)
    conn = Connection(
        Server(server.url, get_info=NONE, tls=tls),
        server.service_dn,
        server.service_password,
        authentication=SIMPLE,
        raise_exceptions=True,
    )
    conn.start_tls()
    conn.bind()
    start = time.perf_counter()
    for name in names:
        conn.extend.standard.modify_password(
            user=server.user_dn(name), new_password=f"{tag}-{name}"
        )
    elapsed = time.perf_counter() - start
    conn.unbind()
    return elapsed


async def latency(rt: Runtime, server: Slapd, count: int) -> list[float]:
    """Commit -> delivered for sequential changes through the service."""
    names = [f"lat{i:04d}" for i in range(count)]
    add_entries(server, names)
    for name in names:
        await rt.service.create_account(
            kind="user", username=name, email=f"{name}@example.org", actor=ADMIN
        )
    done = threading.Event()
    original = dispatcher_module.complete

    def complete(*args: Any) -> None:
        original(*args)
        done.set()

    dispatcher_module.complete = complete  # type: ignore[assignment]
    committed: list[float] = []
    rt.service.after_commit.append(lambda: committed.append(time.perf_counter()))
    d = Dispatcher(rt, poll_interval=5.0)
    await d.start()
    samples: list[float] = []
    try:
        # first change links each account (a search); measure the steady state after it
        for rnd in range(2):
            for i, name in enumerate(names):
                done.clear()
                committed.clear()
                await rt.service.change_password(name, f"Lat-{rnd}-{i}-Pass-Word", actor=ADMIN)
                while not done.is_set():
                    await asyncio.sleep(0.0005)
                if rnd == 1:
                    samples.append((time.perf_counter() - committed[0]) * 1000)
    finally:
        await d.stop()
        dispatcher_module.complete = original  # type: ignore[assignment]
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=int, default=50)
    args = parser.parse_args()
    server = Slapd()
    server.start()
    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    try:
        settings = make_settings(tmp, f"sqlite:///{tmp / 'gateway.db'}")
        secret = tmp / "ldap.secret"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(server.service_password)
        (Path(settings.policies_dir) / "corp.toml").write_text(
            policy(server, secret, args.concurrency), encoding="utf-8"
        )
        rt = build(settings)
        names = [f"bench{i:05d}" for i in range(args.rows)]
        t0 = time.perf_counter()
        add_entries(server, names)
        seed_rows(rt, server, names, "Gw-Pass-1")
        print(f"setup: {args.rows} entries and pending rows in {time.perf_counter() - t0:.1f} s")

        engine = asyncio.run(run_dispatcher(rt, args.rows))
        loop = sequential_loop(server, names, "Loop-Pass-2")
        print(
            f"throughput: dispatcher {args.rows} in {engine:.2f} s "
            f"({args.rows / engine:.0f}/s, concurrency {args.concurrency}); "
            f"sequential ldap3 loop {loop:.2f} s ({args.rows / loop:.0f}/s)"
        )
        print(f"ratio (loop time / dispatcher time): {loop / engine:.2f}  (goal >= 1.0)")

        samples = asyncio.run(latency(rt, server, args.latency))
        p50 = statistics.median(samples)
        p95 = statistics.quantiles(samples, n=20)[18]
        print(
            f"latency commit->delivered over {len(samples)} changes: p50 {p50:.1f} ms, "
            f"p95 {p95:.1f} ms, max {max(samples):.1f} ms  (goal p50 < 50 ms)"
        )
        rt.close()
    finally:
        server.close()


if __name__ == "__main__":
    main()
