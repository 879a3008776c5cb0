"""Shared plumbing for the HTTP cloud connectors (Microsoft 365, Google Workspace).

- ``ca_bundle``: the CA file to verify against (configured, else the system's), never taken from
  the environment (``REQUESTS_CA_BUNDLE`` and friends are ignored on purpose).
- ``secret_ref``: a pydantic-friendly check that a ``file:``/``env:`` reference resolves.
- ``Worker`` / ``Batcher``: one worker thread per connector; the batcher coalesces concurrent
  ``apply()`` calls into batches that the worker thread sends,
  so a burst of 1,000 locks costs about ``1000 / batch size`` round trips, not 1,000.
- ``Suspensions``: the ownership rule shared by both targets: suspend only an account that is
  enabled now (and claim it), restore only what the gateway itself suspended.
- ``safe_text`` / ``retry_after``: target messages without secrets; ``Retry-After`` parsing.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ssl
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import certifi
from pydantic import ValidationInfo

from connectors.base import AccountRef
from gateway.errors import ConfigError, ConnectorError, TransientError
from gateway.settings import check_secret_ref as settings_check_secret_ref
from gateway.settings import resolving

__all__ = [
    "DISABLED",
    "ENABLED_HINT",
    "FORCE_CHANGE",
    "Batcher",
    "Suspensions",
    "Worker",
    "ca_bundle",
    "check_secret_ref",
    "retry_after",
    "safe_text",
]

DISABLED = "disabled"
FORCE_CHANGE = "force_change"
ENABLED_HINT = "enabled"  # AccountRef.extra key: the account's state as read by find_account

T = TypeVar("T")
R = TypeVar("R")


def ca_bundle(configured: str | None) -> str:
    """The CA file to verify servers with: the configured one, else the system's default."""
    if configured:
        if not Path(configured).is_file():
            raise ConfigError(f"CA bundle {configured} does not exist")
        return configured
    system = ssl.get_default_verify_paths().openssl_cafile
    return system if Path(system).is_file() else certifi.where()


def check_secret_ref(ref: str, info: ValidationInfo | None = None) -> str:
    """Validate a secret reference in a ``Config`` validator; it must resolve now, except in
    documentation examples (``*.example.toml``), where only its form is checked."""
    return settings_check_secret_ref(ref, resolve=info is None or resolving(info.context))


def safe_text(text: object, secrets: Sequence[str] = (), limit: int = 300) -> str:
    """A target's message, shortened and with any of ``secrets`` blanked out."""
    out = str(text)
    for secret in secrets:
        if secret:
            out = out.replace(secret, "***")
    return out[:limit]


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, when.timestamp() - current)


class Suspensions:
    """Who may suspend and restore: the ownership rule shared by both cloud targets.

    The gateway claims a suspension only when the account is enabled when it acts, and restores
    only a suspension it claimed (``owned``). Accounts this process asked the target to suspend
    are also remembered, so a redelivery whose ``owned`` was lost (outcome not recorded, or a
    timeout after the target applied the change) still recognises its own suspension. The memory
    is per process: after a restart only ``owned`` counts.
    """

    def __init__(self) -> None:
        self._mine: set[str] = set()

    async def plan(
        self,
        account: AccountRef,
        disabled: bool,
        owned: set[str],
        is_enabled: Callable[[], Awaitable[bool]],
    ) -> bool | None:
        """True to suspend, False to restore, None to leave; updates ``owned`` in place.

        ``is_enabled`` reads the target; it is skipped when ``find_account`` just read the state
        (``ENABLED_HINT`` in the reference it returned, used by the first delivery).
        """
        key = account.key
        hint = account.extra.get(ENABLED_HINT)
        if disabled:
            if DISABLED in owned:
                return None
            if (hint == "true") if hint is not None else await is_enabled():
                owned.add(DISABLED)
                self._mine.add(key)
                return True
            if key in self._mine:
                owned.add(DISABLED)
            return None
        if DISABLED in owned or key in self._mine:
            owned.discard(DISABLED)
            self._mine.discard(key)
            return False
        return None


class Batcher(Generic[T, R]):
    """Coalesces concurrent submissions into batches of at most ``max_size``, sent one at a time.

    ``run`` is blocking; it runs in ``executor`` and returns one result or ``ConnectorError`` per
    item, in order, or raises a ``ConnectorError`` that then applies to the whole batch. When a
    target throttles (a ``TransientError`` with ``retry_after``), the next batch waits that long:
    the failed calls go back to the dispatcher, the queued ones are held instead of hammering.
    With ``rate`` (calls per second, e.g. the target's documented quota) batches are paced so
    that the target is not driven into throttling in the first place.
    """

    def __init__(
        self,
        run: Callable[[list[T]], Sequence[R | ConnectorError]],
        *,
        max_size: int,
        executor: Callable[[], Executor],
        window: float = 0.002,
        rate: float | None = None,
    ) -> None:
        self._run = run
        self._rate = rate
        self._max = min(max_size, max(1, int(rate))) if rate else max_size
        self._tat = 0.0
        self._executor = executor
        self._window = window
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self._hold_until = 0.0
        self.batches = 0

    async def submit(self, item: T) -> R:
        """Queue ``item`` for the next batch and wait for its own result."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, fut))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self._window)
        while self._pending:
            chunk = self._pending[: self._max]
            del self._pending[: self._max]
            live = [(item, fut) for item, fut in chunk if not fut.done()]
            if not live:
                continue
            hold = max(self._hold_until, self._paced(len(live))) - loop.time()
            items = [item for item, _ in live]
            try:
                if hold > 0:
                    await asyncio.sleep(hold)
                self.batches += 1
                results = await loop.run_in_executor(self._executor(), self._run, items)
            except asyncio.CancelledError:
                _fail(live, TransientError("connector closed"))
                raise
            except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
                self._honour(exc)
                _fail(live, exc)
                continue
            for result in results:
                self._honour(result)
            for (_, fut), result in zip(live, results, strict=True):
                if fut.done():
                    continue
                if isinstance(result, ConnectorError):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)

    def _paced(self, calls: int) -> float:
        """When a batch of ``calls`` may go, keeping to ``rate`` calls/s (bursts of one second)."""
        if not self._rate:
            return 0.0
        now = asyncio.get_running_loop().time()
        start = max(now, self._tat - (self._rate - calls) / self._rate)
        self._tat = max(self._tat, start) + calls / self._rate
        return start

    def _honour(self, outcome: object) -> None:
        """After a throttled call, send nothing more until its ``Retry-After`` has passed."""
        if isinstance(outcome, TransientError) and outcome.retry_after:
            until = asyncio.get_running_loop().time() + outcome.retry_after
            self._hold_until = max(self._hold_until, until)

    async def aclose(self) -> None:
        """Fail anything still queued and stop the worker task."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        _fail(self._pending, TransientError("connector closed"))
        self._pending.clear()


def _fail(waiting: Sequence[tuple[Any, asyncio.Future[Any]]], exc: BaseException) -> None:
    for _, fut in waiting:
        if not fut.done():
            fut.set_exception(exc)


class Worker(Generic[T, R]):
    """One worker thread per connector (blocking clients live there) and the batcher feeding it."""

    def __init__(
        self,
        name: str,
        run_batch: Callable[[list[T]], Sequence[R | ConnectorError]],
        *,
        max_size: int,
        rate: float | None = None,
    ) -> None:
        self._name = name
        self._executor: ThreadPoolExecutor | None = None
        self.batcher: Batcher[T, R] = Batcher(
            run_batch, max_size=max_size, executor=self._pool, rate=rate
        )

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=self._name)
        return self._executor

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking call in the worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool(), fn, *args)

    async def submit(self, item: T) -> R:
        """Queue one call for the next batch and wait for its result."""
        return await self.batcher.submit(item)

    async def aclose(self, close: Callable[[], None]) -> None:
        """Fail queued calls, run ``close`` in the worker thread, stop the thread."""
        await self.batcher.aclose()
        if self._executor is not None:
            await self.call(close)
            self._executor.shutdown(wait=True)
            self._executor = None


def https_url(value: str) -> str:
    """Validator body for endpoint settings: only ``https://`` URLs (CA checks are always on)."""
    if not value.startswith("https://"):
        raise ValueError("must be an https:// URL")
    return value


class BatchClient(Protocol[T]):
    """What a cloud client offers the shared connector plumbing."""

    def run_batch(self, items: list[T]) -> Sequence[Any | ConnectorError]: ...

    def close(self) -> None: ...


class BatchedConnector(Generic[T]):
    """Plumbing the cloud connectors share: the client, one batching worker thread, and the
    memory of suspensions the gateway itself made (see ``Suspensions``)."""

    def _start(
        self,
        prefix: str,
        resource: str,
        client: BatchClient[T],
        batch_size: int,
        rate: float | None,
    ) -> None:
        self.resource = resource
        self._suspensions = Suspensions()
        self._worker: Worker[T, Any] = Worker(
            f"{prefix}-{resource}", client.run_batch, max_size=batch_size, rate=rate
        )
        self._close_client = client.close

    @property
    def batches(self) -> int:
        """How many batch requests were sent."""
        return self._worker.batcher.batches

    async def aclose(self) -> None:
        """Stop the batch worker and close connections."""
        await self._worker.aclose(self._close_client)
