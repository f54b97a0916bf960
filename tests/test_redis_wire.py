"""Commands sent on a pooled connection without a pipeline answer as a
pipeline would, and a connection left mid-exchange is never reused
(chat.cluster.wire)."""

from __future__ import annotations

import gevent
import pytest
import redis

from chat.cluster.clients import redis_client
from chat.cluster.wire import send_all

pytestmark = pytest.mark.e2e

SCRIPT = """
if ARGV[1] == 'bad' then return redis.error_reply('refused') end
return {ARGV[1], redis.call('INCR', KEYS[1])}
"""
# Keeps Redis busy for about ``ARGV[1]`` ms before it answers.
BUSY = """
local t = redis.call('TIME')
local until_us = t[1] * 1000000 + t[2] + ARGV[1] * 1000
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= until_us
return 'late'
"""


def _described(replies: list) -> list:
    return [
        (type(r).__name__, str(r)) if isinstance(r, Exception) else r for r in replies
    ]


def test_replies_and_error_replies_are_what_a_pipeline_returns(redis_server):
    client = redis_client(redis_server.url, 2.0)
    sha = client.script_load(SCRIPT)

    def commands(key):
        return [
            ("PUBLISH", "room", b'{"event":"x"}'),
            ("EVALSHA", sha, 1, key, "a"),
            ("EVALSHA", sha, 1, key, "bad"),
            ("EVALSHA", "0" * 40, 0),
            ("EVALSHA", sha, 1, key, "b"),
        ]

    ours = send_all(client, commands("ours"))
    pipe = client.pipeline(transaction=False)
    for command in commands("theirs"):
        pipe.execute_command(*command)
    theirs = pipe.execute(raise_on_error=False)
    assert ours[0] == 0 and ours[1] == [b"a", 1] and ours[4] == [b"b", 2]
    assert isinstance(ours[2], redis.ResponseError) and str(ours[2]) == "refused"
    assert isinstance(ours[3], redis.exceptions.NoScriptError)
    assert _described(ours) == _described(theirs)


def test_a_connection_redis_dropped_is_replaced_and_the_commands_answered(
    redis_server,
):
    client = redis_client(redis_server.url, 2.0)
    assert send_all(client, [("ECHO", "one")]) == [b"one"]
    admin = redis_client(redis_server.url, 2.0)
    admin.client_kill_filter(_type="normal", skipme=True)
    assert send_all(client, [("ECHO", "two"), ("ECHO", "three")]) == [b"two", b"three"]


def test_a_caller_killed_while_waiting_leaves_no_reply_for_the_next(redis_server):
    client = redis_client(redis_server.url, 5.0)
    sha = client.script_load(BUSY)
    waiting = gevent.spawn(send_all, client, [("EVALSHA", sha, 0, 300)])
    gevent.sleep(0.05)  # sent; Redis is busy with it
    waiting.kill()
    # The pool hands out the same connection again unless it was dropped:
    # its late reply would be read as this ECHO's.
    assert send_all(client, [("ECHO", "mine")]) == [b"mine"]


def test_a_publish_redis_refuses_stays_queued_until_redis_takes_it(redis_server):
    """An error reply to a PUBLISH (here a user not yet allowed to publish,
    as after a lost ACL) fails the batch: it is counted and sent again,
    never dropped as if Redis had taken it."""
    from chat.cluster.manager import ChatRedisManager
    from chat.transport import codec

    admin = redis_client(redis_server.url, 2.0)
    admin.acl_setuser("pub", enabled=True, passwords=["+pw"], commands=["+ping"])
    host = redis_server.url.rsplit("@", 1)[1]
    manager = ChatRedisManager(
        f"redis://pub:pw@{host}", channel="c", timeout_s=1.0, fanout=None
    )
    manager.json = codec
    failures = []
    manager._on_publish_error = lambda: failures.append(1)
    manager.redis = redis_client(f"redis://pub:pw@{host}", 1.0)
    listener = admin.pubsub()
    listener.subscribe("c")
    assert listener.get_message(timeout=2)["type"] == "subscribe"
    manager._publish({"method": "emit", "event": "new message"})
    with gevent.Timeout(10):
        while not failures:
            gevent.sleep(0.01)
    assert len(manager._outgoing) == 1
    admin.acl_setuser("pub", commands=["+publish"], channels=["*"])
    with gevent.Timeout(10):
        while manager._outgoing:
            gevent.sleep(0.05)
    heard = listener.get_message(timeout=5)
    assert heard["type"] == "message" and b"new message" in heard["data"]
    assert failures == [1]


def test_commands_are_packed_as_redis_py_packs_them():
    from chat.cluster.wire import _packed

    connection = redis.Connection()
    commands = [
        ("PUBLISH", "chat#room1", '{"message":"héllo"}'.encode()),
        ("EVALSHA", "a" * 40, 2, "chat:room:1", "k", "ünï", 1733600000000, 1.5),
        ("PUBLISH", "chat#room1", memoryview(b"view")),
        ("PUBLISH", "chat#room1", bytearray(b"bytes")),
    ]
    ours = b"".join(_packed(connection, commands))
    assert ours == b"".join(connection.pack_commands(commands))
    with pytest.raises(redis.DataError):
        _packed(connection, [("PUBLISH", "chat#room1", None)])
