"""Per-connection token buckets: a client that floods is refused, not others."""

from __future__ import annotations

import time


class RateLimiter:
    """One bucket per session id; ``allow`` spends a token or says no.

    A bucket holds ``burst`` tokens and refills at ``per_s`` a second, so a
    person typing fast is never limited while a script in a loop is.
    """

    def __init__(self, burst: int, per_s: float, clock=time.monotonic) -> None:
        self.burst = burst
        self.per_s = per_s
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, sid: str) -> bool:
        """Spend one token of ``sid``'s bucket; False when it is empty."""
        now = self._clock()
        tokens, last = self._buckets.get(sid, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.per_s)
        if tokens < 1.0:
            self._buckets[sid] = (tokens, now)
            return False
        self._buckets[sid] = (tokens - 1.0, now)
        return True

    def forget(self, sid: str) -> None:
        """Drop the bucket of a session that has gone."""
        self._buckets.pop(sid, None)
