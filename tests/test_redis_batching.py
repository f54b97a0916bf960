"""Scripts called at once by many greenlets reach Redis together, and every
caller still gets exactly its own answer (chat.cluster.batching)."""

from __future__ import annotations

import time

import gevent
import pytest
import redis

from chat.cluster.batching import ScriptBatcher
from chat.cluster.clients import redis_client

pytestmark = pytest.mark.e2e

ECHO = """
if ARGV[1] == 'bad' then return redis.error_reply('refused ' .. ARGV[1]) end
redis.call('INCR', KEYS[1])
return {ARGV[1], redis.call('GET', KEYS[1])}
"""


def reads_processed(r: redis.Redis) -> int:
    return int(r.info("stats")["total_reads_processed"])


def run_together(batcher, script, args_list) -> list:
    """Every call in its own greenlet, all queued before any is sent."""
    calls = [gevent.spawn(batcher, script, ["n"], [arg]) for arg in args_list]
    gevent.joinall(calls, timeout=20)
    assert all(call.ready() for call in calls), "a caller still waits"
    return calls


def test_concurrent_scripts_go_in_one_round_trip_each_with_its_own_reply(
    redis_server,
):
    client = redis_client(redis_server.url, 2.0)
    watch = redis.Redis.from_url(redis_server.url)
    batcher = ScriptBatcher(client)
    script = client.register_script(ECHO)
    script(keys=["warm"], args=["up"])  # loaded, like a running instance's
    before = reads_processed(watch)

    calls = run_together(batcher, script, [f"c{i}" for i in range(50)])

    assert [call.value[0] for call in calls] == [f"c{i}".encode() for i in range(50)]
    # Each ran once, in the order they were called.
    assert [int(call.value[1]) for call in calls] == list(range(1, 51))
    assert batcher.batches == 1
    # One read for the whole pipeline (and one for the INFO asking).
    assert reads_processed(watch) - before <= 3


def test_a_failing_script_fails_only_its_own_caller(redis_server):
    client = redis_client(redis_server.url, 2.0)
    batcher = ScriptBatcher(client)
    script = client.register_script(ECHO)

    calls = run_together(batcher, script, ["a", "bad", "b"])

    assert calls[0].value[0] == b"a" and calls[2].value[0] == b"b"
    assert isinstance(calls[1].exception, redis.ResponseError)
    assert "refused bad" in str(calls[1].exception)


def test_a_script_redis_forgot_is_loaded_and_run_exactly_once(redis_server):
    client = redis_client(redis_server.url, 2.0)
    batcher = ScriptBatcher(client)
    script = client.register_script(ECHO)
    script(keys=["warm"], args=["up"])
    client.script_flush()  # as after a restart or a failover

    calls = run_together(batcher, script, [f"c{i}" for i in range(10)])

    assert sorted(call.value[0] for call in calls) == sorted(
        f"c{i}".encode() for i in range(10)
    )
    assert int(client.get("n")) == 10


def test_a_stalled_redis_fails_every_waiting_caller_in_bounded_time(redis_server):
    client = redis_client(
        redis_server.url, 0.3, retry=redis.retry.Retry(redis.backoff.NoBackoff(), 1)
    )
    batcher = ScriptBatcher(client)
    script = client.register_script(ECHO)
    script(keys=["warm"], args=["up"])
    redis.Redis.from_url(redis_server.url).execute_command(
        "CLIENT", "PAUSE", 3000, "ALL"
    )
    started = time.monotonic()

    calls = run_together(batcher, script, [f"c{i}" for i in range(20)])

    assert all(isinstance(call.exception, redis.RedisError) for call in calls)
    assert time.monotonic() - started < 2.5  # two timeouts, not the pause


def test_calls_past_the_bound_are_refused_at_once_and_the_rest_answered(
    redis_server,
):
    client = redis_client(redis_server.url, 2.0)
    batcher = ScriptBatcher(client, max_waiting=5)
    script = client.register_script(ECHO)

    calls = run_together(batcher, script, [f"c{i}" for i in range(8)])

    answered = [call for call in calls if call.successful()]
    refused = [call for call in calls if not call.successful()]
    assert len(answered) == 5 and len(refused) == 3
    assert all("waiting" in str(call.exception) for call in refused)
