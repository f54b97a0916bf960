"""The lean pub/sub listener hears what redis-py's own does, and a lost
connection ends it at once (chat.internals.pubsub)."""

from __future__ import annotations

import pytest
import redis

from chat.cluster.clients import redis_client
from chat.internals.pubsub import LeanPubSub, lean_pubsub


def _listener(url: str) -> redis.Redis:
    return redis_client(url, None, protocol=2)


@pytest.mark.e2e
def test_the_lean_listener_yields_what_redis_pys_listen_yields(redis_server):
    theirs = _listener(redis_server.url).pubsub()
    ours = lean_pubsub(_listener(redis_server.url))
    publisher = redis_client(redis_server.url, 2.0)
    for pubsub in (theirs, ours):
        pubsub.subscribe("room#a", "room#b")
    # Both subscriptions in place before anything is published.
    assert publisher.pubsub_numsub("room#a", "room#b") == [
        (b"room#a", 2),
        (b"room#b", 2),
    ]
    publisher.publish("room#a", '{"text": "héllo"}'.encode())
    publisher.publish("room#b", b"")
    publisher.publish("room#a", b"x" * 100_000)
    for pubsub in (theirs, ours):
        pubsub.unsubscribe("room#a", "room#b")
    # Everything is on the sockets now; listen ends by itself once the
    # unsubscribe confirmations leave nothing subscribed.
    heard = {"theirs": list(theirs.listen()), "ours": list(ours.listen())}
    assert heard["ours"] == heard["theirs"]
    assert [m["type"] for m in heard["ours"]] == [
        "subscribe",
        "subscribe",
        "message",
        "message",
        "message",
        "unsubscribe",
        "unsubscribe",
    ]
    assert heard["ours"][2]["data"] == '{"text": "héllo"}'.encode()
    assert not ours.subscribed and not ours.channels


@pytest.mark.e2e
def test_a_listener_whose_connection_redis_dropped_raises_without_reconnecting(
    redis_server,
):
    ours = lean_pubsub(_listener(redis_server.url))
    ours.subscribe("room#a")
    listening = ours.listen()
    assert next(listening)["type"] == "subscribe"
    admin = redis_client(redis_server.url, 2.0)
    assert admin.client_kill_filter(_type="pubsub") == 1
    with pytest.raises(redis.ConnectionError):
        next(listening)
    # redis-py's own listen would have connected again before raising:
    # the caller makes a new subscription instead.
    assert admin.pubsub_numsub("room#a") == [(b"room#a", 0)]


def test_a_handler_per_channel_is_refused_before_anything_is_sent():
    pool = redis.ConnectionPool.from_url("redis://127.0.0.1:1")
    ours = LeanPubSub(pool)
    with pytest.raises(TypeError):
        ours.subscribe(room=print)
    with pytest.raises(TypeError):
        ours.ssubscribe(room=print)
    assert ours.connection is None


def test_a_pool_with_health_checks_is_refused():
    pool = redis.ConnectionPool.from_url(
        "redis://127.0.0.1:1", health_check_interval=30
    )
    with pytest.raises(ValueError, match="health checks"):
        LeanPubSub(pool)
