"""RFC 5080 duplicate detection: one answer per (source, code, id, Request Authenticator).

A request seen for the first time is marked *in progress*; a retransmission of it is dropped
while it is in progress (its answer is on the way) and answered from the cached reply once
done, so it never costs a second hash or a second failure. Entries live for ``window`` seconds
and the table is bounded (oldest evicted first).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

Key = tuple[str, int, int, int, bytes]


@dataclass
class Entry:
    """One request: its reply once known, and when the entry expires."""

    expires: float
    reply: bytes | None = None


class ReplyCache:
    """Bounded table of recent requests and their replies."""

    def __init__(self, window: float, max_entries: int = 65536) -> None:
        self.window = window
        self.max_entries = max_entries
        self._entries: OrderedDict[Key, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, now: float) -> None:
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.expires > now and len(self._entries) <= self.max_entries:
                break
            del self._entries[key]

    def lookup(self, key: Key, now: float) -> Entry | None:
        """The live entry for ``key``, or None when the request is new."""
        self._expire(now)
        entry = self._entries.get(key)
        if entry is None or entry.expires <= now:
            return None
        return entry

    def begin(self, key: Key, now: float) -> None:
        """Mark ``key`` in progress."""
        self._entries[key] = Entry(expires=now + self.window)
        self._entries.move_to_end(key)

    def finish(self, key: Key, reply: bytes) -> None:
        """Remember the reply sent for ``key``."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.reply = reply

    def abandon(self, key: Key) -> None:
        """Forget ``key`` (the request was shed; a retransmission is a new attempt)."""
        self._entries.pop(key, None)
