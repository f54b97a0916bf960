"""STORE_REPLICAS: a message is acknowledged with an id only once a Redis
replica has it, so a master that dies right after cannot take it along."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from deploy.procs import RedisServer, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def master_and_replica(tmp_path):
    master = RedisServer(tmp_path / "master").start()
    replica = RedisServer(tmp_path / "replica", replica_of=master.port).start()
    client = redis.Redis.from_url(master.url)
    wait_until(
        lambda: client.info("replication").get("slave0", {}).get("state") == "online",
        30,
        "the replica to be in sync",
    )
    yield master, replica
    os.kill(replica.proc.pid, signal.SIGCONT)
    replica.stop()
    master.stop()


@pytest.fixture(autouse=True)
def folders(tmp_path):
    (tmp_path / "master").mkdir()
    (tmp_path / "replica").mkdir()


def test_a_message_gets_its_id_only_once_a_replica_has_it(
    master_and_replica, gunicorn, clients
):
    master, replica = master_and_replica
    # A replica's confirmation took over the default 100 ms once on a busy
    # CI machine; what is tested is that the id waits for it, not how long.
    instance = gunicorn(
        {
            "REDIS_URL": master.url,
            "STORE_REPLICAS": "1",
            "STORE_REPLICA_TIMEOUT_MS": "1000",
            "STORE_TIMEOUT_S": "2",
        }
    )
    ann = clients(instance.url, auth={"username": "Ann"})
    ann.wait_for("login")
    ack = ann.sio.call("new message", ("replicated", {"clientId": "c-1"}), timeout=5)
    assert ack.get("id") and ack["clientId"] == "c-1", (ack, instance.log()[-1500:])
    # A master that lost its scripts (a restart, a promoted replica): the
    # store loads its script again and the message still gets its id.
    redis.Redis.from_url(master.url).script_flush()
    ack = ann.sio.call("new message", ("flushed", {"clientId": "c-0"}), timeout=5)
    assert ack.get("id") and ack["clientId"] == "c-0", ack

    os.kill(replica.proc.pid, signal.SIGSTOP)  # the replica stops confirming
    ack = ann.sio.call("new message", ("waits", {"clientId": "c-2"}), timeout=5)
    assert ack == {"clientId": "c-2", "pending": True}
    os.kill(replica.proc.pid, signal.SIGCONT)
    stored = ann.wait_for("message stored", match=lambda p: p["clientId"] == "c-2")
    assert stored["id"] and stored["pendingId"]

    bo = clients(instance.url, auth={"username": "Bo"})
    history = bo.wait_for("history")["messages"]
    assert [m["message"] for m in history] == ["replicated", "flushed", "waits"]


def test_without_the_setting_the_masters_word_is_enough(
    master_and_replica, gunicorn, clients
):
    master, replica = master_and_replica
    instance = gunicorn({"REDIS_URL": master.url})
    ann = clients(instance.url, auth={"username": "Ann"})
    ann.wait_for("login")
    os.kill(replica.proc.pid, signal.SIGSTOP)
    ack = ann.sio.call("new message", ("at once", {"clientId": "c-3"}), timeout=5)
    assert ack["id"]


def test_sigterm_answers_a_message_it_is_storing_before_it_closes(
    master_and_replica, gunicorn, clients
):
    """A stock socket.io client fails every acknowledgement still pending
    when its connection closes. Ann's message waits for the replica when her
    instance is told to stop: the instance hands its users over and ends
    her session only once the message is stored and acknowledged, so her
    client gets its id, and Bo, on another instance, gets the message. The
    worker does not exit while the drain waits."""
    master, replica = master_and_replica
    settings = {
        "REDIS_URL": master.url,
        "STORE_REPLICAS": "1",
        "STORE_REPLICA_TIMEOUT_MS": "4000",
        "STORE_TIMEOUT_S": "5",
        "REDIS_TIMEOUT_S": "6",
        "PRESENCE_GRACE_S": "5",
    }
    stopping, staying = gunicorn(settings), gunicorn(settings)
    ann = clients(stopping.url, auth={"username": "Ann"})
    ann.wait_for("login")
    bo = clients(staying.url, auth={"username": "Bo"})
    bo.wait_for("login")
    store = redis.Redis.from_url(master.url)
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        ann.sio.emit(
            "new message",
            ("said as the deploy began", {"clientId": "c-9"}),
            callback=ann.on_ack("ack"),
        )
        wait_until(
            lambda: store.info("clients")["blocked_clients"] >= 1,
            what="the store to wait for the replica",
        )
        stopping.proc.send_signal(signal.SIGTERM)
        # Past the hand-over: the instance is closing its connections.
        wait_until(lambda: "draining: closing" in stopping.log(), what="the drain")
        # The fault lasts past gunicorn's look at its worker's pool (once a
        # second): a worker that exited then would cut the answer off.
        time.sleep(2)
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
    ann.wait_for("disconnect")
    names = [event for event, _ in ann.events]
    assert "ack" in names, (ann.events[-5:], stopping.log()[-1500:])
    assert names.index("ack") < names.index("disconnect")
    assert ann.named("ack")[0]["clientId"] == "c-9"
    assert ann.named("ack")[0].get("id"), ann.named("ack")
    said = bo.wait_for("new message")
    assert said["message"] == "said as the deploy began"
    assert stopping.proc.wait(15) == 0
