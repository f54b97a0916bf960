"""Work that repeats in the background: one way to run it."""

from __future__ import annotations

import logging

import gevent

log = logging.getLogger(__name__)


def every(interval_s: float, work, what: str) -> gevent.Greenlet:
    """Run ``work()`` every ``interval_s`` in a greenlet of its own; a failure
    is logged (as ``what``) and the next round runs anyway."""

    def run() -> None:
        while True:
            gevent.sleep(interval_s)
            try:
                work()
            except Exception:
                log.exception("%s failed", what)

    return gevent.spawn(run)
