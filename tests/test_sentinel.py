"""Redis Sentinel: real sentinels, a master and a replica, private to each test."""

import os
import signal
import time

import pytest

from chat.cluster.clients import parse_sentinel_url
from deploy.procs import RedisSentinels, wait_until
from tests.conftest import CLUSTER_ENV


@pytest.fixture
def sentinels(tmp_path):
    """``sentinels(**options)``: started; every one is stopped at the end."""
    started = []

    def start(**options):
        group = RedisSentinels(tmp_path / f"sentinels{len(started)}", **options)
        started.append(group)
        return group.start()

    yield start
    for group in started:
        group.stop()


def test_a_sentinel_url_names_sentinels_service_and_both_passwords():
    url = (
        "redis+sentinel://:node%40pw@10.0.0.1:26379,10.0.0.2:26380/2/chat"
        "?sentinel_password=s3nt"
    )
    parsed = parse_sentinel_url(url)
    assert parsed.sentinels == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
    assert parsed.service == "chat"
    assert parsed.node_options == {"password": "node@pw", "db": 2}
    assert parsed.sentinel_options == {"password": "s3nt"}
    assert parse_sentinel_url("redis://localhost:6379/0") is None
    with pytest.raises(ValueError, match="SERVICE"):
        parse_sentinel_url("redis+sentinel://10.0.0.1:26379/0")
    with pytest.raises(ValueError, match="unknown"):
        parse_sentinel_url("redis+sentinel://10.0.0.1:26379/0/chat?sentinel_pass=x")


def chat_works(instance, clients, room="sentinel"):
    alice = clients(instance.url)
    alice.login("Alice", room)
    ack = alice.sio.call("new message", "stored through the sentinels' master")
    assert "id" in ack
    bob = clients(instance.url)
    assert bob.login("Bob", room)["numUsers"] == 2
    history = bob.wait_for("history")["messages"]
    assert [m["message"] for m in history] == ["stored through the sentinels' master"]


@pytest.mark.e2e
@pytest.mark.parametrize(
    "passwords",
    [
        {"password": "node-pw", "sentinel_password": None},
        {"password": None, "sentinel_password": "sentinel-pw"},
        {"password": "node-pw", "sentinel_password": "sentinel-pw"},
    ],
    ids=["nodes", "sentinels", "both"],
)
def test_passwords_on_the_nodes_the_sentinels_or_both(
    sentinels, gunicorn, clients, passwords
):
    group = sentinels(**passwords)
    instance = gunicorn({"REDIS_URL": group.url()})
    assert instance.ready().status_code == 200
    assert instance.health().json()["mode"] == "cluster"
    chat_works(instance, clients)


@pytest.mark.e2e
def test_a_wrong_sentinel_password_stops_the_instance_with_one_line(
    sentinels, gunicorn
):
    group = sentinels(sentinel_password="sentinel-pw")
    instance = gunicorn({"REDIS_URL": group.url(sentinel_password="wrong")}, wait=False)
    assert instance.proc.wait(15) != 0
    log = instance.log()
    assert "cannot start: the sentinel at 127.0.0.1:" in log
    assert "refused the credentials (sentinel_password in REDIS_URL)" in log
    assert "Traceback" not in log and "wrong" not in log.replace("wrong_", "")


@pytest.mark.e2e
def test_no_reachable_sentinel_is_one_line_and_the_instance_starts_degraded(
    sentinels, gunicorn
):
    group = sentinels()
    url = group.url()
    group.stop()
    instance = gunicorn({"REDIS_URL": url}, wait=False)
    wait_until(
        lambda: (r := instance.health()) is not None and r.status_code == 200,
        20,
        "the instance to be alive without its sentinels",
    )
    assert "starting degraded: every sentinel in REDIS_URL is unreachable" in (
        instance.log()
    )
    assert instance.ready().status_code == 503


@pytest.mark.e2e
def test_a_master_failover_is_followed_with_no_instance_restarted(
    sentinels, gunicorn, clients
):
    group = sentinels(sentinel_password="sentinel-pw")
    env = {**CLUSTER_ENV, "REDIS_URL": group.url()}
    a, b = gunicorn(env), gunicorn(env)
    pids = (a.proc.pid, b.proc.pid)
    alice = clients(a.url)
    alice.login("Alice")
    bob = clients(b.url)
    assert bob.login("Bob")["numUsers"] == 2
    bob.say("before the failover")
    alice.wait_for("new message", lambda m: m["message"] == "before the failover")
    # Written to the master: wait until the replica has it too.
    wait_until(
        lambda: group.replica_offset() >= group.master_offset(), 10, "replication"
    )

    old_master = group.master.port
    killed = time.monotonic()
    os.killpg(group.master.proc.pid, signal.SIGKILL)
    wait_until(lambda: group.master_port() == group.replica.port, 30, "the promotion")
    promoted = time.monotonic()
    n = 0

    def delivered():
        nonlocal n
        n += 1
        bob.say(f"after the failover {n}")
        time.sleep(0.05)
        return [m for m in alice.named("new message") if "after" in m["message"]]

    first = wait_until(delivered, 30, "a message to cross instances again")
    crossed = time.monotonic()
    print(
        f"kill -9 of the master {old_master}: promotion after "
        f"{promoted - killed:.1f} s, first cross-instance message "
        f"{crossed - promoted:.1f} s after the promotion"
    )
    assert crossed - promoted < 5
    assert first[0]["username"] == "Bob"
    for instance in (a, b):
        wait_until(
            lambda i=instance: i.ready().status_code == 200, 20, "readiness again"
        )
    # The same processes: nothing was restarted.
    assert (a.proc.pid, b.proc.pid) == pids and a.running() and b.running()
    # Presence and history go on in the new master.
    carol = clients(a.url)
    assert carol.login("Carol")["numUsers"] == 3
    history = [m["message"] for m in carol.wait_for("history")["messages"]]
    assert history[0] == "before the failover"
    assert "after the failover 1" in history or first[0]["message"] in history
