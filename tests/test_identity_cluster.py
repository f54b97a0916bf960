"""Names that are yours across a cluster: during a hand-over, after a Redis
outage; and the edges a client reaches without nginx (real gunicorn and
redis-server)."""

from __future__ import annotations

import socket
import time

import pytest

from tests.support import presence, wait_until

pytestmark = pytest.mark.e2e


def test_nobody_takes_a_name_during_a_hand_over(cluster, clients):
    """The attacker logs in as Alice while Alice's instance drains: refused.
    Alice comes back with her token; the room sees nothing odd."""
    a, b = cluster(2, PRESENCE_TTL_S="60", PRESENCE_GRACE_S="5")
    carol = clients(a.url)
    carol.login("Carol")
    alice = clients(b.url, auth={"username": "Alice"})
    token = alice.wait_for("login")["token"]
    carol.wait_for("user joined", lambda d: d["username"] == "Alice")
    assert b.terminate(timeout=15) == 0
    mallory = clients(a.url, auth={"username": "Alice"})
    assert mallory.wait_for("login error")["reason"] == "name_taken"
    thief = clients(a.url)
    thief.sio.emit("add user", "alice")
    assert thief.wait_for("login error")["reason"] == "name_taken"
    back = clients(a.url, auth={"username": "Alice", "token": token})
    assert back.wait_for("login")["numUsers"] == 2
    back.say("it is me")
    said = carol.wait_for("new message", lambda m: m["message"] == "it is me")
    assert said["username"] == "Alice"
    assert carol.named("user left") == []
    assert [d["username"] for d in carol.named("user joined")] == ["Alice"]


def test_a_name_taken_twice_during_an_outage_ends_with_one_session(
    cluster, clients, redis_server
):
    a, b = cluster(2)
    first = clients(a.url, auth={"username": "Alice"})
    first.wait_for("login")
    watcher = clients(b.url)
    watcher.login("Watcher")
    redis_server.kill()
    second = clients(b.url, auth={"username": "Alice"})
    second.wait_for("login")  # b cannot see a's users while Redis is away
    redis_server.start()

    def told(chat_client):
        errors = chat_client.named("login error")
        return any(e["reason"] == "name_taken" for e in errors)

    loser = wait_until(
        lambda: first if told(first) else second if told(second) else None,
        20,
        "the session that lost the name to be told",
    )
    winner = second if loser is first else first
    assert not told(winner)
    refused = loser.sio.call("new message", "am I Alice?", timeout=5)
    assert refused["error"] == "not_logged_in"
    winner.say("one Alice")
    said = watcher.wait_for("new message", lambda m: m["message"] == "one Alice")
    assert said["username"] == "Alice"
    # The people list of every page ends with Alice in it: a leave of the
    # loser, then a join of the holder.
    wait_until(lambda: watcher.named("user left"), 10, "the room to be told")
    last = watcher.wait_for("user joined", lambda d: d["username"] == "Alice")
    assert presence(last)["username"] == "Alice"


def test_a_request_body_must_arrive_within_its_deadline(gunicorn):
    instance = gunicorn({"REQUEST_BODY_TIMEOUT_S": "1"})
    with socket.create_connection(("127.0.0.1", instance.port), timeout=10) as sock:
        sock.sendall(
            b"POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\nContent-Length: 100\r\n\r\n"
        )
        started = time.monotonic()
        answer = b""
        for _ in range(30):  # one byte a second, for up to 30 s
            try:
                sock.sendall(b"4")
            except OSError:
                break
            sock.settimeout(1.0)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            if not chunk:
                break
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert time.monotonic() - started < 5


def test_an_out_of_range_last_id_logs_nothing_above_info(cluster, clients):
    (instance,) = cluster(1)
    huge = "99999999999999999999999999-0"
    for i in range(60):
        user = clients(instance.url, auth={"username": f"u{i}", "lastId": huge})
        history = user.wait_for("history")
        assert history["dropped"] is False
        user.close()
    lines = [line for line in instance.log().splitlines() if "WARNING" in line]
    assert [line for line in lines if "history" in line] == []


def test_colliding_client_ids_store_two_messages(cluster, clients):
    (instance,) = cluster(1)
    ann = clients(instance.url)
    ann.login("ann")
    annx = clients(instance.url)
    annx.login("ann:x")
    one = ann.sio.call("new message", ("from ann", {"clientId": "x:1"}), timeout=5)
    two = annx.sio.call("new message", ("from ann:x", {"clientId": "1"}), timeout=5)
    assert one["id"] != two["id"]
    ann.wait_for("new message", lambda m: m["message"] == "from ann:x")
