"""Token buckets, the one implementation: per key (``RateLimiter``: per
session, per client) and per connection (``Budget``: packets and bytes).

A client that floods is refused, not others. A bucket holds ``burst``
tokens and refills at ``per_s`` a second (``refilled``).
"""

from __future__ import annotations

import time

# Every this many calls, buckets that have refilled completely are dropped:
# a full bucket is what a new one would be, so forgetting it changes nothing
# and the map holds only the keys that spent something lately.
PRUNE_EVERY = 1024


def refilled(tokens: float, elapsed_s: float, burst: float, per_s: float) -> float:
    """A bucket's tokens ``elapsed_s`` after it held ``tokens``."""
    return min(burst, tokens + elapsed_s * per_s)


class RateLimiter:
    """One bucket per key; ``allow`` spends tokens or says no.

    A bucket holds ``burst`` tokens and refills at ``per_s`` a second, so a
    person typing fast is never limited while a script in a loop is.
    """

    def __init__(self, burst: float, per_s: float, clock=time.monotonic) -> None:
        self.burst = burst
        self.per_s = per_s
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._calls = 0

    def allow(self, key: str, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens of ``key``'s bucket; False when it has fewer."""
        now = self._clock()
        self._calls += 1
        if self._calls % PRUNE_EVERY == 0:
            self._prune(now)
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = refilled(tokens, now - last, float(self.burst), self.per_s)
        if tokens < cost:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - cost, now)
        return True

    def forget(self, key: str) -> None:
        """Drop the bucket of a key that has gone (a closed session)."""
        self._buckets.pop(key, None)

    def __len__(self) -> int:
        return len(self._buckets)

    def _prune(self, now: float) -> None:
        refill_s = self.burst / self.per_s if self.per_s > 0 else float("inf")
        full = [k for k, (_, last) in self._buckets.items() if now - last >= refill_s]
        for key in full:
            del self._buckets[key]


class Budget:
    """Two buckets of one connection, packets and bytes, with a burst of two
    seconds' worth; slotted, since every connection holds one."""

    __slots__ = ("_packets", "_bytes", "_per_s", "_bytes_per_s", "_last")

    def __init__(self, packets_per_s: float, bytes_per_s: float) -> None:
        self._per_s = packets_per_s
        self._bytes_per_s = bytes_per_s
        self._packets = 2 * packets_per_s
        self._bytes = 2 * bytes_per_s
        self._last = time.monotonic()

    def spend(self, nbytes: int) -> bool:
        """Take one packet and ``nbytes``; False when either bucket is empty."""
        now = time.monotonic()
        elapsed, self._last = now - self._last, now
        per_s, bytes_per_s = self._per_s, self._bytes_per_s
        self._packets = refilled(self._packets, elapsed, 2 * per_s, per_s)
        self._bytes = refilled(self._bytes, elapsed, 2 * bytes_per_s, bytes_per_s)
        if self._packets < 1 or self._bytes < nbytes:
            return False
        self._packets -= 1
        self._bytes -= nbytes
        return True
