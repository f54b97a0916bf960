"""Many instances as one chat room: real gunicorn instances and a real Redis."""

import time

import pytest
import redis

from tests.support import presence, wait_until

pytestmark = pytest.mark.e2e


def count_is(n):
    return lambda data: data["numUsers"] == n


def test_users_on_different_instances_chat_as_one_room(cluster, clients):
    a, b = cluster(2)
    alice = clients(a.url)
    bob = clients(b.url)
    carol = clients(a.url)
    assert alice.login("Alice")["numUsers"] == 1
    assert bob.login("Bob")["numUsers"] == 2
    alice.wait_for(
        "user joined", lambda d: presence(d) == {"username": "Bob", "numUsers": 2}
    )
    assert carol.login("Carol")["numUsers"] == 3
    bob.wait_for(
        "user joined", lambda d: presence(d) == {"username": "Carol", "numUsers": 3}
    )
    assert carol.named("login")[0]["users"] == ["Alice", "Bob", "Carol"]

    bob.sio.emit("typing")
    alice.wait_for("typing", lambda d: presence(d) == {"username": "Bob"})
    bob.sio.emit("stop typing")
    carol.wait_for("stop typing", lambda d: presence(d) == {"username": "Bob"})
    bob.say("hello from instance b")
    for reader in (alice, carol):
        message = reader.wait_for("new message")
        assert (message["username"], message["message"]) == (
            "Bob",
            "hello from instance b",
        )
    alice.say("and back from a")
    assert bob.wait_for("new message")["message"] == "and back from a"

    carol.close()
    bob.wait_for(
        "user left", lambda d: presence(d) == {"username": "Carol", "numUsers": 2}
    )
    alice.wait_for(
        "user left", lambda d: presence(d) == {"username": "Carol", "numUsers": 2}
    )
    assert bob.named("new message") == [bob.named("new message")[0]]


def test_a_name_is_unique_across_the_cluster(cluster, clients):
    a, b = cluster(2)
    clients(a.url).login("Alice")
    impostor = clients(b.url)
    impostor.sio.emit("add user", "ALICE")
    refusal = impostor.wait_for("login error")
    assert refusal["reason"] == "name_taken"
    assert impostor.login("Alicia")["numUsers"] == 2


def test_unix_socket_redis_url_works(gunicorn, redis_server, clients):
    env = {"REDIS_URL": redis_server.unix_url}
    a, b = gunicorn(env), gunicorn(env)
    alice = clients(a.url)
    alice.login("Alice")
    assert clients(b.url).login("Bob")["numUsers"] == 2
    alice.wait_for("user joined", count_is(2))


def test_killed_instance_users_leave_within_the_ttl(cluster, clients):
    a, b = cluster(2)
    alice = clients(a.url)
    alice.login("Alice")
    clients(b.url).login("Bob")
    clients(b.url).login("Bert")
    alice.wait_for("user joined", count_is(3))
    killed_at = time.monotonic()
    b.kill()
    # heartbeat 1 s, TTL 3 s: the lease expires within 3 s, a beat notices within 1.
    alice.wait_for("user left", lambda d: d["username"] == "Bob", timeout=8)
    alice.wait_for("user left", lambda d: d["username"] == "Bert", timeout=2)
    noticed_after = time.monotonic() - killed_at
    assert noticed_after < 3 + 1 + 1.5
    lefts = sorted(alice.named("user left"), key=lambda d: -d["numUsers"])
    assert [d["numUsers"] for d in lefts] == [2, 1]
    assert clients(a.url).login("Bob")["numUsers"] == 2


def test_sigterm_is_quiet_for_users_who_come_back_within_the_grace(cluster, clients):
    """A graceful restart: Bob's page reconnects elsewhere and reclaims his
    name with his token (nobody sees him leave or join); Carol never comes
    back and is announced as left once, after the grace. Dave, a client
    without a token of its own (the stock example page), is announced as
    left at once and joins again: his name is never held for a client that
    could not prove it is his."""
    a, b = cluster(2, PRESENCE_TTL_S="60", PRESENCE_GRACE_S="4")
    alice = clients(a.url)
    alice.login("Alice")
    token = clients(b.url, auth={"username": "Bob"}).wait_for("login")["token"]
    clients(b.url, auth={"username": "Carol"}).wait_for("login")
    clients(b.url).login("Dave")
    alice.wait_for("user joined", count_is(4))
    stopped_at = time.monotonic()
    assert b.terminate(timeout=15) == 0
    alice.wait_for("user left", lambda d: d["username"] == "Dave")
    bob = clients(a.url, auth={"username": "Bob", "token": token})
    assert bob.wait_for("login")["numUsers"] == 3
    dave = clients(a.url)
    assert dave.login("Dave")["numUsers"] == 4
    left = alice.wait_for("user left", lambda d: d["username"] == "Carol", timeout=10)
    # Not before the grace, long before the 60 s TTL.
    assert time.monotonic() - stopped_at >= 4
    assert presence(left) == {"username": "Carol", "numUsers": 3}
    alice.say("still here?")
    bob.wait_for("new message", lambda m: m["message"] == "still here?")
    assert [d["username"] for d in alice.named("user left")] == ["Dave", "Carol"]
    assert [d["username"] for d in alice.named("user joined")] == [
        "Bob",
        "Carol",
        "Dave",
        "Dave",
    ]
    # Bob never sees himself leave or join; he does see Carol go.
    assert [d["username"] for d in bob.named("user left")] == ["Carol"]
    assert [d["username"] for d in bob.named("user joined")] == ["Dave"]


def test_sigterm_with_no_grace_announces_the_instance_users_at_once(cluster, clients):
    a, b = cluster(2, PRESENCE_TTL_S="60", PRESENCE_GRACE_S="0")
    alice = clients(a.url)
    alice.login("Alice")
    clients(b.url).login("Bob")
    alice.wait_for("user joined", count_is(2))
    assert b.terminate(timeout=15) == 0
    # Long before a 60 s TTL could expire.
    alice.wait_for(
        "user left",
        lambda d: presence(d) == {"username": "Bob", "numUsers": 1},
        timeout=5,
    )


def test_redis_restart_degrades_then_recovers_without_restarting_instances(
    cluster, clients, redis_server
):
    # The default heartbeat: recovery must not wait for it.
    a, b = cluster(2, PRESENCE_HEARTBEAT_S="5", PRESENCE_TTL_S="15")
    alice = clients(a.url)
    alice2 = clients(a.url)
    bob = clients(b.url)
    alice.login("Alice")
    alice2.login("Anna")
    bob.login("Bob")

    redis_server.terminate(timeout=10)
    for instance in (a, b):
        ready = wait_until(
            lambda i=instance: (
                (r := i.ready()) is not None and r.status_code == 503 and r.json()
            ),
            6,
            "readyz to report the outage",
        )
        assert ready["status"] == "degraded"
        assert "redis" in ready["reason"]
        # Alive all the same: restarting it would only drop its users.
        assert instance.health().status_code == 200
    # Users of one instance keep talking to each other during the outage.
    alice.say("during the outage")
    assert alice2.wait_for("new message")["message"] == "during the outage"

    redis_server.start()
    for instance in (a, b):
        wait_until(
            lambda i=instance: (r := i.ready()) is not None and r.status_code == 200,
            10,
            "readyz to recover",
        )
    bob.say("after the outage")
    assert alice.wait_for(
        "new message", lambda d: d["message"] == "after the outage", timeout=5
    )
    # Presence was rebuilt from each instance's own users.
    assert clients(b.url).login("Carol")["numUsers"] == 4
    assert "Traceback" not in a.log() + b.log()


def test_wrong_redis_password_is_one_clear_error(gunicorn, redis_server):
    wrong = redis_server.url.replace(redis_server.password, "not-the-password")
    instance = gunicorn({"REDIS_URL": wrong}, wait=False)
    assert instance.proc.wait(15) != 0
    log = instance.log()
    assert "cannot start: Redis refused the credentials in REDIS_URL" in log
    assert "Traceback" not in log
    assert "not-the-password" not in log


def test_instance_started_during_a_redis_outage_serves_and_joins_later(
    gunicorn, clients, tmp_path
):
    from deploy.procs import RedisServer
    from tests.support import free_port

    later = RedisServer(tmp_path, free_port())
    instance = gunicorn(
        {"REDIS_URL": later.url, "PRESENCE_HEARTBEAT_S": "1", "PRESENCE_TTL_S": "3"},
        wait=False,
    )
    try:
        wait_until(
            lambda: (r := instance.health()) is not None and r.status_code == 200,
            20,
            "the instance to be alive without Redis",
        )
        assert "starting degraded: Redis at REDIS_URL is unreachable" in instance.log()
        assert instance.ready().status_code == 503
        alice = clients(instance.url)
        bob = clients(instance.url)
        alice.login("Alice")
        bob.login("Bob")
        alice.say("local chat goes on")
        assert bob.wait_for("new message")["message"] == "local chat goes on"
        later.start()
        wait_until(
            lambda: (r := instance.ready()) is not None and r.status_code == 200,
            10,
            "readyz once Redis is there",
        )
        store = redis.Redis.from_url(later.url)
        assert store.hlen("chat:room:lobby:users") == 2
        assert "Traceback" not in instance.log()
    finally:
        later.stop()


def test_malformed_redis_url_is_one_clear_error(gunicorn):
    instance = gunicorn({"REDIS_URL": "redis://127.0.0.1:notaport/0"}, wait=False)
    assert instance.proc.wait(15) != 0
    assert "cannot start: REDIS_URL cannot be used" in instance.log()
    assert "Traceback" not in instance.log()


def test_presence_is_kept_in_redis(cluster, clients, redis_server):
    a, _ = cluster(2)
    clients(a.url).login("Alice")
    store = redis.Redis.from_url(redis_server.url)
    assert store.hlen("chat:room:lobby:users") == 1
