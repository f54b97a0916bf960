"""Logins in flight, bounded: a reconnect storm is queued, not let loose.

When an instance dies or restarts, its users all come back within a second
or two. Each login is a few Redis round trips and a history read; with
thousands in flight at once the event loop has thousands of greenlets ready
on every turn, and the users already chatting wait behind all of them
(seconds of message latency). So at most ``LOGINS_IN_FLIGHT``
logins run at a time and the rest wait their turn, which costs a greenlet
each and no CPU. Past ``LOGIN_QUEUE_MAX`` waiting, a new session is
answered 503 with a ``Retry-After`` before any work is done: a load
balancer tries another instance, a browser backs off (jittered) instead of
waiting past its connect timeout.

Why a count and not an estimated wait: an estimate from recent logins
refuses most of a storm at its start (the pace before it was near zero)
and sends them into the clients' backoff (docs/benchmarks.md, "Reconnect
storms"). The default 4,000 is about the queue one instance logs in
within the page's connect timeout.
"""

from __future__ import annotations

import contextlib
import random

from gevent.lock import BoundedSemaphore


class Admission:
    """A semaphore of login slots and the queue behind it."""

    def __init__(self, in_flight: int, queue_max: int) -> None:
        self._slots = BoundedSemaphore(in_flight) if in_flight > 0 else None
        self.queue_max = queue_max
        self.waiting = 0

    @contextlib.contextmanager
    def login(self):
        """Hold a slot for one login; waits while every slot is taken."""
        if self._slots is None:
            yield
            return
        self.waiting += 1
        try:
            self._slots.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._slots.release()

    def busy(self) -> bool:
        """Too many logins wait: a new session should come back later."""
        return 0 < self.queue_max <= self.waiting

    @staticmethod
    def retry_after() -> str:
        """Seconds, jittered, so the refused do not all return together."""
        return str(random.randint(1, 4))
