"""A Redis Cluster (``redis+cluster://``): six real redis-server nodes (three
masters, three replicas) started by the tests, gunicorn instances on them,
and socket.io clients in many rooms."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from chat.cluster.clients import parse_cluster_url
from chat.cluster.keys import Keys
from deploy.procs import RedisCluster, wait_until
from tests.conftest import CLUSTER_ENV

pytestmark = pytest.mark.e2e

# Many messages from one address, quickly: no budget in the way.
UNLIMITED = {
    "RATE_BURST": "1000",
    "RATE_PER_S": "1000",
    "CLIENT_MESSAGES_PER_S": "0",
    "CLIENT_MESSAGE_BYTES_PER_S": "0",
}


@pytest.fixture
def redis_cluster(tmp_path):
    group = RedisCluster(tmp_path / "redis-cluster").start()
    yield group
    for node in group.nodes:
        if node.running():
            os.kill(node.proc.pid, signal.SIGCONT)  # a paused one stops too
    group.stop()


@pytest.fixture
def on_cluster(redis_cluster, gunicorn):
    """``on_cluster(n, **env)``: n chat instances on the Redis Cluster."""

    def start(n=2, **env):
        settings = {**CLUSTER_ENV, "REDIS_URL": redis_cluster.url, **env}
        return [gunicorn(settings) for _ in range(n)]

    return start


def slot_of(key: str) -> int:
    return redis.cluster.key_slot(key.encode())


def rooms_on_every_master(group: RedisCluster, count: int = 2) -> list[str]:
    """Room names whose slots are served by each master, ``count`` per master."""
    masters = {n.port: [] for n in group.live_masters()}
    keys = Keys("chat:", cluster=True)
    index = 0
    while any(len(rooms) < count for rooms in masters.values()):
        room = f"room-{index}"
        index += 1
        owner = group.master_of_slot(slot_of(keys.history(room))).port
        if len(masters[owner]) < count:
            masters[owner].append(room)
    return [room for rooms in masters.values() for room in rooms]


# -- the URL ---------------------------------------------------------------------
def test_a_cluster_url_names_its_seeds_credentials_and_tls():
    parsed = parse_cluster_url(
        "rediss+cluster://:p%40ss@10.0.0.1:7000,10.0.0.2:7001?ssl_ca_certs=/ca.pem"
    )
    assert parsed.seeds == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    assert parsed.first == "rediss://:p%40ss@10.0.0.1:7000/0?ssl_ca_certs=/ca.pem"
    assert parse_cluster_url("redis://localhost:6379/0") is None
    for wrong in (
        "redis+cluster://",
        "redis+cluster://10.0.0.1:7000/2",
        "redis+cluster://10.0.0.1",
        "redis+cluster://10.0.0.1:7000?db=1",
    ):
        with pytest.raises(ValueError):
            parse_cluster_url(wrong)


def test_a_room_keys_and_channel_share_one_slot_and_plain_names_are_unchanged():
    tagged = Keys("chat:", cluster=True)
    room_keys = [
        tagged.room_users("lobby"),
        tagged.room_seq("lobby"),
        tagged.history("lobby"),
        tagged.history_bytes("lobby"),
        tagged.client_id("lobby", "abc"),
        tagged.mute("lobby", "ann"),
        tagged.slow("lobby"),
        tagged.sent("lobby", "ann"),
        tagged.moderators("lobby"),
        tagged.room_channel("flask-socketio", "lobby"),
    ]
    assert {slot_of(k) for k in room_keys} == {slot_of("lobby")}
    assert slot_of(tagged.ban("name", "ann")) == slot_of(tagged.bans)
    assert slot_of(tagged.rooms) == slot_of(tagged.opened("10.0.0.1"))
    assert tagged.room_of_channel("flask-socketio", "flask-socketio#{lobby}") == (
        "lobby"
    )
    plain = Keys("chat:")
    assert plain.room_users("lobby") == "chat:room:lobby:users"
    assert plain.history("lobby") == "chat:history:lobby"
    assert plain.client_id("lobby", "abc") == "chat:cid:abc"
    assert plain.ban("name", "ann") == "chat:mod:ban:name:ann"
    assert plain.room_channel("flask-socketio", "lobby") == "flask-socketio#lobby"


# -- the contract across instances ---------------------------------------------
def test_the_chat_contract_holds_across_instances_on_a_cluster(
    redis_cluster, on_cluster, clients
):
    a, b = on_cluster(2)
    rooms = rooms_on_every_master(redis_cluster)
    for room in rooms:
        ann = clients(a.url)
        assert ann.login("Ann", room)["numUsers"] == 1
        bo = clients(b.url)
        assert bo.login("Bo", room)["numUsers"] == 2
        joined = ann.wait_for("user joined")
        assert joined["username"] == "Bo" and joined["numUsers"] == 2

        ann.sio.emit("typing")
        assert bo.wait_for("typing") == {"username": "Ann"}
        ack = ann.sio.call("new message", f"hello {room}", timeout=5)
        assert ack.get("id"), ack
        said = bo.wait_for("new message")
        assert said["username"] == "Ann" and said["message"] == f"hello {room}"

        # The name is the cluster's: nobody else may take it on either side.
        thief = clients(a.url)
        thief.sio.emit("add user", ("bo", {"room": room}))
        assert thief.wait_for("login error")["reason"] == "name_taken"

        # History and catch-up with lastId, from the other instance.
        late = clients(b.url)
        late.login("Cy", room)
        history = late.wait_for("history")["messages"]
        assert [m["message"] for m in history] == [f"hello {room}"]
        bo.sio.call("new message", "second", timeout=5)
        last = ack["id"]
        back = clients(b.url, auth={"username": "Dee", "room": room, "lastId": last})
        caught = back.wait_for("history")["messages"]
        assert [m["message"] for m in caught] == ["second"]

        ann.close()
        left = bo.wait_for("user left", match=lambda p: p["username"] == "Ann")
        assert left["numUsers"] == 3


def test_a_room_crosses_only_the_shard_that_owns_it(redis_cluster, on_cluster, clients):
    """Sharded pub/sub: each shard carries its own rooms' messages (its
    master and replica), not every message, and the sum is what was sent."""
    a, b = on_cluster(2, **UNLIMITED)
    rooms = rooms_on_every_master(redis_cluster, count=1)
    masters = {n.port: n for n in redis_cluster.live_masters()}

    def published() -> dict[int, int]:
        counts = {}
        for port, node in masters.items():
            stats = redis_cluster.client(node).info("commandstats")
            counts[port] = stats.get("cmdstat_spublish", {}).get("calls", 0)
        return counts

    def bus() -> int:
        """Messages the cluster bus carried to every node for PUBLISH."""
        total = 0
        for node in redis_cluster.nodes:
            info = redis_cluster.client(node).execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            for line in text.splitlines():
                if line.startswith("cluster_stats_messages_publish_received"):
                    total += int(line.split(":")[1])
        return total

    talkers = []
    for room in rooms:
        ann, bo = clients(a.url), clients(b.url)
        ann.login("Ann", room)
        bo.login("Bo", room)
        ann.wait_for("user joined")
        talkers.append((room, ann, bo))

    sent = {room: (i + 1) * 10 for i, room in enumerate(rooms)}
    before, bus_before = published(), bus()
    for room, ann, bo in talkers:
        for n in range(sent[room]):
            ann.sio.call("new message", f"{room} {n}", timeout=5)
        wait_until(
            lambda bo=bo, room=room: len(bo.named("new message")) >= sent[room],
            10,
            f"Bo to hear every message of {room}",
        )
    after = published()
    keys = Keys("chat:", cluster=True)
    for room in rooms:
        owner = redis_cluster.master_of_slot(slot_of(keys.history(room))).port
        # One SPUBLISH per message, on the room's master only.
        assert after[owner] - before[owner] == sent[room], (room, before, after)
    assert sum(after.values()) - sum(before.values()) == sum(sent.values())
    assert bus() == bus_before  # nothing went to every node

    # Against plain PUBLISH on the same cluster: every node hears each one.
    one = redis_cluster.client(redis_cluster.live_masters()[0])
    for n in range(10):
        one.publish("not-sharded", f"m{n}")
    wait_until(
        lambda: bus() - bus_before >= 10 * (len(redis_cluster.nodes) - 1),
        10,
        "the cluster bus to carry a PUBLISH to every other node",
    )
