"""The RADIUS listener: an asyncio UDP endpoint (IPv4 and IPv6) in the daemon's loop.

Per datagram, in this order, without awaiting anything:

1. size outside 20..4096 octets -> discarded (``malformed``);
2. source address not a client of the RADIUS resource -> discarded (``unknown_client``);
3. undecodable -> discarded (``malformed``);
4. a *bad* Message-Authenticator (or Accounting Request Authenticator) -> discarded
   (``bad_message_authenticator``; a rate-limited warning names the source) without touching any
   account, lockout counter or duplicate cache, since it proves nothing about anybody; a
   *missing* one on Access-Request -> discarded (``missing_message_authenticator``)
   unless the client is ``legacy``; a legacy request with Proxy-State but no
   Message-Authenticator is still discarded (``proxy_state_without_ma``);
5. a retransmission (same source, code, id, Request Authenticator) -> the cached reply, or
   nothing while the first copy is still being answered (``duplicates``): no second hash, no
   second failure;
6. more authentications in flight than can finish within ``max_queue_seconds`` at the rate
   they have been finishing (Little's law; at most ``max_pending``) -> shed
   (``hash_saturation``), no reply, so the NAS retries later instead of waiting in a queue for
   seconds; the request costs no hash and no failure;
7. otherwise a task decides (``access``) or records (``accounting``) and replies; rejects are
   sent after ``reject_delay_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from connectors.radius import RadiusClient, RadiusConfig
from gateway.radius import accounting, sessions, wire
from gateway.radius.access import SHED, AccessDecider, Outcome, Request
from gateway.radius.cache import SuccessCache, SuccessLog, stale
from gateway.radius.dedup import Key, ReplyCache
from gateway.radius.endpoint import Addr, Endpoint, Sender
from gateway.radius.metrics import Metrics
from gateway.service import identity_key

if TYPE_CHECKING:
    from collections.abc import Callable

    from gateway.policies import ResourcePolicy
    from gateway.runtime import Runtime

log = logging.getLogger("gateway.radius")
CACHE_KEY = "radius.success_cache"
FLUSH_EVERY = 5  # seconds between writes of cached successes (last login, audit)


def radius_policy(rt: Runtime) -> ResourcePolicy | None:
    """The first enabled resource using the ``radius`` connector, if any."""
    policies = getattr(rt, "policies", None)
    if policies is None:
        return None
    for resource in policies.enabled():
        if resource.connector == "radius":
            found: ResourcePolicy = resource
            return found
    return None


def wire_runtime(rt: Runtime) -> None:
    """Bind the session store and the success cache (a change listener) to the runtime."""
    sessions.bind(rt.store)
    cache = SuccessCache()
    rt.extras[CACHE_KEY] = cache
    rt.service.listeners.append(cache)


def component(rt: Runtime) -> RadiusListener | None:
    """The daemon component, when ``[radius] listen`` is set and a RADIUS resource is enabled."""
    if not rt.settings.radius.listen or radius_policy(rt) is None:
        return None
    return RadiusListener(rt)


def _split(spec: str) -> tuple[str, int]:
    host, _, port = spec.strip().rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class RadiusListener:
    """Answers Access-Requests and records accounting for one RADIUS resource."""

    name = "radius"

    def __init__(
        self,
        rt: Runtime,
        *,
        policy: Callable[[], ResourcePolicy | None] | None = None,
        listen: list[str] | None = None,
    ) -> None:
        self.rt = rt
        self._policy = policy or (lambda: radius_policy(rt))
        self.listen = list(listen if listen is not None else rt.settings.radius.listen)
        self.metrics = Metrics()
        self.dedup = ReplyCache(30.0)
        cache = rt.extras.get(CACHE_KEY)
        if not isinstance(cache, SuccessCache):
            cache = SuccessCache()
            rt.extras[CACHE_KEY] = cache
            rt.service.listeners.append(cache)
        self.cache = cache
        self.successes = SuccessLog(rt.store)
        self._io = ThreadPoolExecutor(2, thread_name_prefix="radius-db")
        self.decider = AccessDecider(rt.service, cache, self.successes, self.metrics)
        self.addresses: list[tuple[str, int]] = []
        self._endpoints: list[Endpoint] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._flusher: asyncio.Task[None] | None = None
        self.pending = 0
        self._completions: deque[float] = deque(maxlen=100_000)
        self._config: RadiusConfig | None = None
        self._clients: dict[str, tuple[RadiusClient, bytes] | None] = {}
        self._warned: dict[str, float] = {}

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Bind every ``listen`` address and start the success-log flusher."""
        for spec in self.listen:
            host, port = _split(spec)
            endpoint = Endpoint.open(host, port, self._datagram)
            self._endpoints.append(endpoint)
            self.addresses.append(endpoint.address)
            log.info("radius listening on %s port %d", *endpoint.address)
        self._flusher = asyncio.create_task(self._flush_loop())
        self.rt.extras["radius.metrics"] = self.metrics  # for the HTTP side, if it wants them
        policy = self._policy()
        if policy is not None:
            self._current(policy)

    async def stop(self) -> None:
        """Close the sockets, finish in-flight work and write the queued successes."""
        for endpoint in self._endpoints:
            endpoint.close()
        self._endpoints.clear()
        if self._flusher is not None:
            self._flusher.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._io, self.successes.flush)
        self._io.shutdown(wait=True)

    async def _flush_loop(self) -> None:
        tick = 0
        while True:
            await asyncio.sleep(1.0)
            tick += 1
            try:
                await self.sweep_cache()
                if tick % FLUSH_EVERY == 0 or len(self.successes) >= 10_000:
                    while len(self.successes):
                        await self.successes_flush()
            except Exception:  # retried at the next tick
                log.exception("RADIUS cache upkeep failed")

    async def successes_flush(self) -> int:
        """Write the queued cached successes now; returns how many."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, self.successes.flush)

    async def sweep_cache(self) -> int:
        """Drop cache entries of accounts changed elsewhere (version) or now with TOTP."""
        versions = self.cache.versions()
        if not versions:
            return 0
        loop = asyncio.get_running_loop()
        dropped = await loop.run_in_executor(self._io, stale, self.rt.store, versions)
        for account_id in dropped:
            self.cache.invalidate(account_id)
        return len(dropped)

    # ------------------------------------------------------------ packet path
    def _current(self, policy: ResourcePolicy) -> RadiusConfig:
        config = policy.connection
        assert isinstance(config, RadiusConfig)
        if config is not self._config:
            self._config = config
            self._clients = {}
            self.cache.clear()
            self.dedup.window = config.duplicate_window_seconds
            for client in config.clients:
                if client.legacy:
                    log.warning(
                        "RADIUS client %s (%s) is marked legacy: Access-Requests without "
                        "Message-Authenticator are accepted from it, which leaves it open to "
                        "BlastRADIUS (CVE-2024-3596) forgeries; fix the NAS and drop the flag",
                        client.name or client.address,
                        client.address,
                    )
        return config

    def _client(self, config: RadiusConfig, host: str) -> tuple[RadiusClient, bytes] | None:
        try:
            return self._clients[host]
        except KeyError:
            pass
        if len(self._clients) > 4096:
            self._clients.clear()
        client = config.client_for(host)
        found = self._clients[host] = (client, client.shared_secret()) if client else None
        return found

    def _warn_forged(self, host: str, what: str) -> None:
        now = time.monotonic()
        if now - self._warned.get(host, -1e9) > 60:
            self._warned[host] = now
            log.warning("RADIUS %s from %s failed verification (wrong shared secret?)", what, host)

    def _datagram(self, endpoint: Sender, data: bytes, addr: Addr) -> None:
        try:
            self.received(endpoint, data, addr)
        except Exception:  # a bad packet never takes the listener down
            log.exception("radius packet handling failed")
            self.metrics.discard("error")

    def received(self, transport: Sender, data: bytes, addr: Addr) -> None:
        """Handle one datagram (see the module docstring for the order of checks)."""
        if not wire.MIN_PACKET <= len(data) <= wire.MAX_PACKET:
            self.metrics.discard("malformed")
            return
        policy = self._policy()
        if policy is None:
            self.metrics.discard("no_policy")
            return
        config = self._current(policy)
        host = str(addr[0])
        known = self._client(config, host)
        if known is None:
            self.metrics.discard("unknown_client")
            return
        client, secret = known
        if data[0] == wire.ACCESS_REQUEST:
            self._access(transport, data, addr, policy, config, client, secret)
        elif data[0] == wire.ACCOUNTING_REQUEST:
            self._accounting(transport, data, addr, policy, secret)
        else:
            self.metrics.discard("unsupported_code")

    def _duplicate(self, transport: Sender, key: Key, addr: Addr, now: float) -> bool:
        entry = self.dedup.lookup(key, now)
        if entry is None:
            return False
        self.metrics.duplicates += 1
        if entry.reply is not None:
            transport.sendto(entry.reply, addr)
        return True

    def _access(
        self,
        transport: Sender,
        data: bytes,
        addr: Addr,
        policy: ResourcePolicy,
        config: RadiusConfig,
        client: RadiusClient,
        secret: bytes,
    ) -> None:
        try:
            pkt = wire.decode_access(data, secret)
        except wire.WireError:
            self.metrics.discard("malformed")
            return
        if wire.has_attribute(pkt, wire.MESSAGE_AUTHENTICATOR):
            if not wire.ma_valid(pkt):
                self.metrics.discard("bad_message_authenticator")
                self._warn_forged(str(addr[0]), "Message-Authenticator")
                return
        elif not client.legacy:
            self.metrics.discard("missing_message_authenticator")
            return
        elif wire.has_attribute(pkt, wire.PROXY_STATE):
            self.metrics.discard("proxy_state_without_ma")
            return
        now = time.monotonic()
        key: Key = (str(addr[0]), int(addr[1]), data[0], data[1], data[4:20])
        if self._duplicate(transport, key, addr, now):
            return
        states = wire.raw_values(pkt, wire.STATE)
        request = Request(
            user=wire.user_name(pkt),
            password=wire.password(pkt),
            state=states[0] if states else None,
            client=str(addr[0]),
        )
        if config.success_cache_seconds and request.password is not None and not states:
            digest = self.cache.digest(policy.name, identity_key(request.user), request.password)
            attributes = self.decider.cached(policy, request, digest)
            if attributes is not None:  # warm path: no hash, no database, no task
                self.metrics.accepts += 1
                self.dedup.begin(key, now)
                self._send(
                    transport, key, wire.access_reply(pkt, wire.ACCESS_ACCEPT, attributes), addr
                )
                return
        if self.pending >= self._admission_limit(config, now):
            self.metrics.hash_saturation += 1
            return
        self.dedup.begin(key, now)
        self.pending += 1
        self._spawn(self._answer_access(transport, addr, key, pkt, policy, config, request))

    def _admission_limit(self, config: RadiusConfig, now: float) -> int:
        """How many authentications may be in flight: what finishes within the queue budget."""
        done = self._completions
        while done and done[0] < now - 2.0:
            done.popleft()
        floor = 2 * self.rt.hasher.workers
        if len(done) < floor:
            return config.max_pending  # no rate known yet
        rate = len(done) / max(now - done[0], 0.25)
        return min(config.max_pending, max(floor, int(rate * config.max_queue_seconds)))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_access(
        self,
        transport: Sender,
        addr: Addr,
        key: Key,
        pkt: Any,
        policy: ResourcePolicy,
        config: RadiusConfig,
        request: Request,
    ) -> None:
        outcome: Outcome = SHED
        started = time.monotonic()
        try:
            outcome = await self.decider.decide(policy, request)
        except Exception:
            log.exception("radius access decision failed")
            self.metrics.discard("error")
        finally:
            self.pending -= 1
            self._completions.append(time.monotonic())
        if outcome.shed:
            self.dedup.abandon(key)
            return
        self.metrics.decided(time.monotonic() - started)
        reply = wire.access_reply(pkt, outcome.code, outcome.attributes)
        if outcome.code == wire.ACCESS_REJECT:
            self.metrics.rejects += 1
            delay = config.reject_delay_seconds
            asyncio.get_running_loop().call_later(delay, self._send, transport, key, reply, addr)
            return
        if outcome.code == wire.ACCESS_ACCEPT:
            self.metrics.accepts += 1
        self._send(transport, key, reply, addr)

    def _send(self, transport: Sender, key: Key, reply: bytes, addr: Addr) -> None:
        self.dedup.finish(key, reply)
        if not transport.is_closing():
            transport.sendto(reply, addr)

    def _accounting(
        self,
        transport: Sender,
        data: bytes,
        addr: Addr,
        policy: ResourcePolicy,
        secret: bytes,
    ) -> None:
        try:
            pkt = wire.decode_accounting(data, secret)
        except wire.WireError:
            self.metrics.discard("malformed")
            return
        if not accounting.authentic(pkt):
            self.metrics.discard("bad_request_authenticator")
            self._warn_forged(str(addr[0]), "Accounting Request Authenticator")
            return
        now = time.monotonic()
        key: Key = (str(addr[0]), int(addr[1]), data[0], data[1], data[4:20])
        if self._duplicate(transport, key, addr, now):
            return
        report = accounting.report(pkt, policy.name, str(addr[0]))
        if report is None:
            self.metrics.discard("bad_accounting")
            return
        self.dedup.begin(key, now)
        self._spawn(self._record(transport, addr, key, pkt, report))

    async def _record(
        self,
        transport: Sender,
        addr: Addr,
        key: Key,
        pkt: Any,
        report: sessions.Report,
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self._io, sessions.record, self.rt.store, report, self.rt.service.clock.now()
            )
        except Exception:
            log.exception("recording RADIUS accounting failed")
            self.metrics.discard("error")
            self.dedup.abandon(key)
            return
        self.metrics.accounting += 1
        self._send(transport, key, wire.accounting_reply(pkt), addr)
