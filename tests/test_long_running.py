"""A month unattended: what an instance keeps does not grow with time.

Each test runs real gunicorn against a private redis-server and measures
the worker process, the way an operator watching RSS would.
"""

from __future__ import annotations

import json

import pytest
import redis

from tests.support import wait_until

pytestmark = pytest.mark.e2e


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def _emit(room: str, payload: dict) -> bytes:
    """A python-socketio pub/sub emit, as another instance publishes it."""
    return json.dumps(
        {
            "method": "emit",
            "event": "new message",
            "data": [payload],
            "namespace": "/",
            "room": room,
            "skip_sid": None,
            "callback": None,
            "host_id": "another-instance",
        }
    ).encode()


def _publish(client: redis.Redis, channel: str, data: bytes, count: int) -> None:
    for start in range(0, count, 5000):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(5000, count - start)):
            pipe.publish(channel, data)
        pipe.execute()


def test_messages_heard_through_redis_do_not_grow_the_worker(
    redis_server, cluster, clients
):
    """An instance that only hears messages (of a room nobody on it is in)
    keeps its memory: redis-py 8 with hiredis 3.3.0 kept one list per RESP3
    push reply (+100 bytes per message heard, for good)."""
    (instance,) = cluster(1)
    watcher = clients(instance.url)
    watcher.login("watcher", room="watch")
    (worker,) = instance.worker_pids()
    publisher = redis.Redis.from_url(redis_server.url)
    noise = _emit("nobody-here", {"id": "1-0", "username": "x", "message": "y" * 40})
    seen = iter(range(1, 1000))

    def heard(count: int) -> None:
        """Publish ``count`` messages, then one the watcher receives: the
        channel is ordered, so when it arrives every one before it was read."""
        _publish(publisher, "flask-socketio", noise, count)
        marker = f"{next(seen)}-1"
        payload = {"id": marker, "username": "bot", "message": "mark"}
        publisher.publish("flask-socketio", _emit("watch", payload))
        watcher.wait_for("new message", lambda m: m["id"] == marker, timeout=120)

    heard(20_000)  # warm-up: buffers, caches and the allocator settle
    before = rss_kib(worker)
    heard(300_000)
    grown_mib = (rss_kib(worker) - before) / 1024
    # On the leak this is ~29 MiB (100 bytes x 300,000).
    assert grown_mib < 8, f"the worker grew by {grown_mib:.1f} MiB"


def _kept(instance) -> dict[str, float]:
    """``chat_rooms_kept`` by structure, from /metrics."""
    from deploy.procs import http_get

    kept = {}
    for line in http_get(f"{instance.url}/metrics").text.splitlines():
        if line.startswith("chat_rooms_kept{"):
            structure = line.split('structure="', 1)[1].split('"', 1)[0]
            kept[structure] = float(line.rsplit(" ", 1)[1])
    return kept


def test_what_an_instance_keeps_per_room_is_freed_when_the_room_empties(
    cluster, clients
):
    """300 rooms used (a login, a message) and left: the instance keeps
    state for the one room still in use, not for every room it ever saw."""
    (instance,) = cluster(1, ROOM_LINGER_S="1", CLIENT_ROOMS_PER_HOUR="0")
    stays = clients(instance.url, auth={"username": "stays", "room": "home"})
    stays.wait_for("login")
    stays.say("hello")
    for i in range(300):
        visitor = clients(instance.url, auth={"username": "v", "room": f"r{i}"})
        visitor.wait_for("login")
        visitor.sio.call("new message", f"one-off {i}", timeout=5)
        visitor.close()
    assert _kept(instance)["channel"] > 1
    wait_until(
        lambda: all(count <= 1 for count in _kept(instance).values()),
        30,
        "per-room state of the rooms left to be freed",
    )
