"""Request rate limits (token buckets) per key: an account identity or a client address.

Each key has a bucket of ``capacity`` tokens refilled at ``per_seconds / capacity`` seconds per
token; a request takes one token or is refused. These limits are kept apart from the account's
lockout counter: a refused request never counts as a failed login, and a locked account is not
rate-limited by them. State is in process memory (one node); a cluster of gateway nodes gets
one bucket set per node. The number of tracked keys is bounded (least recently used go first),
so a flood of random keys cannot exhaust memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.errors import PolicyViolation

MAX_KEYS = 50_000


class RateLimited(PolicyViolation):
    """Too many requests for this key; the message is safe to show."""

    def __init__(self) -> None:
        super().__init__("rate_limit", "Too many requests; try again later.")


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token buckets keyed by string, refilled continuously by the injected clock."""

    def __init__(
        self, clock: Clock, *, capacity: int, per_seconds: float, max_keys: int = MAX_KEYS
    ) -> None:
        if capacity < 1 or per_seconds <= 0:
            raise ValueError("capacity must be >= 1 and per_seconds > 0")
        self._clock = clock
        self.capacity = capacity
        self._rate = capacity / per_seconds
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Take one token for ``key``; False when its bucket is empty."""
        now = self._clock.now().timestamp()
        with self._lock:
            bucket = self._buckets.pop(key, None)
            if bucket is None:
                bucket = _Bucket(float(self.capacity), now)
            else:
                elapsed = max(0.0, now - bucket.stamp)
                bucket.tokens = min(float(self.capacity), bucket.tokens + elapsed * self._rate)
                bucket.stamp = now
            allowed = bucket.tokens >= 1.0
            if allowed:
                bucket.tokens -= 1.0
            self._buckets[key] = bucket
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
            return allowed

    def check(self, key: str) -> None:
        """Take one token for ``key`` or raise ``RateLimited``."""
        if not self.allow(key):
            raise RateLimited()

    def reset(self) -> None:
        """Forget every bucket."""
        with self._lock:
            self._buckets.clear()
