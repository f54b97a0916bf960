"""What a held websocket costs the server, so that it cannot creep back up.

`make bench` measures it against Node from 5,000 to 10,000 connections; this
is the same measurement, smaller: the server's RSS (gunicorn's master and
worker) from 1,000 to 2,000 logged-in websocket clients of the stock
socket.io client, idle, in rooms of 100. A timing would be noise in a test;
memory per connection repeats within a kilobyte from run to run.
"""

import json
import subprocess

import pytest

from bench.run import loadgen, ours, rss_kb
from deploy.procs import free_port

pytestmark = pytest.mark.e2e

# Measured 5.8 kB per connection here (19.5 kB while every websocket kept a
# greenlet, before parking); the bound leaves a third for allocator noise.
KB_PER_CONNECTION_BOUND = 8


def test_a_held_websocket_costs_the_server_under_the_bound(tmp_path):
    server = ours(free_port(), tmp_path, None).start()
    gen = loadgen({"mode": "hold", "url": server.url}, stdin=subprocess.PIPE)
    try:

        def hold(target: int) -> int:
            gen.stdin.write(f"target {target}\n")
            gen.stdin.flush()
            answer = json.loads(gen.stdout.readline())
            assert answer == {"ready": target, "errors": 0}
            return rss_kb(server)

        hold(200)  # warm: pools, caches and the first arenas
        small = hold(1000)
        large = hold(2000)
        per_connection = (large - small) / 1000
        assert 0 < per_connection < KB_PER_CONNECTION_BOUND, per_connection
        print(f"\n{per_connection:.1f} kB per held websocket (1,000 -> 2,000)")
    finally:
        gen.kill()
        gen.wait(10)
        gen.stdin.close()
        gen.stdout.close()
        server.stop()
