"""Greenlets that run one short job after another, started from the hub.

A parked websocket (``LimitedWebSocket.park``) gets a reader greenlet for
each message its client sends, and most of those readers live for tens of
microseconds. A new greenlet is dear for that: Python 3.11 gives every
greenlet its own data stack, mapped on its first frame and unmapped when
it ends, so each one costs two system calls and fresh pages besides the
greenlet itself. Measured here, a greenlet created, run through three
Python calls and ended: 9.0 µs; the same job handed to a waiting greenlet:
0.9 µs. A churn cycle (connect, log in, one message, leave) starts four,
and the server hands each new connection's handler to a worker too
(``ChatWSGIServer.do_handle``).

``run_now`` hands a job to a worker that finished its last one and waits
in the hub, or to a new one. A worker whose job is done waits for the next
unless ``MAX_IDLE`` already do (a fixed cost, not one per connection:
a burst's extra workers end as they finish). As with a new greenlet:

- the job runs in a context of its own (``contextvars``), so nothing a
  job leaves in a context variable reaches the next one;
- an exception the job lets out ends its worker and reaches the hub;
- a worker is only ever resumed by ``run_now``: one that something else
  wakes while it waits (a timeout a job left running) leaves the pool.
"""

from __future__ import annotations

import contextlib
import contextvars

import gevent
from greenlet import getcurrent, greenlet

# Workers waiting for a job; beyond this many, a finished worker ends.
MAX_IDLE = 64

_idle: list[greenlet] = []
# Workers started since the process began (chat_worker_greenlets{state=started}).
started = 0


class _Job(tuple):
    """What ``run_now`` passes to a worker: (function, argument)."""

    __slots__ = ()


def run_now(function, argument) -> None:
    """Run ``function(argument)`` in a worker greenlet, now; call from the hub.

    Returns when the job ends or first waits, as switching to a new
    greenlet would.
    """
    global started
    job = _Job((function, argument))
    hub = gevent.get_hub()
    while _idle:
        worker = _idle.pop()
        # One of this loop's (not one a forked parent or another thread left).
        if worker.parent is hub and not worker.dead:
            worker.switch(job)
            return
    started += 1
    greenlet(_work, hub).switch(job)


def start_soon(function) -> None:
    """Run ``function()`` in a worker greenlet on the loop's next turn, as
    ``gevent.spawn`` would start a new one (with no greenlet to join or
    kill: the function reports its own outcome)."""
    gevent.get_hub().loop.run_callback(run_now, _call, function)


def _call(function) -> None:
    function()


def idle_workers() -> int:
    """How many workers wait for a job."""
    return len(_idle)


def _work(job: _Job) -> None:
    me = getcurrent()
    hub = me.parent
    while True:
        function, argument = job
        contextvars.Context().run(function, argument)
        if len(_idle) >= MAX_IDLE:
            return
        _idle.append(me)
        try:
            job = hub.switch()
        except BaseException:
            # Thrown in by something a job left behind (a timeout): this
            # worker leaves the pool and ends, as the job's greenlet would
            # have ended long ago.
            _forget(me)
            return
        if type(job) is not _Job:
            _forget(me)
            return


def _forget(worker: greenlet) -> None:
    with contextlib.suppress(ValueError):
        _idle.remove(worker)
