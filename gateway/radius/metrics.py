"""Listener counters: accepts, rejects, challenges, discards by reason, duplicates, shedding."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Metrics:
    """Monotonic counters of one listener (read with ``snapshot``)."""

    accepts: int = 0
    rejects: int = 0
    challenges: int = 0
    duplicates: int = 0
    accounting: int = 0
    hash_saturation: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    discards: Counter[str] = field(default_factory=Counter)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))

    def discard(self, reason: str) -> None:
        """Count a silently dropped packet."""
        self.discards[reason] += 1

    def decided(self, seconds: float) -> None:
        """Remember how long a decision took (receipt to answer, before any reject delay)."""
        self.latencies.append(seconds)

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile of recent decision times in milliseconds (0 when none)."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    def snapshot(self) -> dict[str, Any]:
        """The counters as a plain dict (for logs, tests and the HTTP side)."""
        return {
            "accepts": self.accepts,
            "rejects": self.rejects,
            "challenges": self.challenges,
            "duplicates": self.duplicates,
            "accounting": self.accounting,
            "hash_saturation": self.hash_saturation,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "discards": dict(self.discards),
            "decision_ms_p50": round(self.percentile(50), 2),
            "decision_ms_p99": round(self.percentile(99), 2),
        }
