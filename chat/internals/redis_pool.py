"""redis-py's connection pools, checking a connection without a trip
through gevent's hub.

Before it hands out a connection, redis-py's pool asks it whether it holds
unread data (a reply left behind would be read as the next command's):
the parser's ``can_read(0)``, which polls the socket with ``select.poll``.
Under gevent's monkey-patching that is gevent's cooperative poll, written
in Python: a poll object, an I/O watcher started for the socket, a timer,
and a switch to the hub and back even for a zero timeout, on every
checkout (each batch of chat.cluster.wire's scripts and publishes, every
command of a plain client). Measured on this machine under the worker's
patching, a checkout and release: 28.4-28.9 µs of CPU through redis-py's
check, 8.0-8.2 µs here.

``ReadinessParser`` asks the operating system's ``poll`` instead, for a
zero timeout only: it returns at once, so it never blocks the loop, and it
is one system call. A socket that is readable is judged by redis-py's own
code as before (data, or a peer that closed). Any other timeout (a pub/sub
``get_message``) keeps gevent's cooperative wait.

``QuickChecks`` also reads the process id from a copy kept up to date at
``fork`` rather than with a ``getpid`` system call on every checkout and
release (redis-py compares it to notice a fork and start a new pool).

Written against the redis-py version in chat.internals.pins;
tests/test_internals.py fails when an upgrade moves what it relies on.
"""

from __future__ import annotations

import os
import select

import redis
import redis.sentinel
from gevent import monkey
from redis._parsers.hiredis import _HiredisParser

# The OS's poll, whatever gevent has patched: with a zero timeout it never
# waits.
_os_poll = monkey.get_original("select", "poll")
_POLLIN = select.POLLIN

_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


class ReadinessParser(_HiredisParser):
    """redis-py's hiredis parser whose zero-timeout readiness check is the
    OS's ``poll``."""

    def can_read(self, timeout: float = 0) -> bool:
        reader, sock = self._reader, self._sock
        if timeout != 0 or not reader or reader.has_data():
            return super().can_read(timeout)
        if hasattr(sock, "pending") and sock.pending():
            return True  # decrypted TLS bytes above the socket
        poller = _os_poll()
        poller.register(sock, _POLLIN)
        if not poller.poll(0):
            return False
        # Readable: data, or a peer that closed; redis-py tells them apart.
        return super().can_read(timeout)


class QuickChecks:
    """A connection pool whose connections use ``ReadinessParser`` (unless
    told otherwise) and whose fork check needs no system call."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("parser_class", ReadinessParser)
        super().__init__(*args, **kwargs)

    def _checkpid(self) -> None:
        if self.pid != _pid:
            super()._checkpid()


class BlockingPool(QuickChecks, redis.BlockingConnectionPool):
    """redis-py's ``BlockingConnectionPool`` with quick checks."""


class SentinelBlockingPool(
    QuickChecks, redis.sentinel.SentinelConnectionPool, redis.BlockingConnectionPool
):
    """Sentinel's pool (each new connection asks for the master) with
    BlockingConnectionPool's bound (a command waits for a free connection)
    and quick checks."""
