"""Commands in one write on one pooled connection, without a redis-py Pipeline.

The publisher (chat.cluster.manager) and the shared script pipelines
(chat.cluster.batching) send a few commands at a time, hundreds of times a
second. redis-py 8's ``Pipeline`` pays for much that they never use on
every ``execute``: the object and its command stack, the scripts set and
the ``WATCH`` state, a pass over the commands for first-use ``HIMPORT``
preparations, the observability hooks (timed and asked even when off)
and a reset. Measured on this machine against a local Redis, one
``PUBLISH``: 170 Python calls and 62 µs of CPU through a pipeline; 36
calls and 33 µs here (the system calls are the same two).

``send_all`` keeps what a pipeline of such commands does: a connection
checked out of the client's pool (which checks it for unread data), every
command packed into one write, every reply read in order with an error
reply returned in its place, the client's ``Retry`` around the exchange
with the connection dropped before each retry, and the connection given
back. A connection left mid-exchange (a timeout, a greenlet killed while it
waits) has dropped itself: redis-py's connection disconnects when a read
or a write is interrupted, so a late reply is never read as another
command's (tests/test_redis_wire.py).

The commands are packed by hiredis in C, as redis-py's own packer does
once it has copied every argument through a Python generator: 10.6 µs
for three script calls there, 3.3 µs here. An argument hiredis does not
take (none that the chat sends) goes through redis-py's packer and its
``DataError``.

It relies on redis-py's connection API (``ConnectionPool.get_connection``
and ``release``, ``Connection.pack_commands``, ``send_packed_command``,
``read_response``, ``retry.call_with_retry``, the connection's packer being
``HiredisRespSerializer``), and on no reply callback
for the commands sent through it (``PUBLISH``, ``EVALSHA``):
tests/test_internals.py checks both against the pinned redis-py. A client
without a single pool (a ``RedisCluster``) gets a pipeline, as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import hiredis
import redis
from redis.connection import HiredisRespSerializer


def send_all(client, commands: Sequence[tuple]) -> list:
    """The replies of ``commands`` (each a tuple of command and arguments),
    sent in one write; an error reply is its ``ResponseError`` in its place.

    Raises what the exchange raised once the client's retries are spent
    (a connection error, a timeout), as ``Pipeline.execute`` does.
    """
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute(raise_on_error=False)
    conn = pool.get_connection()
    try:
        return conn.retry.call_with_retry(
            lambda: _exchange(conn, commands), lambda _error: conn.disconnect()
        )
    finally:
        pool.release(conn)


def _exchange(conn, commands: Sequence[tuple]) -> list:
    conn.send_packed_command(_packed(conn, commands))
    replies = []
    for _ in commands:
        try:
            replies.append(conn.read_response())
        except redis.ResponseError as exc:
            replies.append(exc)
    return replies


def _packed(conn, commands: Sequence[tuple]) -> list[bytes]:
    """``conn.pack_commands(commands)`` (chunks to write in order), packed
    by hiredis when that is what redis-py itself would pack them with."""
    if type(conn._command_packer) is HiredisRespSerializer:
        try:
            return [b"".join([hiredis.pack_command(c) for c in commands])]
        except TypeError:
            pass  # redis-py's packer says what is wrong
    return conn.pack_commands(commands)
