"""argon2id hashing in a bounded thread pool, off the event loop.

argon2-cffi releases the GIL, so a thread per core reaches the hash-bound limit. The pool has a
queue limit: past it ``Overloaded`` is raised at once, so a flood sheds load instead of queueing
for seconds or exhausting memory (each verify holds ``memory_kib`` of RAM).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gateway.errors import Overloaded
from gateway.settings import HashingSettings


class Hasher:
    """Hash and verify passwords with argon2id in a bounded pool."""

    def __init__(self, settings: HashingSettings) -> None:
        self._ph = PasswordHasher(
            time_cost=settings.time_cost,
            memory_cost=settings.memory_kib,
            parallelism=settings.parallelism,
        )
        self.workers = settings.workers or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="argon2")
        self._limit = settings.queue_limit + self.workers
        self._inflight = 0
        self._lock = threading.Lock()
        self.saturated = 0
        self.dummy_hash = self._ph.hash(os.urandom(16).hex())

    def _enter(self) -> None:
        with self._lock:
            if self._inflight >= self._limit:
                self.saturated += 1
                raise Overloaded("hash pool saturated")
            self._inflight += 1

    def _leave(self) -> None:
        with self._lock:
            self._inflight -= 1

    @property
    def inflight(self) -> int:
        """Hash jobs queued or running."""
        return self._inflight

    def hash_sync(self, password: str) -> str:
        """Hash on the calling thread (CLI and tests)."""
        return self._ph.hash(password)

    def verify_sync(self, encoded: str, password: str) -> bool:
        """Verify on the calling thread; False for a mismatch or an unusable hash."""
        try:
            return self._ph.verify(encoded, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, encoded: str) -> bool:
        """True when ``encoded`` was made with weaker parameters than configured."""
        try:
            return self._ph.check_needs_rehash(encoded)
        except InvalidHashError:
            return True

    async def hash(self, password: str) -> str:
        """Hash in the pool."""
        self._enter()
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self._ph.hash, password)
        finally:
            self._leave()

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a place in the pool for a whole check; ``Overloaded`` at once when it is full.

        Taking the slot *before* any other work means a shed request has changed nothing
        (no lockout count, no audit row).
        """
        self._enter()
        try:
            yield
        finally:
            self._leave()

    async def verify(self, encoded: str | None, password: str, *, in_slot: bool = False) -> bool:
        """Verify in the pool; ``None`` verifies against a dummy hash and returns False.

        ``in_slot`` says the caller already holds a ``slot()``.
        """
        if not in_slot:
            with self.slot():
                return await self.verify(encoded, password, in_slot=True)
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(
            self._pool, self.verify_sync, encoded or self.dummy_hash, password
        )
        return ok and encoded is not None

    def close(self) -> None:
        """Stop the pool."""
        self._pool.shutdown(wait=False, cancel_futures=True)
