"""What STORE_REPLICAS costs a message: the store's round trip with and
without a WAIT for one replica, against a private master and replica.

    python -m bench.replica_wait [--messages 3000]

Stores go one after another, as a sender's do; it prints the median and
p99 of the store's time, and the master's CPU per store, both ways.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import redis

from chat.messages.stream import RedisHistory
from deploy.procs import RedisServer, wait_until


def _cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return info["used_cpu_sys"] + info["used_cpu_user"]


def measure(history: RedisHistory, client: redis.Redis, count: int) -> dict:
    times = []
    cpu = _cpu_s(client)
    for i in range(count):
        started = time.perf_counter()
        history.store("bench", "ann", f"message {i} " + "x" * 80, f"c{i}")
        times.append((time.perf_counter() - started) * 1000)
    cpu = _cpu_s(client) - cpu
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p99_ms": times[int(len(times) * 0.99)],
        "master_cpu_us": cpu / count * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "m").mkdir()
        (Path(tmp) / "r").mkdir()
        master = RedisServer(Path(tmp) / "m").start()
        replica = RedisServer(Path(tmp) / "r", replica_of=master.port).start()
        try:
            client = redis.Redis.from_url(master.url)
            wait_until(
                lambda: (
                    client.info("replication").get("slave0", {}).get("state")
                    == "online"
                ),
                30,
                "the replica to be in sync",
            )
            for replicas in (0, 1, 0, 1):
                history = RedisHistory(
                    client, f"bench{replicas}:", 1000, replicas=replicas
                )
                client.flushall()
                found = measure(history, client, args.messages)
                print(
                    f"STORE_REPLICAS={replicas}: store median "
                    f"{found['median_ms']:.3f} ms, p99 {found['p99_ms']:.3f} ms, "
                    f"master CPU {found['master_cpu_us']:.1f} µs per store"
                )
        finally:
            replica.stop()
            master.stop()


if __name__ == "__main__":
    main()
