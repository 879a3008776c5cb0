"""Lock 1,000 accounts at the Microsoft 365 and Google Workspace fakes; compare with the floor.

For each target the run drives the real connector (real msal / google-api-python-client over
HTTPS to the local strict fake) the way the dispatcher does: every account is an ``apply()``
with ``disabled=True``, a ``TransientError`` is retried after its ``retry_after`` (or 0.5 s).
It runs twice: with the connector unpaced, and with ``max_calls_per_second`` set to the fake's
limit (what an operator sets from the target's documented quota).
A lock costs two API calls, a read (the gateway suspends only accounts that are enabled, so it
knows what to restore) and the write; through the dispatcher the first delivery also looks the
account up (which reads its state, so the separate read is skipped).

Floors, computed from the limits in force in the same run:
- HTTP requests: ``ceil(calls / per request)`` plus the token request(s), where a request
  carries at most the batch limit (Graph ``$batch`` 20 calls, a Google batch 1,000: the
  connector's ``batch_size``) and no more than the fake's bucket can accept at once;
- wall time: what the fake's token bucket allows, ``max(0, calls - burst) / rate``.

    .venv/bin/python benchmarks/cloud.py [--accounts 1000] [--rate 400] [--burst 100]
        [--concurrency 1000] [--google-batch 1000] [--via connector|dispatcher]

``--via dispatcher`` runs the whole path instead: the accounts are created and locked in a
gateway (SQLite), then the real dispatcher delivers both resources at once (concurrency 64
each); the wall time covers both targets together, from start to the last row delivered.

``--rate 0`` turns the fake's rate limit off (then the time floor is 0 and only the request
ratio is meaningful; the wall time is printed as a throughput).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select

from connectors.base import AccountRef, DesiredState
from connectors.google import GoogleConfig, GoogleConnector
from connectors.m365 import M365Config, M365Connector
from gateway.audit import Actor
from gateway.dispatcher import Dispatcher
from gateway.errors import TransientError
from gateway.propagation_models import DELIVERED, DesiredRow
from gateway.runtime import build
from tests.cloud.policies import write_cloud_policies
from tests.fakes import FakeServer, RateLimit
from tests.fakes.certs import TlsFiles, service_account_key, write_private
from tests.fakes.entra_graph import FakeGraph
from tests.fakes.google_directory import FakeDirectory
from tests.support.runtime import make_settings
from tests.support.tlsca import make_tls_files

ADMIN = "admin@example.org"
SA = "bench@gateway-bench.iam.gserviceaccount.com"


@dataclass
class Result:
    """What one target's run measured."""

    name: str
    accounts: int
    calls: int
    http: int
    token: int
    batch_limit: int
    wall: float
    throttled: int
    retries: int
    rate: float
    burst: float
    label: str = ""


async def lock_all(conn: Any, keys: list[str], concurrency: int) -> int:
    """Lock every account with at most ``concurrency`` in flight; returns the retry count."""
    sem = asyncio.Semaphore(concurrency)
    retries = 0

    async def one(key: str) -> None:
        nonlocal retries
        async with sem:
            while True:
                try:
                    owned = await conn.apply(AccountRef(key), DesiredState(1, disabled=True), None)
                    assert "disabled" in owned
                    return
                except TransientError as exc:
                    retries += 1
                    await asyncio.sleep(exc.retry_after or 0.5)

    await asyncio.gather(*(one(k) for k in keys))
    return retries


def run_target(
    name: str, fake: FakeServer, conn: Any, keys: list[str], args: argparse.Namespace, limit: int
) -> Result:
    """Warm up (token), reset the counters, lock everything, read the counters."""

    async def go() -> tuple[float, int]:
        await conn.check()
        fake.http_requests = fake.calls = fake.throttled = 0
        token_before = fake.token_requests  # type: ignore[attr-defined]
        if args.rate > 0:
            fake.rate_limit = RateLimit(args.rate, args.burst)
        start = time.perf_counter()
        retries = await lock_all(conn, keys, args.concurrency)
        wall = time.perf_counter() - start
        fake.token_requests -= token_before  # type: ignore[attr-defined]
        await conn.aclose()
        return wall, retries

    wall, retries = asyncio.run(go())
    return Result(
        name,
        len(keys),
        fake.calls,
        fake.http_requests,
        fake.token_requests,  # type: ignore[attr-defined]
        limit,
        wall,
        fake.throttled,
        retries,
        args.rate,
        args.burst,
        f"; connector paced at {args.pace:g} calls/s" if args.pace else "; connector not paced",
    )


def m365(tls: TlsFiles, tmp: Path, args: argparse.Namespace) -> Result:
    """The m365 connector against the Graph fake."""
    fake = FakeGraph(tls, client_secret="bench-secret").start()
    try:
        keys = [fake.add_user(f"u{i}@example.org").id for i in range(args.accounts)]
        secret = write_private(tmp / "m365.secret", "bench-secret")
        cfg = M365Config(
            tenant=fake.tenant,
            client_id=fake.client_id,
            client_secret=f"file:{secret}",
            authority_host=fake.authority,
            graph_url=fake.graph_url,
            ca_bundle=str(tls.ca),
            max_calls_per_second=args.pace or None,
        )
        result = run_target("Microsoft 365", fake, M365Connector("office", cfg), keys, args, 20)
        assert all(not u.accountEnabled for u in fake.users.values())
        return result
    finally:
        fake.stop()


def google(tls: TlsFiles, tmp: Path, args: argparse.Namespace) -> Result:
    """The google connector against the Directory fake."""
    fake = FakeDirectory(tls, client_email=SA, public_cert_pem="", admin=ADMIN).start()
    try:
        key_path, cert = service_account_key(tmp / "sa.json", SA, fake.token_uri)
        fake.public_cert_pem = cert
        keys = [fake.add_user(f"u{i}@example.org").id for i in range(args.accounts)]
        cfg = GoogleConfig(
            service_account_key=f"file:{key_path}",
            admin_subject=ADMIN,
            api_endpoint=fake.base + "/",
            token_uri=fake.token_uri,
            batch_uri=fake.base + "/batch",
            ca_bundle=str(tls.ca),
            batch_size=args.google_batch,
            max_calls_per_second=args.pace or None,
        )
        conn = GoogleConnector("workspace", cfg)
        result = run_target("Google Workspace", fake, conn, keys, args, args.google_batch)
        admin = fake.user(ADMIN)
        assert all(u.suspended for u in fake.users.values() if u is not admin)
        return result
    finally:
        fake.stop()


def via_dispatcher(tls: TlsFiles, tmp: Path, args: argparse.Namespace) -> list[Result]:
    """Lock the accounts in the gateway, then time the dispatcher delivering to both fakes."""
    graph = FakeGraph(tls, client_secret="bench-secret").start()
    directory = FakeDirectory(tls, client_email=SA, public_cert_pem="", admin=ADMIN).start()
    key_path, directory.public_cert_pem = service_account_key(
        tmp / "sa.json", SA, directory.token_uri
    )
    names = [f"u{i}" for i in range(args.accounts)]
    for name in names:
        graph.add_user(f"{name}@example.org", mail=f"{name}@example.org")
        directory.add_user(f"{name}@example.org")
    home = tmp / f"gw-{args.pace:g}"
    settings = make_settings(home, f"sqlite:///{home / 'gateway.db'}")
    extra: dict[str, Any] = {"max_calls_per_second": args.pace} if args.pace else {}
    policies = Path(settings.policies_dir)
    write_cloud_policies(
        policies, home, tls, graph, directory, key_path, ADMIN, concurrency=64, extra=extra
    )
    rt = build(settings)
    actor = Actor("benchmark")

    def undelivered() -> int:
        with rt.store.read() as session:
            stmt = select(func.count(DesiredRow.id)).where(DesiredRow.status != DELIVERED)
            return int(session.scalar(stmt) or 0)

    async def go() -> float:
        for name in names:
            await rt.service.create_account(
                kind="user", username=name, email=f"{name}@example.org", actor=actor
            )
        for name in names:
            await rt.service.lock(name, actor=actor)
        if args.rate > 0:
            graph.rate_limit = RateLimit(args.rate, args.burst)
            directory.rate_limit = RateLimit(args.rate, args.burst)
        d = Dispatcher(rt, poll_interval=0.1)
        start = time.perf_counter()
        await d.start()
        try:
            while undelivered():
                await asyncio.sleep(0.05)
            return time.perf_counter() - start
        finally:
            await d.stop()

    try:
        wall = asyncio.run(go())
        assert all(not u.accountEnabled for u in graph.users.values())
        label = "; via the dispatcher (concurrency 64 per resource)"
        label += f", paced at {args.pace:g} calls/s" if args.pace else ", not paced"
        out = []
        for name, fake, limit, service in (
            ("Microsoft 365", graph, 20, graph.token_requests + graph.discovery_requests),
            ("Google Workspace", directory, args.google_batch, directory.token_requests),
        ):
            out.append(
                Result(
                    name,
                    args.accounts,
                    fake.calls,
                    fake.http_requests,
                    service,
                    limit,
                    wall,
                    fake.throttled,
                    fake.throttled,
                    args.rate,
                    args.burst,
                    label,
                )
            )
        return out
    finally:
        rt.close()
        graph.stop()
        directory.stop()


def report(r: Result) -> None:
    """Print one target's figures and the ratios against the floors."""
    needed = 2 * r.accounts  # read (or look-up) + suspend per account, nothing throttled
    # a request carries at most the batch limit, and (under a rate limit) at most one bucket
    per_request = min(r.batch_limit, int(r.burst)) if r.rate > 0 else r.batch_limit
    floor_http = math.ceil(needed / per_request) + r.token
    floor_time = max(0.0, needed - r.burst) / r.rate if r.rate > 0 else 0.0
    print(f"== {r.name}: lock {r.accounts} accounts{r.label}")
    print(f"   API calls served      {r.calls} (throttled {r.throttled}, retries {r.retries})")
    ratio = floor_http / r.http
    print(f"   HTTP requests         {r.http}  floor {floor_http}  ratio floor/actual {ratio:.3f}")
    if r.rate > 0:
        print(
            f"   wall time             {r.wall:.2f} s  floor {floor_time:.2f} s "
            f"(fake: {r.rate:g} calls/s, burst {r.burst:g})  "
            f"ratio floor/actual {floor_time / r.wall:.3f}"
        )
    else:
        rate = r.accounts / r.wall
        print(f"   wall time             {r.wall:.2f} s  ({rate:.0f} locks/s, no rate limit)")


def main() -> None:
    """Parse arguments, run both targets, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=400.0, help="fake's calls/s (0 = no limit)")
    parser.add_argument("--burst", type=float, default=0.0, help="bucket size (0 = one second)")
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--google-batch", type=int, default=1000)
    parser.add_argument("--via", choices=("connector", "dispatcher"), default="connector")
    args = parser.parse_args()
    args.burst = args.burst or args.rate
    logging.disable(logging.WARNING)  # the dispatcher logs every throttled delivery
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        tls = make_tls_files(tmp / "tls")
        paces = [0.0, args.rate] if args.rate > 0 else [0.0]
        for pace in paces:
            args.pace = pace
            if args.via == "connector":
                for target in (m365, google):
                    report(target(tls, tmp, args))
            else:
                for result in via_dispatcher(tls, tmp, args):
                    report(result)


if __name__ == "__main__":
    main()
