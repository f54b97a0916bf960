"""Per-connection log lines, aggregated: one INFO line per interval.

A reconnect storm is thousands of connects, logins and disconnects a
second; a line for each (formatted, written to stderr, often shipped
somewhere) cost about a tenth of the logins an instance could serve. Each
still has its line, with ``sid`` and ``room`` as fields, at DEBUG; at INFO
an instance says every ``LOG_SESSIONS_EVERY_S`` how many there were.
"""

from __future__ import annotations

import collections
import logging
import time

log = logging.getLogger(__name__)

KINDS = ("connects", "logins", "disconnects")


class ConnectionTally:
    """Counts of connects, logins and disconnects since the last line."""

    def __init__(self) -> None:
        self.counts: collections.Counter = collections.Counter()

    def add(self, kind: str) -> None:
        self.counts[kind] += 1

    def flush(self) -> None:
        """Log the counts of the interval (nothing when there were none)."""
        if not self.counts:
            return
        counts, self.counts = self.counts, collections.Counter()
        fields = {kind: counts.get(kind, 0) for kind in KINDS}
        log.info(
            "sessions: %(connects)d connects, %(logins)d logins, "
            "%(disconnects)d disconnects",
            fields,
            extra={"event": "sessions", **fields},
        )

    def run(self, every_s: float, sleep) -> None:
        """Flush every ``every_s`` seconds, forever (a background task)."""
        while True:
            sleep(every_s)
            self.flush()


class CountInWindow:
    """How many times something happened within the last ``window_s``.

    Keeps at most ``keep`` timestamps: enough to compare with any threshold
    below it, bounded whatever happens.
    """

    def __init__(self, window_s: float, keep: int) -> None:
        self.window_s = window_s
        self._times: collections.deque = collections.deque(maxlen=keep)

    def add(self) -> None:
        self._times.append(time.monotonic())

    def count(self) -> int:
        since = time.monotonic() - self.window_s
        while self._times and self._times[0] < since:
            self._times.popleft()
        return len(self._times)
