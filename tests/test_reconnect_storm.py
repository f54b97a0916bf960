"""A reconnect storm: logins queue for a few slots, Redis commands wait for a
connection, and a queue too long answers new sessions 503 + Retry-After."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import gevent
import pytest
import redis
from flask import Config

from chat.cluster import clients as redisconn
from chat.messages.stream import RedisHistory
from chat.presence.member import Member
from chat.presence.rooms import ADMITTED, RedisRooms
from chat.state import build_state
from tests.conftest import events_named
from tests.rawws import RawWebSocket
from tests.test_fast_path import UNLIMITED, gauges
from tests.test_observability import metric

HANDSHAKE = "/socket.io/?EIO=4&transport=polling"


def test_more_commands_in_flight_than_the_pool_holds_wait_instead_of_failing(
    redis_server,
):
    """redis-py's plain pool raised "Too many connections" past 100 in flight
    (a storm of logins then took the instance into degraded mode)."""
    client = redisconn.redis_client(redis_server.url, 5.0)
    in_flight = 3 * redisconn.POOL_SIZE
    # Each BLPOP holds its connection for 0.2 s, all at once (threads: this
    # process is not monkey-patched; the pool is thread-safe).
    with ThreadPoolExecutor(in_flight) as pool:
        jobs = [
            pool.submit(client.blpop, [f"nothing-{i}"], 0.2) for i in range(in_flight)
        ]
        assert [job.result(timeout=30) for job in jobs] == [None] * in_flight
    observer = redis.Redis.from_url(redis_server.url)
    assert len(observer.client_list()) <= redisconn.POOL_SIZE + 1


@pytest.mark.settings(LOGINS_IN_FLIGHT=1, LOGIN_QUEUE_MAX=1)
def test_a_login_waits_for_a_free_slot_and_then_completes(app, client, connect):
    admission = app.extensions["chat"].admission
    logins_before = metric(client, "chat_login_seconds_count")
    alice = connect()
    with admission.login():  # the only slot is taken
        waiting = gevent.spawn(alice.emit, "add user", "Alice")
        gevent.sleep(0.05)
        assert not waiting.dead and admission.waiting == 1
        assert metric(client, "chat_logins_waiting") == 1
        assert not events_named(alice, "login")
    waiting.join(5)
    assert events_named(alice, "login")[0]["numUsers"] == 1
    assert admission.waiting == 0
    assert metric(client, "chat_logins_waiting") == 0
    # A login in the connection's auth is counted and timed too.
    bob = connect(auth={"username": "Bob"})
    assert events_named(bob, "login")
    assert metric(client, "chat_login_seconds_count") == logins_before + 2


@pytest.mark.settings(LOGINS_IN_FLIGHT=1, LOGIN_QUEUE_MAX=1)
def test_a_new_session_is_refused_with_retry_after_while_logins_queue(
    app, client, connect
):
    admission = app.extensions["chat"].admission
    alice = connect()
    with admission.login():
        waiting = gevent.spawn(alice.emit, "add user", "Alice")
        gevent.sleep(0.05)
        busy = client.get(HANDSHAKE)
        assert busy.status_code == 503
        assert 1 <= int(busy.headers["Retry-After"]) <= 4
    waiting.join(5)
    # The queue is gone: sessions are welcome again, and Alice got in.
    assert client.get(HANDSHAKE).status_code == 200
    assert events_named(alice, "login")


def test_the_room_cap_holds_across_instances_with_one_round_trip_per_new_room(
    redis_server,
):
    client = redisconn.redis_client(redis_server.url, 5.0)
    a = RedisRooms(client, "chat:", max_rooms=2, ttl_s=3600)
    b = RedisRooms(client, "chat:", max_rooms=2, ttl_s=3600)

    def admits(rooms, room):
        return rooms.admit(room, "client", False, False) == ADMITTED

    assert admits(a, "one") and admits(b, "two")
    assert not admits(a, "three") and not admits(b, "three")
    assert admits(b, "one")  # counted by the other instance
    client.config_resetstat()
    assert all(admits(a, "one") for _ in range(10))
    # A room this instance counted moments ago costs no round trip.
    assert "cmdstat_evalsha" not in client.info("commandstats")


def test_catch_up_reads_what_was_missed_and_whether_some_was_trimmed(redis_server):
    """``since`` sends its read and the trim check in one round trip."""
    client = redisconn.redis_client(redis_server.url, 5.0)
    history = RedisHistory(client, "chat:", retain=5)
    assert history.since("empty", "1-0", 10) == ([], False)
    ids = [history.store("lobby", "Alice", f"m{i}")[0]["id"] for i in range(8)]
    missed, dropped = history.since("lobby", ids[4], 10)
    assert [m["message"] for m in missed] == ["m5", "m6", "m7"] and not dropped
    missed, dropped = history.since("lobby", ids[0], 10)
    assert [m["message"] for m in missed] == ["m3", "m4", "m5", "m6", "m7"]
    assert dropped  # m1 and m2 were trimmed away
    client.config_resetstat()
    history.since("lobby", ids[4], 10)
    stats = client.info("commandstats")
    assert stats["cmdstat_xrevrange"]["calls"] == 1
    assert stats["cmdstat_xinfo|stream"]["calls"] == 1


def test_a_room_left_with_history_is_admitted_again_without_a_round_trip(
    config, redis_server
):
    """A room left empty stays counted while it has history, so the room
    count remembers it; one left without history is counted again."""
    config.REDIS_URL = redis_server.url
    settings = Config("")
    settings.from_object(config)
    state = build_state(settings, socketio=None)
    client = redisconn.redis_client(redis_server.url, 5.0)

    def visit(room, say):
        member = Member(f"sid-{room}", room, "Ann", "t" * 24)
        assert state.presence.join(member).ok
        assert state.rooms.admit(room, "client", False, False) == ADMITTED
        state.presence.local[member.sid] = member
        if say:
            state.history.store(room, "Ann", "hello")
        assert state.presence.leave(member.sid)[1] == 0

    visit("talked", say=True)
    visit("quiet", say=False)
    assert client.zscore(state.keys.rooms, "talked") is not None
    assert client.zscore(state.keys.rooms, "quiet") is None
    client.config_resetstat()
    assert state.rooms.admit("talked", "client", False, False) == ADMITTED
    assert "cmdstat_evalsha" not in client.info("commandstats")
    assert state.rooms.admit("quiet", "client", False, False) == ADMITTED
    assert client.zscore(state.keys.rooms, "quiet") is not None


def test_logins_arriving_together_reach_redis_on_shared_pipelines(cluster):
    """Their join scripts go in pipelines of several (chat.cluster.batching),
    and every login still gets its own answer."""
    [server] = cluster(1, **UNLIMITED)
    sockets = []
    for _ in range(60):
        raw = RawWebSocket(server.port)
        raw.open_session()
        sockets.append(raw)
    before = gauges(server.url)
    for i, raw in enumerate(sockets):  # all at once, as in a storm
        raw.send_text("42" + json.dumps(["add user", f"u{i}"]))
    counts = []
    for i, raw in enumerate(sockets):
        while not (packet := raw.recv_text()).startswith('42["login"'):
            pass
        login = json.loads(packet[2:])[1]
        assert login["username"] == f"u{i}"  # its own answer
        counts.append(login["numUsers"])
    # Every claim counted once: the last to be answered saw all 60.
    assert max(counts) == 60
    after = gauges(server.url)
    batches = (
        after["chat_redis_script_batches_total"]
        - before["chat_redis_script_batches_total"]
    )
    scripts = (
        after["chat_redis_scripts_batched_total"]
        - before["chat_redis_scripts_batched_total"]
    )
    assert scripts == 60
    assert batches <= 30, f"{scripts:.0f} scripts in {batches:.0f} pipelines"
    for raw in sockets:
        raw.close()
