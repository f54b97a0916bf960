"""Short, messy Redis faults: nobody live is reaped, nothing acknowledged is lost."""

from __future__ import annotations

import contextlib
import json
import threading
import time

import pytest
import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry

from chat.messages.stream import RedisHistory
from chat.validation import DEFAULT_ROOM
from tests.support import polling_session, presence, wait_until

pytestmark = pytest.mark.e2e

FAST = {"PRESENCE_HEARTBEAT_S": "1", "PRESENCE_TTL_S": "3"}


# With a 5 s timeout the stall raises no error at all: only slowness shows it.
@pytest.mark.parametrize("timeout_s", ["2", "5"])
def test_redis_stall_longer_than_the_ttl_reaps_nobody(
    cluster, clients, redis_server, timeout_s
):
    a, b = cluster(2, **FAST, REDIS_TIMEOUT_S=timeout_s)
    alice = clients(a.url)
    bob = clients(b.url)
    alice.login("Alice")
    bob.login("Bob")
    alice.wait_for("user joined", lambda d: d["username"] == "Bob")
    store = redis.Redis.from_url(redis_server.url)
    store.execute_command("CLIENT", "PAUSE", 4000, "ALL")
    # Both leases lapse during the pause; neither instance may take the
    # other's users for dead once Redis answers again.
    redis.Redis.from_url(redis_server.url, socket_timeout=10).ping()  # pause over
    for instance in (a, b):
        wait_until(
            lambda i=instance: (r := i.ready()) is not None and r.status_code == 200,
            15,
            "readiness after the stall",
        )
    carol = clients(a.url)
    assert carol.login("Carol")["numUsers"] == 3
    bob.wait_for("user joined", lambda d: d["username"] == "Carol")
    assert alice.named("user left") == [] and bob.named("user left") == []


def test_acknowledged_messages_cross_a_quick_redis_restart(
    cluster, clients, redis_server
):
    a, b = cluster(2, **FAST)
    alice = clients(a.url)
    bob = clients(b.url)
    alice.login("Alice")
    bob.login("Bob")
    acked = []

    def send(i: int) -> None:
        result = alice.sio.call("new message", f"m{i}", timeout=10)
        if isinstance(result, dict) and result.get("id"):
            acked.append(f"m{i}")

    stop = threading.Event()

    def talk() -> None:
        i = 0
        while not stop.is_set() and i < 60:
            # A call that timed out was never acknowledged.
            with contextlib.suppress(Exception):
                send(i)
            i += 1
            stop.wait(0.05)

    talker = threading.Thread(target=talk, daemon=True)
    talker.start()
    wait_until(lambda: len(acked) >= 5, 10, "messages before the restart")
    redis_server.kill()
    redis_server.start()
    talker.join(30)
    stop.set()
    assert len(acked) >= 20

    def all_arrived():
        got = [m["message"] for m in bob.named("new message")]
        return set(acked) <= set(got) and got

    got = wait_until(all_arrived, 15, "every acknowledged message at Bob")
    assert len(got) == len(set(got)), "a message arrived twice"
    order = [m for m in got if m in acked]
    assert order == sorted(order, key=lambda m: int(m[1:]))


def test_racing_logins_and_closes_leave_no_ghosts(cluster, redis_server):
    a, _ = cluster(2, **FAST)
    store = redis.Redis.from_url(redis_server.url)
    for round_ in range(10):
        session = polling_session(a.url)
        names = [f"racer{round_}a", f"racer{round_}b"]
        posts = [
            threading.Thread(
                target=requests.post,
                args=(session,),
                kwargs={"data": f'42["add user","{name}"]', "timeout": 5},
            )
            for name in names
        ]
        closer = threading.Thread(
            target=requests.post,
            args=(session,),
            kwargs={"data": "1", "timeout": 5},
        )
        for thread in [*posts, closer]:
            thread.start()
        for thread in [*posts, closer]:
            thread.join(10)
    wait_until(
        lambda: store.hlen("chat:room:lobby:users") == 0,
        5,
        "every racer's name to be released",
    )


def test_concurrent_logins_across_instances_end_with_the_true_count(cluster, clients):
    a, b = cluster(2, **FAST)
    users = []
    lock = threading.Lock()

    def join(i: int) -> None:
        user = clients((a, b)[i % 2].url)
        user.login(f"user{i}")
        with lock:
            users.append(user)

    threads = [threading.Thread(target=join, args=(i,)) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(users) == 30

    def last_count(user) -> int | None:
        counts = [e[1]["numUsers"] for e in user.events if e[0] == "login"]
        counts += [
            presence(e[1])["numUsers"]
            for e in user.events
            if e[0] in ("user joined", "user left")
        ]
        return counts[-1] if counts else None

    wait_until(
        lambda: all(last_count(u) == 30 for u in users),
        10,
        "every user's last count to be 30",
    )


@pytest.fixture
def trio(cluster, clients):
    """Alice and Anna on one instance, Bob on the other, all logged in."""
    a, b = cluster(2, **FAST)
    alice, anna, bob = clients(a.url), clients(a.url), clients(b.url)
    alice.login("Alice")
    anna.login("Anna")
    bob.login("Bob")
    alice.wait_for("user joined", lambda d: d["username"] == "Bob")
    return alice, anna, bob


def test_messages_sent_while_redis_is_down_reach_everyone_when_it_returns(
    trio, redis_server
):
    alice, anna, bob = trio
    redis_server.kill()
    acks = [
        alice.sio.call("new message", (f"down {i}", {"clientId": f"c{i}"}), timeout=5)
        for i in range(5)
    ]
    assert acks == [{"clientId": f"c{i}", "pending": True} for i in range(5)]
    # Delivered at once to the users of the same instance, marked pending.
    pending = [
        anna.wait_for("new message", lambda m, i=i: m["message"] == f"down {i}")
        for i in range(5)
    ]
    assert all(m["pending"] and m["id"] is None for m in pending)
    # Alice's clientIds are hers: Anna sees a pendingId instead.
    assert all("clientId" not in m and m["pendingId"] for m in pending)
    redis_server.start()
    # Written to the stream in order when Redis is back: Bob gets them with
    # ids, Anna learns each id.
    wait_until(
        lambda: (
            len(
                [m for m in bob.named("new message") if m["message"].startswith("down")]
            )
            == 5
        ),
        15,
        "the outbox to reach the other instance",
    )
    got = [m for m in bob.named("new message") if m["message"].startswith("down")]
    assert [m["message"] for m in got] == [f"down {i}" for i in range(5)]
    assert all(m["id"] for m in got)
    stored = wait_until(
        lambda: (s := anna.named("message stored")) and len(s) == 5 and s,
        5,
        "message stored for every pending message",
    )
    assert [s["id"] for s in stored] == [m["id"] for m in got]
    assert [s["pendingId"] for s in stored] == [m["pendingId"] for m in pending]
    assert all("clientId" not in s for s in stored)
    assert all("clientId" not in m for m in got)
    own = wait_until(
        lambda: (s := alice.named("message stored")) and len(s) == 5 and s,
        5,
        "message stored for each of Alice's own messages",
    )
    assert [s["clientId"] for s in own] == [f"c{i}" for i in range(5)]


def test_a_resend_with_the_same_client_id_is_stored_once(cluster, clients):
    a, b = cluster(2, **FAST)
    alice = clients(a.url)
    bob = clients(b.url)
    alice.login("Alice")
    bob.login("Bob")
    first = alice.sio.call("new message", ("once", {"clientId": "k1"}), timeout=5)
    again = alice.sio.call("new message", ("once", {"clientId": "k1"}), timeout=5)
    assert first["id"] == again["id"]
    bob.wait_for("new message", lambda m: m["message"] == "once")
    alice.say("after")
    bob.wait_for("new message", lambda m: m["message"] == "after")
    assert [m["message"] for m in bob.named("new message")] == ["once", "after"]


def test_a_resend_of_a_message_never_published_reaches_the_room_in_order(
    cluster, clients, redis_server
):
    """An instance stored Alice's message and died before publishing it;
    her page resends it (the same clientId) through another instance. The
    room gets it then, before her next message, not later from a replay."""
    a, b = cluster(2, **FAST)
    alice = clients(a.url)
    bob = clients(b.url)
    alice.login("Alice")
    bob.login("Bob")
    # What the dead instance did: the store, and no publish.
    history = RedisHistory(redis.Redis.from_url(redis_server.url), "chat:", 100)
    lost, is_new = history.store(DEFAULT_ROOM, "Alice", "lost", "k9")
    assert is_new
    again = alice.sio.call("new message", ("lost", {"clientId": "k9"}), timeout=5)
    assert again["id"] == lost["id"]
    alice.say("after")
    bob.wait_for("new message", lambda m: m["message"] == "after")
    assert [m["message"] for m in bob.named("new message")] == ["lost", "after"]


def test_a_hung_redis_stalls_no_sender(trio, redis_server):
    alice, anna, bob = trio
    store = redis.Redis.from_url(redis_server.url)
    store.execute_command("CLIENT", "PAUSE", 5000, "ALL")
    started = time.monotonic()
    acks = [alice.sio.call("new message", f"hung {i}", timeout=5) for i in range(10)]
    # The first store waits STORE_TIMEOUT_S; the rest go to the outbox at once.
    assert time.monotonic() - started < 2.0
    assert all(ack["pending"] for ack in acks)
    for i in range(10):
        anna.wait_for("new message", lambda m, i=i: m["message"] == f"hung {i}", 2)
    wait_until(
        lambda: (
            len(
                [m for m in bob.named("new message") if m["message"].startswith("hung")]
            )
            == 10
        ),
        15,
        "every message at the other instance once Redis answers",
    )
    got = [m["message"] for m in bob.named("new message")]
    assert got == [f"hung {i}" for i in range(10)]


def test_a_name_no_session_holds_is_released_within_a_heartbeat(
    cluster, clients, redis_server
):
    a, _ = cluster(2, **FAST)
    alice = clients(a.url)
    alice.login("Alice")
    instance = a.health().json()["instance"]
    store = redis.Redis.from_url(redis_server.url)
    ghost = json.dumps(
        {
            "sid": "gone",
            "room": "lobby",
            "name": "Ghost",
            "token": "t" * 16,
            "key": "ghost",
            "instance": instance,
        }
    )
    store.hset("chat:room:lobby:users", "ghost", ghost)
    store.hset(f"chat:instance:{instance}:members", "gone", ghost)
    left = alice.wait_for("user left", lambda d: d["username"] == "Ghost", 5)
    assert left["numUsers"] == 1
    assert store.hkeys("chat:room:lobby:users") == [b"alice"]


def test_a_reply_left_on_a_pooled_connection_is_never_read_as_the_next_ones(
    redis_server,
):
    """redis-py's pool checks a connection it hands out for unread data (a
    reply left by a command cut off) and replaces it. redis-py 8 skips that
    while maintenance notifications are on, its RESP3 default: the next
    command would read the stale reply as its own."""
    from chat.cluster.clients import redis_client

    client = redis_client(redis_server.url, 2.0)
    pool = client.connection_pool
    stale = pool.get_connection()
    stale.send_command("ECHO", "stale")
    wait_until(stale.can_read, timeout=5)
    pool.release(stale)
    assert client.echo("fresh") == b"fresh"
    assert client.echo("again") == b"again"


def test_a_message_stored_before_a_redis_restart_reaches_users_while_redis_reloads(
    gunicorn, clients, tmp_path
):
    """Alice's message was stored, and its publish was lost (her instance
    died, or the publish met the restart). Redis restarts from its AOF
    and loads slowly: meanwhile it takes SUBSCRIBE but answers XRANGE with
    LOADING. Bob's instance resubscribes then; its replay from the stream
    must wait for the data, not give up with nothing replayed."""
    from deploy.procs import RedisServer

    server = RedisServer(tmp_path, persistent=True, key_load_delay_us=50).start()
    try:
        env = {**FAST, "REDIS_URL": server.url}
        a, b = gunicorn(env), gunicorn(env)
        alice = clients(a.url)
        bob = clients(b.url)
        alice.login("Alice")
        bob.login("Bob")
        store = redis.Redis.from_url(server.url)
        # Some seconds of loading at start-up (50 µs per key, answering
        # clients every 1,024 commands).
        fill = "for i=1,500 do redis.call('set','filler:'..ARGV[1]..i,'x') end"
        for batch in range(60):
            store.eval(fill, 0, batch)
        history = RedisHistory(store, "chat:", 100)
        lost, _ = history.store(DEFAULT_ROOM, "Alice", "lost in the restart", "k1")
        store.shutdown(nosave=False)
        server.proc.wait(10)
        server.start(loaded=False)
        once = redis.Redis.from_url(server.url, retry=Retry(NoBackoff(), 0))
        with pytest.raises(redis.BusyLoadingError):
            once.xrange(f"chat:history:{DEFAULT_ROOM}")  # still loading
        got = bob.wait_for("new message", lambda m: m["id"] == lost["id"], 20)
        assert got["message"] == "lost in the restart"
        alice.say("after")
        bob.wait_for("new message", lambda m: m["message"] == "after", 15)
        texts = [m["message"] for m in bob.named("new message")]
        assert texts == ["lost in the restart", "after"]
    finally:
        server.stop()
