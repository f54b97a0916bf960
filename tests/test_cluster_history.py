"""History, recovery and rooms across instances, kept in Redis streams."""

import pytest
import redis

from tests.support import presence, wait_until

pytestmark = pytest.mark.e2e


def texts(messages):
    return [m["message"] for m in messages]


def test_history_is_shared_and_ordered_across_instances(cluster, clients):
    a, b = cluster(2)
    alice = clients(a.url)
    bob = clients(b.url)
    alice.login("Alice")
    bob.login("Bob")
    alice.say("first, from a")
    bob.wait_for("new message", lambda d: d["message"] == "first, from a")
    bob.say("second, from b")
    alice.wait_for("new message", lambda d: d["message"] == "second, from b")
    alice.say("third, from a")
    bob.wait_for("new message", lambda d: d["message"] == "third, from a")
    for instance in (a, b):
        newcomer = clients(instance.url)
        newcomer.login(f"New{instance.port}")
        history = newcomer.wait_for("history")["messages"]
        assert texts(history) == ["first, from a", "second, from b", "third, from a"]
        assert [m["username"] for m in history] == ["Alice", "Bob", "Alice"]
        ids = [tuple(map(int, m["id"].split("-"))) for m in history]
        assert ids == sorted(ids)
        newcomer.close()


def test_client_back_on_another_instance_gets_exactly_what_it_missed(cluster, clients):
    a, b = cluster(2)
    alice = clients(a.url)
    alice.login("Alice")
    bob = clients(b.url)
    bob.login("Bob")
    alice.say("seen by bob")
    last_seen = bob.wait_for("new message")["id"]
    token = bob.named("login")[0]["token"]
    bob.close()
    carol = clients(b.url)
    carol.login("Carol")
    for i in range(3):
        alice.say(f"missed {i} from a")
        carol.say(f"missed {i} from b")
    alice.wait_for("new message", lambda d: d["message"] == "missed 2 from b")
    back = clients(a.url, auth={"username": "Bob", "token": token, "lastId": last_seen})
    history = back.wait_for("history")
    missed = texts(history["messages"])
    # All six, none twice; each sender's in the order sent; ids increasing.
    assert sorted(missed) == sorted(
        f"missed {i} from {s}" for i in range(3) for s in "ab"
    )
    for source in "ab":
        mine = [t for t in missed if t.endswith(f"from {source}")]
        assert mine == [f"missed {i} from {source}" for i in range(3)]
    ids = [tuple(map(int, m["id"].split("-"))) for m in history["messages"]]
    assert ids == sorted(ids)
    assert history["dropped"] is False


def test_history_survives_an_instance_restart(cluster, clients):
    [a] = cluster(1)
    alice = clients(a.url)
    alice.login("Alice")
    # The acknowledgement comes once the message is stored.
    assert alice.sio.call("new message", "remember me", timeout=5)["id"]
    alice.close()
    assert a.terminate(timeout=15) == 0
    a.start()
    bob = clients(a.url)
    bob.login("Bob")
    assert texts(bob.wait_for("history")["messages"]) == ["remember me"]


def test_retention_in_redis_is_bounded_under_a_burst(cluster, clients, redis_server):
    a, b = cluster(2, HISTORY_RETAIN="10", HISTORY_LENGTH="5", RATE_BURST="100")
    alice = clients(a.url)
    alice.login("Alice")
    bob = clients(b.url)
    bob.login("Bob")
    for i in range(25):
        alice.say(f"burst {i}")
    bob.wait_for("new message", lambda d: d["message"] == "burst 24")
    store = redis.Redis.from_url(redis_server.url)
    assert store.xlen("chat:history:lobby") == 10
    carol = clients(b.url)
    carol.login("Carol")
    assert texts(carol.wait_for("history")["messages"]) == [
        f"burst {i}" for i in range(20, 25)
    ]


def test_rooms_are_separate_across_the_cluster(cluster, clients):
    a, b = cluster(2)
    lobby = clients(a.url)
    lobby.login("Alice")
    dev_a = clients(a.url)
    dev_b = clients(b.url)
    assert dev_a.login("Dana", room="dev")["numUsers"] == 1
    assert dev_b.login("Dev", room="dev")["numUsers"] == 2
    dev_a.wait_for(
        "user joined", lambda d: presence(d) == {"username": "Dev", "numUsers": 2}
    )
    dev_b.sio.emit("typing")
    dev_a.wait_for("typing", lambda d: presence(d) == {"username": "Dev"})
    dev_b.say("dev talk")
    dev_a.wait_for("new message", lambda d: d["message"] == "dev talk")
    lobby.say("lobby talk")
    dev_b.close()
    dev_a.wait_for(
        "user left", lambda d: presence(d) == {"username": "Dev", "numUsers": 1}
    )
    assert lobby.named("new message") == []
    assert lobby.named("typing") == [] and lobby.named("user joined") == []
    assert dev_a.named("new message") == [dev_a.named("new message")[0]]


def test_history_survives_a_restart_of_a_redis_with_aof(gunicorn, clients, tmp_path):
    from deploy.procs import RedisServer

    store = RedisServer(tmp_path, persistent=True).start()
    try:
        server = gunicorn({"REDIS_URL": store.url, "PRESENCE_HEARTBEAT_S": "1"})
        alice = clients(server.url)
        alice.login("Alice")
        ack = alice.sio.call("new message", "kept across restarts", timeout=5)
        store.terminate(timeout=10)
        store.start()
        wait_until(
            lambda: (r := server.ready()) is not None and r.status_code == 200,
            15,
            "the instance to be ready again",
        )
        bob = clients(server.url)
        bob.login("Bob")
        history = bob.wait_for("history")
        assert [(m["id"], m["message"]) for m in history["messages"]] == [
            (ack["id"], "kept across restarts")
        ]
    finally:
        store.stop()
