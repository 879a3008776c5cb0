"""RADIUS benchmark: cold path vs the hash-bound limit, warm path vs FreeRADIUS, and overload.

One load generator for everything: pyrad's ``ClientAsync`` (Message-Authenticator on every
request). The gateway listener and FreeRADIUS run as separate processes so their CPU time can be
read from /proc; for the warm comparison both servers are pinned to core 1 and the generator to
core 0 (RECIPES.md section 11).

1. Cold: every request is a distinct account (one argon2id verify each). Compared with the
   hash-bound limit measured in the same run: cores / single verify time. Goal >= 0.9.
2. Warm: the same accounts again (success cache on) vs Debian's FreeRADIUS 3.2.1 with a users
   file of cleartext passwords, same generator, same pinning. Goal >= 0.5 of FreeRADIUS;
   server CPU per request is printed for both (FreeRADIUS 3.2.1 does not sign its replies).
3. Overload: open-loop arrivals at twice the cold capacity, cache off, NAS-like retransmissions
   (timeout 1 s, 2 retries). p50/p99 of answered requests must stay bounded (shed, not queued),
   and every hash the server ran belongs to a decided request (retransmissions add none).

Usage: .venv/bin/python benchmarks/radius.py [--accounts 600] [--warm 20000] [--overload 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyrad import packet as rp  # noqa: E402
from pyrad.client_async import ClientAsync  # noqa: E402

SECRET = "bench-radius-secret"
CORES = os.cpu_count() or 1
TICK = os.sysconf("SC_CLK_TCK")


def user(i: int) -> str:
    return f"user{i:05d}"


def password(i: int) -> str:
    return f"Bench-Pass-{i:05d}-xq"


# --------------------------------------------------------------------------- gateway server
def _settings(workdir: Path) -> Any:
    from gateway.settings import Settings

    return Settings(
        database={"url": f"sqlite:///{workdir / 'gateway.db'}"},
        secrets={"key_file": workdir / "secret.key"},
        mail={"maildir": workdir / "mail"},
        policies_dir=workdir / "policies",
    )


def serve(workdir: Path, port: int, cache: int, max_pending: int) -> None:
    """Child process: run the gateway's RADIUS listener until SIGTERM, then print metrics."""
    from connectors.radius import RadiusConfig
    from gateway.policies import Actions, Covers, ResourcePolicy
    from gateway.radius.listener import RadiusListener
    from gateway.runtime import build

    os.environ["GW_BENCH_SECRET"] = SECRET
    rt = build(_settings(workdir))
    policy = ResourcePolicy(
        name="bench",
        connector="radius",
        enabled=True,
        concurrency=4,
        covers=Covers(),
        link={},
        actions=Actions(
            password_change="maintain", expired="reject", locked="reject", unlocked="maintain"
        ),
        connection=RadiusConfig.model_validate(
            {
                "clients": [{"address": "127.0.0.1", "secret": "env:GW_BENCH_SECRET"}],
                "success_cache_seconds": cache,
                "max_pending": max_pending,
            }
        ),
    )
    verifies = [0]
    original = rt.hasher.verify

    async def counting(encoded: str | None, pw: str, *, in_slot: bool = False) -> bool:
        ok = await original(encoded, pw, in_slot=in_slot)
        verifies[0] += 1
        return ok

    setattr(rt.hasher, "verify", counting)  # noqa: B010 - count the hashes the server runs
    hash_cpu = [0.0]
    verify_sync = rt.hasher.verify_sync

    def timed(encoded: str, pw: str) -> bool:
        c = time.thread_time()
        try:
            return verify_sync(encoded, pw)
        finally:
            hash_cpu[0] += time.thread_time() - c  # a float add under the GIL

    setattr(rt.hasher, "verify_sync", timed)  # noqa: B010

    async def main() -> None:
        listener = RadiusListener(rt, policy=lambda: policy, listen=[f"127.0.0.1:{port}"])
        await listener.start()
        stop = asyncio.Event()

        def report() -> None:
            out = listener.metrics.snapshot()
            out["verifies"] = verifies[0]
            out["hasher_saturated"] = rt.hasher.saturated
            out["hash_cpu"] = hash_cpu[0]
            print(json.dumps(out), flush=True)

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, report)
        print("READY", flush=True)
        await stop.wait()
        await listener.stop()
        report()

    asyncio.run(main())
    rt.close()


def setup(workdir: Path, accounts: int) -> None:
    """Create the database, key, policies and ``accounts`` users with distinct passwords.

    The rows are bulk-inserted (hashes made in a pool of one thread per core) to keep the set-up
    short; every authentication in the benchmark goes through the service as usual.
    """
    from concurrent.futures import ThreadPoolExecutor
    from datetime import UTC, datetime

    from gateway.hashing import Hasher
    from gateway.sealing import create_key_file
    from gateway.service import identity_key
    from gateway.settings import HashingSettings
    from gateway.store.engine import Store, make_engine
    from gateway.store.migrate import upgrade
    from gateway.store.models import Account

    (workdir / "policies").mkdir(parents=True, exist_ok=True)
    (workdir / "policies" / "org.toml").write_text("[lockout]\nthreshold = 5\n")
    create_key_file(workdir / "secret.key")
    engine = make_engine(f"sqlite:///{workdir / 'gateway.db'}")
    upgrade(engine)
    hasher = Hasher(HashingSettings())
    with ThreadPoolExecutor(CORES) as pool:
        hashes = list(pool.map(lambda i: hasher.hash_sync(password(i)), range(accounts)))
    hasher.close()
    now = datetime.now(UTC)
    store = Store(engine)
    with store.write() as s:
        for i, encoded in enumerate(hashes):
            s.add(
                Account(
                    kind="user",
                    username=user(i),
                    username_key=identity_key(user(i)),
                    email=f"{user(i)}@example.org",
                    email_key=identity_key(f"{user(i)}@example.org"),
                    display_name="",
                    groups=[],
                    attributes={},
                    state="active",
                    password_hash=encoded,
                    password_changed_at=now,
                    never_expires=False,
                    expired_notified=False,
                    must_change=False,
                    temporary=False,
                    grace_used=0,
                    failed_count=0,
                    mfa_failed_count=0,
                    version=1,
                    created_at=now,
                    updated_at=now,
                )
            )
    engine.dispose()


def hash_bound() -> tuple[float, float, float]:
    """(single verify seconds, cores / single verify, pool rate with one thread per core)."""
    from concurrent.futures import ThreadPoolExecutor

    from gateway.hashing import Hasher
    from gateway.settings import HashingSettings

    hasher = Hasher(HashingSettings())
    encoded = hasher.hash_sync("Bench-Pass-00000-xq")
    times = []
    for _ in range(30):
        t = time.perf_counter()
        hasher.verify_sync(encoded, "Bench-Pass-00000-xq")
        times.append(time.perf_counter() - t)
    single = statistics.median(times)
    n = 0
    deadline = time.perf_counter() + 3.0

    def work() -> int:
        done = 0
        while time.perf_counter() < deadline:
            hasher.verify_sync(encoded, "Bench-Pass-00000-xq")
            done += 1
        return done

    t0 = time.perf_counter()
    with ThreadPoolExecutor(CORES) as pool:
        n = sum(pool.map(lambda _: work(), range(CORES)))
    pool_rate = n / (time.perf_counter() - t0)
    hasher.close()
    return single, CORES / single, pool_rate


# --------------------------------------------------------------------------- processes
def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def pin(pid: int, cores: str) -> None:
    subprocess.run(["taskset", "-a", "-p", "-c", cores, str(pid)], check=True, capture_output=True)


def start_gateway(workdir: Path, port: int, cache: int, max_pending: int) -> subprocess.Popen[str]:
    cmd = [sys.executable, __file__, "--serve", str(workdir), "--port", str(port)]
    cmd += ["--cache", str(cache), "--max-pending", str(max_pending)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "READY":
        proc.kill()
        raise SystemExit(f"gateway server did not start: {line!r}")
    return proc


def gateway_metrics(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Ask the running server for its counters (SIGUSR1 prints one JSON line)."""
    assert proc.stdout is not None
    proc.send_signal(signal.SIGUSR1)
    metrics: dict[str, Any] = json.loads(proc.stdout.readline())
    return metrics


def stop_gateway(proc: subprocess.Popen[str]) -> dict[str, Any]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    metrics: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return metrics


FREERADIUS_CONF = """
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = ${confdir}/log
radacctdir = ${logdir}/radacct
name = freeradius
run_dir = ${confdir}/run
libdir = /usr/lib/freeradius
pidfile = ${run_dir}/${name}.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 65536
hostname_lookups = no
log {
    destination = stdout
    auth = no
}
security {
    allow_core_dumps = no
    max_attributes = 200
    reject_delay = 0
    status_server = no
}
thread pool {
    start_servers = 4
    max_servers = 4
    min_spare_servers = 1
    max_spare_servers = 4
    max_requests_per_server = 0
}
client localhost {
    ipaddr = 127.0.0.1
    secret = %(secret)s
    require_message_authenticator = yes
}
modules {
    files {
        filename = ${confdir}/users
    }
    pap {
    }
}
server default {
    listen {
        type = auth
        ipaddr = 127.0.0.1
        port = %(port)d
    }
    authorize {
        files
        pap
    }
    authenticate {
        Auth-Type PAP {
            pap
        }
    }
}
"""


def start_freeradius(confdir: Path, port: int, accounts: int) -> subprocess.Popen[str]:
    """Debian's FreeRADIUS with a private config dir and a users file of cleartext passwords."""
    for sub in ("log", "run"):
        (confdir / sub).mkdir(parents=True, exist_ok=True)
    (confdir / "radiusd.conf").write_text(FREERADIUS_CONF % {"secret": SECRET, "port": port})
    (confdir / "users").write_text(
        "".join(f'{user(i)} Cleartext-Password := "{password(i)}"\n' for i in range(accounts))
    )
    proc = subprocess.Popen(
        ["/usr/sbin/freeradius", "-f", "-d", str(confdir), "-l", "stdout"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    time.sleep(1.5)
    if proc.poll() is not None:
        raise SystemExit("freeradius did not start")
    return proc


# --------------------------------------------------------------------------- load generator
class Load:
    """pyrad ClientAsync load: closed loop (``inflight``) or open loop (``rate`` per second)."""

    def __init__(
        self, port: int, timeout: float, retries: int, sockets: int = 1, early_copy: bool = False
    ) -> None:
        self.early_copy = early_copy
        from gateway.radius.wire import dictionary

        self.clients = [
            ClientAsync(
                server="127.0.0.1",
                auth_port=port,
                secret=SECRET.encode(),
                dict=dictionary(),
                timeout=timeout,
                retries=retries,
            )
            for _ in range(sockets)
        ]
        self.latencies: list[float] = []
        self.accepts = 0
        self.other = 0
        self.unanswered = 0
        self._next = 0

    async def __aenter__(self) -> Load:
        for c in self.clients:
            await c.initialize_transports(
                enable_auth=True, local_addr="127.0.0.1", local_auth_port=0
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for c in self.clients:
            await c.deinitialize_transports()

    async def one(self, i: int) -> None:
        c = self.clients[self._next % len(self.clients)]
        self._next += 1
        while True:
            try:
                req = c.CreateAuthPacket(User_Name=user(i))
                break
            except Exception:  # 256 requests pending on this socket: wait a little
                await asyncio.sleep(0.005)
        req["User-Password"] = req.PwCrypt(password(i))
        t = time.perf_counter()
        try:
            future = c.SendPacket(req)
            if self.early_copy:  # an impatient NAS: the same datagram again 50 ms later
                raw = c.protocol_auth.pending_requests[req.id]["raw"]
                transport = c.protocol_auth.transport
                asyncio.get_running_loop().call_later(0.05, transport.sendto, raw)
            reply = await future
        except TimeoutError:
            self.unanswered += 1
            return
        self.latencies.append(time.perf_counter() - t)
        if reply.code == rp.AccessAccept:
            self.accepts += 1
        else:
            self.other += 1

    async def closed(self, ids: list[int], inflight: int) -> float:
        sem = asyncio.Semaphore(inflight)

        async def run(i: int) -> None:
            async with sem:
                await self.one(i)

        t = time.perf_counter()
        await asyncio.gather(*(run(i) for i in ids))
        return time.perf_counter() - t

    async def open(self, ids: list[int], rate: float) -> float:
        t0 = time.perf_counter()
        tasks = []
        for n, i in enumerate(ids):
            delay = t0 + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.one(i)))
        await asyncio.gather(*tasks)
        return time.perf_counter() - t0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def warm_run(port: int, pid: int, accounts: int, total: int) -> tuple[float, float, int]:
    """(answers/s, server CPU microseconds per answer, answered)."""
    ids = [n % accounts for n in range(total)]
    async with Load(port, timeout=3, retries=2) as load:
        await load.closed(ids[:2000], 128)  # warm-up (and primes any cache)
        load.latencies.clear()
        load.accepts = load.other = load.unanswered = 0
        cpu0 = cpu_seconds(pid)
        elapsed = await load.closed(ids, 128)
        cpu = cpu_seconds(pid) - cpu0
    answered = load.accepts + load.other
    return answered / elapsed, cpu / max(answered, 1) * 1e6, load.accepts


# --------------------------------------------------------------------------- main
def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=600)
    ap.add_argument("--warm", type=int, default=20000)
    ap.add_argument("--overload", type=float, default=10.0, help="seconds of overload")
    ap.add_argument("--max-pending", type=int, default=64)
    ap.add_argument("--serve", type=Path)
    ap.add_argument("--port", type=int)
    ap.add_argument("--cache", type=int, default=0)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.cache, args.max_pending)
        return

    all_cores = set(range(CORES))
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    with tempfile.TemporaryDirectory(prefix="gw-radius-bench-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        setup(work, args.accounts)
        print(f"setup: {args.accounts} accounts in {time.perf_counter() - t:.1f} s")
        before = hash_bound()

        # 1. cold path (the run also fills the success cache for the warm path)
        port = free_udp_port()
        gw = start_gateway(work, port, cache=300, max_pending=args.max_pending)

        async def cold() -> tuple[float, Load]:
            async with Load(port, timeout=2, retries=2) as load:
                elapsed = await load.closed(list(range(args.accounts)), 4 * CORES)
            return elapsed, load

        cpu0 = cpu_seconds(gw.pid)
        elapsed, load = asyncio.run(cold())
        cold_cpu = cpu_seconds(gw.pid) - cpu0
        cm = gateway_metrics(gw)
        after = hash_bound()  # measured again right after: other load on the box drifts
        single = (before[0] + after[0]) / 2
        bound = (before[1] + after[1]) / 2
        pool_rate = (before[2] + after[2]) / 2
        print(
            f"hash-bound limit (mean of before/after the cold run): single argon2id verify "
            f"{single * 1000:.1f} ms -> {CORES} cores / single = {bound:.1f}/s "
            f"(before {before[1]:.1f}, after {after[1]:.1f}); pool of {CORES} threads measured "
            f"{pool_rate:.1f}/s"
        )
        cold_rate = (load.accepts + load.other) / elapsed
        print(
            f"[1] cold path: {load.accepts}/{args.accounts} accepted in {elapsed:.2f} s = "
            f"{cold_rate:.1f}/s; p50 {pct(load.latencies, 50) * 1000:.0f} ms, "
            f"p99 {pct(load.latencies, 99) * 1000:.0f} ms; shed {cm['hash_saturation']}"
        )
        print(f"    ratio vs cores/single verify: {cold_rate / bound:.3f} (goal >= 0.9)")
        print(f"    ratio vs measured pool rate:  {cold_rate / pool_rate:.3f}")
        print(
            f"    server CPU {cold_cpu:.2f} s, of it argon2id {cm['hash_cpu']:.2f} s: hash share "
            f"{cm['hash_cpu'] / cold_cpu:.3f} = the CPU-bound ratio (robust to other load); "
            f"{cold_cpu / max(cm['verifies'], 1) * 1000:.1f} ms CPU per request"
        )

        # 2. warm path, pinned: server core 1, generator core 0
        os.sched_setaffinity(0, {0})
        pin(gw.pid, "1")
        gw_rate, gw_cpu, gw_ok = asyncio.run(warm_run(port, gw.pid, args.accounts, args.warm))
        gw_metrics = stop_gateway(gw)
        fr_port = free_udp_port()
        fr = start_freeradius(work / "freeradius", fr_port, args.accounts)
        pin(fr.pid, "1")
        try:
            fr_rate, fr_cpu, fr_ok = asyncio.run(
                warm_run(fr_port, fr.pid, args.accounts, args.warm)
            )
        finally:
            fr.terminate()
            fr.wait(timeout=10)
        os.sched_setaffinity(0, all_cores)
        print(
            f"[2] warm path ({args.warm} requests, 128 in flight, server on core 1, "
            f"generator on core 0):"
        )
        print(
            f"    gateway:    {gw_rate:8.0f}/s  {gw_cpu:6.1f} us CPU/request  "
            f"({gw_ok} accepted; cache hits {gw_metrics['cache_hits']})"
        )
        print(f"    FreeRADIUS: {fr_rate:8.0f}/s  {fr_cpu:6.1f} us CPU/request  ({fr_ok} accepted)")
        print(
            f"    ratio gateway/FreeRADIUS: throughput {gw_rate / fr_rate:.3f} (goal >= 0.5), "
            f"CPU efficiency {fr_cpu / gw_cpu:.3f}"
        )

        # 3. overload: open loop at twice the cold capacity, cache off, retransmissions on
        port = free_udp_port()
        gw = start_gateway(work, port, cache=0, max_pending=args.max_pending)
        rate = 2 * cold_rate
        total = int(rate * args.overload)
        ids = [n % args.accounts for n in range(total)]

        async def overload() -> tuple[float, Load]:
            async with Load(port, timeout=1.0, retries=2, sockets=8, early_copy=True) as load:
                return await load.open(ids, rate), load

        elapsed, load = asyncio.run(overload())
        m = stop_gateway(gw)
        answered = load.accepts + load.other
        decided = m["accepts"] + m["rejects"]
        print(
            f"[3] overload: offered {total} at {rate:.0f}/s for {args.overload:.0f} s "
            f"(2 x cold), NAS timeout 1 s, 2 retries, every request also repeated after 50 ms"
        )
        print(
            f"    answered {answered} ({answered / total:.0%}), unanswered {load.unanswered}; "
            f"goodput {answered / elapsed:.1f}/s"
        )
        first = sum(1 for x in load.latencies if x < 1.0)
        print(f"    answered on the first transmission (< 1 s): {first} ({first / total:.0%})")
        print(
            f"    latency of answered: p50 {pct(load.latencies, 50) * 1000:.0f} ms, "
            f"p99 {pct(load.latencies, 99) * 1000:.0f} ms, max {max(load.latencies) * 1000:.0f} ms"
        )
        print(
            f"    server decision time p50 {m['decision_ms_p50']:.0f} ms, "
            f"p99 {m['decision_ms_p99']:.0f} ms (budget max_queue_seconds 0.5 s); "
            f"shed {m['hash_saturation']}, duplicates dropped/answered from cache "
            f"{m['duplicates']}, hasher Overloaded {m['hasher_saturated']}"
        )
        print(
            f"    hash work: {m['verifies']} verifies for {decided} decided requests "
            f"(extra per retransmission: {m['verifies'] - decided})"
        )
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
