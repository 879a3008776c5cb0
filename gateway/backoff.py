"""Retry timing for propagation: capped exponential backoff with full jitter, and a breaker.

Backoff: the n-th retry waits a uniform random time in [0, min(cap, base * 2**n)], but never
less than the target's ``Retry-After`` (itself capped at an hour).
Breaker states: closed -> (``threshold`` transient failures in a row) -> open for
``cooldown`` -> half-open (one probe) -> closed on success, or open again with the cooldown
doubled (up to ``max_cooldown``) on failure. A configuration error pauses the resource: the
breaker opens at once for the pause, and the rows stay pending with their sealed passwords.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with full jitter."""

    base: float = 1.0
    cap: float = 300.0
    max_retry_after: float = 3600.0

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
        ceiling = min(self.cap, self.base * 2 ** max(attempt - 1, 0))
        wait = (rng or random).uniform(0, ceiling)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_retry_after))
        return wait


@dataclass
class Breaker:
    """A per-resource circuit breaker on consecutive transient failures."""

    threshold: int = 5
    cooldown: float = 10.0
    max_cooldown: float = 300.0
    now: Callable[[], float] = time.monotonic
    failures: int = 0
    opened_until: float = 0.0
    current_cooldown: float = field(default=0.0)
    probing: bool = False

    def allowance(self, wanted: int) -> int:
        """How many deliveries may start now (0 while open, 1 while half-open)."""
        if self.failures < self.threshold:
            return wanted
        if self.now() < self.opened_until or self.probing:
            return 0
        self.probing = True
        return min(wanted, 1)

    def success(self) -> None:
        """A delivery worked: close."""
        self.failures = 0
        self.current_cooldown = 0.0
        self.probing = False

    def failure(self) -> None:
        """A transient failure: count it, open when the threshold is reached."""
        self.failures += 1
        self.probing = False
        if self.failures >= self.threshold:
            doubled = self.current_cooldown * 2 if self.current_cooldown else self.cooldown
            self.current_cooldown = min(self.max_cooldown, doubled)
            self.opened_until = self.now() + self.current_cooldown

    def pause(self, seconds: float) -> None:
        """A configuration error (credentials, permissions): hold the resource back for ``seconds``;
        then one probe, as after any opening."""
        self.failures = max(self.failures, self.threshold)
        self.probing = False
        self.current_cooldown = max(self.current_cooldown, seconds)
        self.opened_until = self.now() + seconds

    @property
    def is_open(self) -> bool:
        """True while deliveries to this resource are held back."""
        return self.failures >= self.threshold and self.now() < self.opened_until
