"""A Redis Cluster (``redis+cluster://``): six real redis-server nodes (three
masters, three replicas) started by the tests, gunicorn instances on them,
and socket.io clients in many rooms."""

from __future__ import annotations

import os
import signal
import socket
import threading
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


class RoomTalk:
    """Ann on one instance sends a numbered message every 50 ms to ``room``;
    Bo listens on another. Acknowledged: an id in the ack, or a pending ack
    whose ``message stored`` came later."""

    def __init__(self, clients, room, sender_url, listener_url):
        self.ann = clients(sender_url)
        self.ann.login("Ann", room)
        self.bo = clients(listener_url)
        self.bo.login("Bo", room)
        self.ann.wait_for("user joined")
        self.sent = 0
        self.acked: dict[str, str] = {}  # clientId -> text
        self.pending: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, daemon=True)

    def _send(self):
        while not self._stop.wait(0.05):
            self.sent += 1
            cid, text = f"c-{self.sent}", f"message {self.sent}"
            try:
                ack = self.ann.sio.call(
                    "new message", (text, {"clientId": cid}), timeout=10
                )
            except Exception:  # noqa: BLE001 (no ack: not acknowledged)
                continue
            if ack.get("id"):
                self.acked[cid] = text
            elif ack.get("pending"):
                self.pending[cid] = text

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(15)

    def acknowledged(self) -> dict[str, str]:
        stored = {m["clientId"] for m in self.ann.named("message stored")}
        late = {c: t for c, t in self.pending.items() if c in stored}
        return {**self.acked, **late}

    def heard(self) -> list[str]:
        return [m["message"] for m in self.bo.named("new message")]

    def assert_every_acknowledged_message_heard_once(self):
        wanted = set(self.acknowledged().values())
        assert wanted, "nothing was acknowledged"
        wait_until(
            lambda: wanted <= set(self.heard()), 20, "Bo to hear every acked message"
        )
        heard = self.heard()
        assert len(heard) == len(set(heard)), "a message was delivered twice"


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


# -- faults ------------------------------------------------------------------------
@pytest.mark.parametrize("replicas", ["0", "1"], ids=["async", "store-replicas"])
def test_a_master_killed_while_users_talk(redis_cluster, on_cluster, clients, replicas):
    """kill -9 of the master of a live room: its replica takes over and the
    room's messages flow again within seconds.

    With STORE_REPLICAS=1 nothing acknowledged is lost and every
    acknowledged message stays in history; the promoted master has no
    replica of its own until the killed node comes back (as its replica),
    and until then messages wait in the outbox, pending, rather than being
    acknowledged on one copy. Without it, Redis's asynchronous replication
    may lose the last acknowledged messages before the kill (README)."""
    a, b = on_cluster(2, STORE_REPLICAS=replicas, **UNLIMITED)
    room = rooms_on_every_master(redis_cluster, count=1)[0]
    slot = slot_of(Keys("chat:", cluster=True).history(room))
    victim = redis_cluster.master_of_slot(slot)
    with RoomTalk(clients, room, a.url, b.url) as talk:
        wait_until(lambda: len(talk.acked) >= 10, 10, "ten messages before the kill")
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(5)
        killed_at = time.monotonic()
        wait_until(
            lambda: (
                redis_cluster.master_of_slot(slot) is not victim
                and redis_cluster.healthy()
            ),
            30,
            "the replica to take over the room's slot",
        )
        promoted_at = time.monotonic()
        if replicas == "1":
            victim.start()  # it rejoins as the new master's replica
            wait_until(redis_cluster.in_sync, 30, "the old master to be a replica")
        back_at = time.monotonic()
        before = len(talk.heard())
        wait_until(lambda: len(talk.heard()) > before + 5, 15, "messages to flow again")
        flowing_at = time.monotonic()
    print(
        f"\nfailover (STORE_REPLICAS={replicas}): promoted "
        f"{promoted_at - killed_at:.1f} s after the kill; messages flowing "
        f"{flowing_at - back_at:.1f} s after "
        + ("the replica was back" if replicas == "1" else "the promotion")
        + f"; {len(talk.acknowledged())} of {talk.sent} acknowledged"
    )
    assert flowing_at - back_at < 5
    if replicas == "0":
        heard = talk.heard()
        assert len(heard) == len(set(heard)), "a message was delivered twice"
        return
    talk.assert_every_acknowledged_message_heard_once()
    acknowledged = set(talk.acknowledged().values())
    # The room's history on the promoted master holds every one of them.
    cy = clients(b.url, auth={"username": "Cy", "room": room, "lastId": "0-0"})
    history = cy.wait_for("history")["messages"]
    newest = sorted(acknowledged, key=lambda t: int(t.split()[-1]))[-len(history) :]
    assert set(newest) <= {m["message"] for m in history}


def test_a_live_room_moved_to_another_master_loses_nothing(
    redis_cluster, on_cluster, clients
):
    """The room's slot migrates to another master (what ``redis-cli --cluster
    reshard`` does, slot by slot) while Ann talks: the store follows the
    move, the listeners resubscribe on the new owner, and Bo hears every
    acknowledged message once."""
    a, b = on_cluster(2, **UNLIMITED)
    room = rooms_on_every_master(redis_cluster, count=1)[0]
    slot = slot_of(Keys("chat:", cluster=True).history(room))
    source = redis_cluster.master_of_slot(slot)
    target = next(n for n in redis_cluster.live_masters() if n is not source)
    with RoomTalk(clients, room, a.url, b.url) as talk:
        wait_until(lambda: len(talk.acked) >= 10, 10, "ten messages before the move")
        redis_cluster.move_slot(slot, source, target)
        assert redis_cluster.master_of_slot(slot) is target
        moved = len(talk.acked)
        wait_until(
            lambda: len(talk.acked) > moved + 10, 15, "messages stored after the move"
        )
    talk.assert_every_acknowledged_message_heard_once()
    assert redis_cluster.client(target).exists(Keys("chat:", True).history(room))


def test_a_shard_paused_past_the_lease_reaps_nobody_who_is_here(
    redis_cluster, on_cluster, clients
):
    """The shard of one instance's member list is paused (CLIENT PAUSE) for
    twice the lease's TTL. That instance's heartbeat waits on the shard; its
    lease, on another shard, must still be renewed, or an instance that
    does not wait reaps its users and tells the room they left."""
    keys = Keys("chat:", cluster=True)
    lease_shard = redis_cluster.master_of_slot(slot_of(keys.alive("any"))).port

    def shard(instance_id: str) -> int:
        return redis_cluster.master_of_slot(slot_of(keys.members(instance_id))).port

    def registered() -> set[str]:
        node = next(n for n in redis_cluster.nodes if n.port == lease_shard)
        return {i.decode() for i in redis_cluster.client(node).smembers(keys.instances)}

    # An instance whose member list is off the leases' shard (X), and one
    # whose list is not on X's shard (the reaper, Y, which does not wait).
    started: dict[str, object] = {}

    def chosen():
        return next(
            (
                (x, y)
                for x in started
                for y in started
                if shard(x) != lease_shard and shard(y) != shard(x)
            ),
            None,
        )

    while chosen() is None:
        assert len(started) < 10, "no two instances with the member lists needed"
        before = registered()
        [instance] = on_cluster(1)
        wait_until(lambda b=before: registered() - b, 10, "the instance to register")
        [instance_id] = registered() - before
        started[instance_id] = instance
    x, y = chosen()
    paused = next(n for n in redis_cluster.nodes if n.port == shard(x))
    room = next(
        r
        for r in rooms_on_every_master(redis_cluster, count=1)
        if redis_cluster.master_of_slot(slot_of(keys.history(r))).port == lease_shard
    )
    ann = clients(started[x].url)
    ann.login("Ann", room)
    bo = clients(started[y].url)
    bo.login("Bo", room)
    redis_cluster.client(paused).execute_command("CLIENT", "PAUSE", 6000, "ALL")
    # After the pause, a login on X: anything announced during the pause
    # reached Bo before Cy's join does.
    wait_until(lambda: redis_cluster.client(paused).ping(), 15, "the pause to end")
    cy = clients(started[x].url)
    assert cy.login("Cy", room)["numUsers"] == 3
    bo.wait_for("user joined", lambda d: d["username"] == "Cy")
    assert bo.named("user left") == []


def test_the_leases_shard_paused_past_the_ttl_reaps_nobody(
    redis_cluster, on_cluster, clients
):
    """Every lease lives on one shard: pausing it for twice the TTL lets
    every lease lapse at once. When it answers again, an instance reading
    the others' leases finds them gone; it must see that its own lapsed
    too (a stall, not deaths) and reap nobody."""
    keys = Keys("chat:", cluster=True)
    leases = redis_cluster.master_of_slot(slot_of(keys.alive("any"))).port
    paused = next(n for n in redis_cluster.nodes if n.port == leases)
    store = redis_cluster.client(paused)
    instances = on_cluster(3)
    room = rooms_on_every_master(redis_cluster, count=1)[0]
    people = []
    for number, instance in enumerate(instances):
        person = clients(instance.url)
        person.login(f"P{number}", room)
        people.append(person)
    people[0].wait_for("user joined", lambda d: d["numUsers"] == 3)
    ids = [i.decode() for i in store.smembers(keys.instances)]
    assert len(ids) == 3
    # Three pauses: the old code reaped in about one run of three with two.
    for _ in range(3):
        store.execute_command("CLIENT", "PAUSE", 6000, "ALL")
        wait_until(lambda: store.ping(), 15, "the pause to end")
        # Every lease renewed again: a reaping, if any, happened before.
        wait_until(
            lambda: all(store.exists(keys.alive(i)) for i in ids),
            15,
            "every lease renewed after the pause",
        )
    late = clients(instances[1].url)
    assert late.login("Late", room)["numUsers"] == 4
    # Each instance's announcements reach the room in order: once Late has
    # heard a message through each of them, any "user left" has arrived.
    for number, person in enumerate(people):
        person.say(f"still here {number}")
    for number in range(3):
        late.wait_for("new message", lambda d, n=number: d["username"] == f"P{n}")
    assert [person.named("user left") for person in [*people, late]] == [[]] * 4


def test_a_cluster_starts_when_a_nodes_bus_port_was_taken_meanwhile(tmp_path):
    """Ports are chosen free, but another process may take one before the
    node binds it (outgoing connections draw from the same range)."""
    group = RedisCluster(tmp_path / "redis-cluster", masters=3)
    first = group.nodes[0]
    chosen = first.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", chosen + 10000))
        squatter.listen()
        try:
            group.start()
            assert first.port != chosen
            client = group.client(first)
            info = client.execute_command("CLUSTER", "INFO")
            assert "cluster_state:ok" in (
                info.decode() if isinstance(info, bytes) else str(info)
            )
        finally:
            group.stop()
