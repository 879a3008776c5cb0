"""The asyncio propagation dispatcher: brings each target to its desired state.

It wakes when a transaction commits (``service.after_commit``) and polls as a fallback. Each
round leases due rows per resource, up to the resource's concurrency limit and what its
circuit breaker allows, opens the sealed password, maps the row to a ``DesiredState`` (the one
rule in ``gateway.desired``) and calls the connector. Outcomes are recorded in batches with
compare-and-set. Reactions, in one place (``classify``): TransientError -> retry with capped
exponential backoff and full jitter (honouring ``retry_after``) and count toward the breaker;
NotFoundError, RejectedError, TargetConfigError, any other ConnectorError or an unexpected
exception -> dead-letter with the reason (never a secret). A poison row never blocks others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from pydantic import SecretStr

from connectors.base import AccountRef, Connector
from connectors.registry import build as build_connector
from gateway.backoff import Backoff, Breaker
from gateway.delivery import (
    Job,
    Outcome,
    checkpoint,
    claim,
    complete,
    release_leases,
    wipe_stale,
)
from gateway.desired import desired_state
from gateway.errors import (
    ConnectorError,
    GatewayError,
    NotFoundError,
    TargetConfigError,
    TransientError,
)
from gateway.pgnotify import Listener
from gateway.policies import PolicySet, ResourcePolicy
from gateway.propagation_models import seal_purpose

if TYPE_CHECKING:
    from gateway.runtime import Runtime

log = logging.getLogger("gateway.dispatcher")
SWEEP_SECONDS = 60.0


CONFIG_PAUSE_SECONDS = 300.0


def classify(exc: BaseException, attempts: int, backoff: Backoff) -> Outcome:
    """The reaction to a failed delivery: retry (transient), pause the resource (its own
    configuration is wrong; the rows wait, passwords stay sealed) or dead-letter with the reason."""
    if isinstance(exc, TransientError):
        delay = backoff.delay(attempts + 1, exc.retry_after)
        return Outcome("retry", reason=f"{type(exc).__name__}: {exc}", delay=delay)
    if isinstance(exc, TargetConfigError):  # credentials, consent, permissions: not the row's fault
        reason = f"{type(exc).__name__}: {exc} (resource paused)"
        return Outcome("retry", reason=reason, delay=CONFIG_PAUSE_SECONDS, pause=True)
    if isinstance(exc, ConnectorError):
        relink = isinstance(exc, NotFoundError)
        return Outcome("dead", reason=f"{type(exc).__name__}: {exc}", relink=relink)
    return Outcome("dead", reason=f"unexpected {type(exc).__name__} in the connector")


class Dispatcher:
    """Delivers desired-state rows to connectors; a daemon Component."""

    name = "propagation"

    def __init__(
        self,
        rt: Runtime,
        *,
        owner: str | None = None,
        poll_interval: float = 2.0,
        lease: timedelta = timedelta(seconds=60),
        password_max_age: timedelta = timedelta(days=3),
        backoff: Backoff | None = None,
        breaker: Callable[[], Breaker] = Breaker,
        connectors: dict[str, Connector] | None = None,
    ) -> None:
        self.rt = rt
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.poll_interval = poll_interval
        self.lease = lease
        self.password_max_age = password_max_age
        self.backoff = backoff or Backoff()
        self._new_breaker = breaker
        self.breakers: dict[str, Breaker] = {}
        self.connectors: dict[str, Connector] = dict(connectors or {})
        self._fixed = connectors is not None
        self._policies: PolicySet | None = None
        self._inflight: dict[str, int] = {}  # leased and not yet recorded
        self._slots: dict[str, tuple[int, asyncio.Semaphore]] = {}
        self._running = 0
        self._flush_at = 1
        self._done: list[tuple[Job, Outcome]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False
        self.delivered = 0
        self._wiped = False
        self._listener: Listener | None = None
        self._retired: list[Connector] = []

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Begin delivering; registers the after-commit wake-up."""
        self._loop = asyncio.get_running_loop()
        self.rt.extras["propagation.dispatcher"] = self  # counters for GET /metrics
        if self.rt.store.is_sqlite:  # one node: any lease left behind is from a dead process
            await self._db(release_leases, self.rt.store)
        self.rt.service.after_commit.append(self.wake)
        if not self.rt.store.is_sqlite:  # other nodes' commits arrive by NOTIFY
            self._listener = Listener(self.rt.store.engine, self.wake)
            self._listener.start()
        self._runner = asyncio.create_task(self._run(), name="dispatcher")

    async def stop(self) -> None:
        """Stop claiming, let deliveries in flight finish, record them, close connectors."""
        self._stopping = True
        with contextlib.suppress(ValueError):
            self.rt.service.after_commit.remove(self.wake)
        self._wake.set()
        if self._listener is not None:
            await self._db(self._listener.stop)
        if self._runner is not None:
            await self._runner
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=30)
        stuck = list(self._tasks)
        for task in stuck:  # a hung target: record the delivery as interrupted (retried later)
            task.cancel()
        if stuck:
            await asyncio.gather(*stuck, return_exceptions=True)
        await self._flush()
        await self._db(release_leases, self.rt.store, self.owner)
        if not self._fixed:
            for connector in [*self.connectors.values(), *self._retired]:
                with contextlib.suppress(Exception):
                    await connector.aclose()

    def wake(self) -> None:
        """Thread-safe: a transaction committed, look for due rows now."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._wake.set)

    async def _db(self, fn: Callable[..., object], *args: object) -> object:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    # ------------------------------------------------------------------ main loop
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        while not self._stopping:
            self._wake.clear()
            started = 0
            try:
                await self._flush()
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + SWEEP_SECONDS
                    await self.sweep()
                started = await self._round()
            except Exception:
                log.exception("dispatcher round failed")
                await asyncio.sleep(self.poll_interval)
            if started:
                continue
            if self._retired and not self._tasks:
                retired, self._retired = self._retired, []
                for connector in retired:
                    with contextlib.suppress(Exception):
                        await connector.aclose()
            if self._wiped and not self._tasks:
                self._wiped = False
                with contextlib.suppress(Exception):
                    await self._db(checkpoint, self.rt.store)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    def _sync_connectors(self) -> dict[str, ResourcePolicy]:
        policies = self.rt.policies
        enabled = {r.name: r for r in policies.enabled()}
        if policies is not self._policies and not self._fixed:
            before = self._policies.resources if self._policies is not None else {}
            old, self.connectors = self.connectors, {}
            for name, res in enabled.items():
                if name in old and before.get(name) == res:
                    self.connectors[name] = old.pop(name)  # unchanged: keep its connections
                    continue
                self.breakers.pop(name, None)  # a changed resource starts with a closed breaker
                try:
                    self.connectors[name] = build_connector(
                        name, res.connector, res.connection, res.link
                    )
                except GatewayError as exc:
                    log.error("resource %s: connector not built: %s", name, exc)
            self._retired.extend(old.values())  # closed once nothing is in flight
        self._policies = policies
        return {n: r for n, r in enabled.items() if n in self.connectors}

    async def _round(self) -> int:
        resources = self._sync_connectors()
        quotas: dict[str, int] = {}
        for name, res in resources.items():
            breaker = self.breakers.setdefault(name, self._new_breaker())
            # lease up to twice the concurrency: the next batch is ready when a slot frees
            free = 2 * res.concurrency - self._inflight.get(name, 0)
            if free > 0:
                quotas[name] = breaker.allowance(free)
        self._flush_at = max(1, min(64, sum(r.concurrency for r in resources.values())))
        if not any(quotas.values()):
            return 0
        now = self.rt.service.clock.now()
        jobs = await asyncio.get_running_loop().run_in_executor(
            None, claim, self.rt.store, self.owner, quotas, now, self.lease
        )
        assert isinstance(jobs, list)
        for name, wanted in quotas.items():
            got = sum(1 for j in jobs if j.resource == name)
            if got < wanted and self.breakers[name].probing and got == 0:
                self.breakers[name].probing = False
        for job in jobs:
            self._inflight[job.resource] = self._inflight.get(job.resource, 0) + 1
            task = asyncio.create_task(self._deliver(job, resources[job.resource]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(jobs)

    # ------------------------------------------------------------------ one delivery
    async def _deliver(self, job: Job, policy: ResourcePolicy) -> None:
        breaker = self.breakers[job.resource]
        limit, slots = self._slots.get(job.resource, (0, asyncio.Semaphore(0)))
        if limit != policy.concurrency:  # new resource, or its concurrency was reloaded
            slots = asyncio.Semaphore(policy.concurrency)
            self._slots[job.resource] = (policy.concurrency, slots)
        async with slots:
            self._running += 1
            try:
                outcome = await self._attempt(job, policy)
            except asyncio.CancelledError:
                self._done.append((job, Outcome("retry", reason="delivery interrupted")))
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is classified
                outcome = classify(exc, job.attempts, self.backoff)
            finally:
                self._running -= 1
        if outcome.pause:
            breaker.pause(CONFIG_PAUSE_SECONDS)
        elif outcome.kind == "retry":
            breaker.failure()
        else:
            breaker.success()
        if outcome.kind == "done":
            self.delivered += 1
        else:
            log.warning(
                "delivery to %s for %s failed (%s): %s",
                job.resource,
                job.identity.username,
                outcome.kind,
                outcome.reason,
                extra={"resource": job.resource, "account": job.identity.username},
            )
        self._done.append((job, outcome))
        if len(self._done) >= self._flush_at or self._running == 0:
            self._wake.set()

    async def _attempt(self, job: Job, policy: ResourcePolicy) -> Outcome:
        connector = self.connectors.get(job.resource)
        if connector is None:  # its policy was reloaded into an unusable state meanwhile
            raise TransientError("the resource is not available; retrying", resource=job.resource)
        password: SecretStr | None = None
        if job.sealed_password is not None and job.state.password_pending:
            password = SecretStr(
                self.rt.sealer.open(job.sealed_password, seal_purpose(job.account_id, job.resource))
            )
        desired = desired_state(job.state, policy.actions, version=job.version, owned=job.owned)
        ref = AccountRef(job.target_key) if job.target_key else None
        if ref is None:
            ref = await connector.find_account(job.identity)
            if ref is None:
                raise NotFoundError(
                    "no linked account at the target",
                    resource=job.resource,
                    account=job.identity.username,
                )
        send = password if policy.actions.password_change == "set" else None
        owned = await connector.apply(ref, desired, send)
        return Outcome("done", owned=frozenset(owned), target_key=ref.key)

    async def _flush(self) -> None:
        """Record finished deliveries (one transaction per batch) and free their slots."""
        if not self._done:
            return
        batch, self._done = self._done, []
        now = self.rt.service.clock.now()
        try:
            await self._db(complete, self.rt.store, self.owner, batch, now)
        except Exception:
            log.exception("recording %d outcomes failed; their leases will expire", len(batch))
        for job, outcome in batch:
            self._inflight[job.resource] -= 1
            if outcome.kind != "retry" and job.sealed_password is not None:
                self._wiped = True

    # ------------------------------------------------------------------ helpers for tests/jobs
    async def sweep(self) -> int:
        """Wipe pending passwords older than the maximum age."""
        now = self.rt.service.clock.now()
        result = await self._db(wipe_stale, self.rt.store, now, self.password_max_age)
        assert isinstance(result, int)
        return result

    async def idle(self, timeout: float = 30.0) -> None:
        """Wait until nothing is in flight and a round finds no due row (tests, benchmarks)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            busy = self._tasks or self._done or any(self._inflight.values())
            if not busy and await self._quiet():
                return
            await asyncio.sleep(0.01)
        raise TimeoutError("the dispatcher did not become idle")

    async def _quiet(self) -> bool:
        from gateway.propagation_status import due_count

        now = self.rt.service.clock.now()
        held = [name for name, breaker in self.breakers.items() if breaker.is_open]
        count = await self._db(due_count, self.rt.store, now, held)
        return count == 0
