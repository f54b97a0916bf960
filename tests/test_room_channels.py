"""Room-scoped delivery: an instance hears only the rooms it hosts."""

import pytest
import redis

from deploy.procs import wait_until

pytestmark = pytest.mark.e2e

MAIN = "flask-socketio"


def subscribers(redis_server, *channels):
    store = redis.Redis.from_url(redis_server.url)
    return dict(
        (name.decode(), count) for name, count in store.pubsub_numsub(*channels)
    )


def test_each_room_is_heard_only_where_it_has_members(cluster, clients, redis_server):
    a, b = cluster(2, ROOM_LINGER_S="1")
    alice = clients(a.url)
    alice.login("Alice", "x")
    bob = clients(b.url)
    bob.login("Bob", "y")
    assert subscribers(redis_server, MAIN, f"{MAIN}#x", f"{MAIN}#y") == {
        MAIN: 2,
        f"{MAIN}#x": 1,
        f"{MAIN}#y": 1,
    }
    # Carol joins room x on the other instance: it now hears x too, and the
    # conversation crosses instances.
    carol = clients(b.url)
    assert carol.login("Carol", "x")["numUsers"] == 2
    assert subscribers(redis_server, f"{MAIN}#x")[f"{MAIN}#x"] == 2
    alice.say("to room x")
    assert carol.wait_for("new message")["message"] == "to room x"
    bob.say("to room y")
    alice.wait_for("user joined", lambda d: d["username"] == "Carol")
    # Carol leaves: b stops hearing room x once the linger has passed.
    carol.close()
    alice.wait_for("user left", lambda d: d["username"] == "Carol")
    wait_until(
        lambda: subscribers(redis_server, f"{MAIN}#x")[f"{MAIN}#x"] == 1,
        15,
        "b to unsubscribe from room x",
    )
    assert [m["message"] for m in alice.named("new message")] == []
    assert [m["message"] for m in bob.named("new message")] == []
