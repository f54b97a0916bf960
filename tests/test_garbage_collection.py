"""Full garbage collections under logins: rare, because each one stops
every connection of the worker at once (gunicorn.conf.py's worker).

The stock socket.io client's churn (connect, log in, one message, leave)
through gunicorn and a Redis, as deployed; the count of full collections is the
server's own ``chat_gc_pause_seconds`` in /metrics.
"""

import re

import pytest
import requests

from bench.run import measured_run, ours
from deploy.procs import RedisServer, free_port

pytestmark = pytest.mark.e2e

# Measured: one full collection per about 650 logins with Python's default
# thresholds, one per about 5,000 with the worker's.
LOGINS_PER_FULL_COLLECTION_AT_LEAST = 1500


def full_collections(url: str) -> float:
    page = requests.get(f"{url}/metrics", timeout=10).text
    found = re.search(r'chat_gc_pause_seconds_count\{generation="2"\} (\S+)', page)
    return float(found[1]) if found else 0.0


def test_logins_coming_and_going_seldom_stop_everyone_for_a_full_collection(
    tmp_path,
):
    redis_server = RedisServer(tmp_path).start()
    server = ours(free_port(), tmp_path, redis_server.url).start()
    try:
        before = full_collections(server.url)
        spec = {
            "mode": "churn",
            "urls": [server.url],
            "rooms": 20,
            "batch": 50,
            "duration": 6,
        }
        result = measured_run(spec, [server], timeout=60)
        collections = full_collections(server.url) - before
    finally:
        server.stop()
        redis_server.stop()
    assert result["errors"] == 0 and result["logins"] > 0, result
    allowed = max(1, result["logins"] // LOGINS_PER_FULL_COLLECTION_AT_LEAST)
    assert collections <= allowed, (result["logins"], collections)
    print(f"\n{result['logins']} logins, {collections:.0f} full collections")
