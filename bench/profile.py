"""Where our server spends its time (py-spy, no restart).

    .venv/bin/python -m bench.profile [rate]     # fan-out
    .venv/bin/python -m bench.profile churn      # logins: the login table
    .venv/bin/python -m bench.profile 40 cluster # the same on a Redis Cluster

Two instances through a private Redis (or a private Redis Cluster of three
masters and three replicas, with ``cluster``). Fan-out: FANOUT_USERS users, ``rate``
messages a second for 10 s; py-spy samples instance A's worker and this
prints the functions with the most samples on top of the stack (self time)
and the hottest of our own frames (inclusive). Churn: the benchmark's churn
(connect, log in, one message, leave) for 10 s, and the login table of
docs/benchmarks.md: instance A's CPU per cycle, split by what each sample was
doing (chat.observe is not involved: bench.login_table classifies stacks).
"""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
import sys
from pathlib import Path

from bench.login_table import login_table
from bench.run import (
    FANOUT_USERS,
    RESULTS,
    STORM_BATCH,
    STORM_ROOMS,
    cpu_seconds,
    loadgen,
    ours,
)
from deploy.procs import BIN, RedisCluster, RedisServer, free_port

PROFILE_S = 10


def main(rate: int | None, cluster: bool = False) -> None:
    """Profile a fan-out at ``rate`` messages/s, or the churn when None;
    through a Redis Cluster when ``cluster``."""
    workdir = RESULTS / ".work-profile"
    workdir.mkdir(parents=True, exist_ok=True)
    if cluster:
        # A cluster's nodes keep their layout on disk: start from none.
        shutil.rmtree(workdir / "redis-cluster", ignore_errors=True)
        redis_server = RedisCluster(workdir / "redis-cluster").start()
    else:
        redis_server = RedisServer(workdir).start()
    # The churn runs as in the benchmark: default logging (INFO).
    settings = {} if rate else {"LOG_LEVEL": "INFO"}
    a = ours(free_port(), workdir, redis_server.url, **settings).start()
    b = ours(free_port(), workdir, redis_server.url, **settings).start()
    raw = workdir / "profile.txt"
    try:
        half = FANOUT_USERS // 2
        spec = {
            "mode": "fanout",
            "rate": rate,
            "duration": 12,
            "senders": [{"url": a.url, "count": 5}, {"url": b.url, "count": 5}],
            "receivers": [
                {"url": a.url, "count": half - 5},
                {"url": b.url, "count": half - 5},
            ],
        }
        if not rate:
            spec = {
                "mode": "churn",
                "urls": [a.url, b.url],
                "rooms": STORM_ROOMS,
                "batch": STORM_BATCH,
                "duration": 12,
            }
        gen = loadgen(spec)
        worker = max(a.worker_pids())
        cpu0 = cpu_seconds(a)
        subprocess.run(
            [
                str(BIN / "py-spy"),
                "record",
                "--pid",
                str(worker),
                "-d",
                str(PROFILE_S),
                "-r",
                "200",
                "-f",
                "raw",
                "-o",
                str(raw),
                "--nonblocking",
            ],
            check=True,
            capture_output=True,
        )
        cpu = cpu_seconds(a) - cpu0
        answer = gen.communicate(timeout=120)[0].strip().splitlines()[-1]
        print(answer)
    finally:
        a.stop()
        b.stop()
        redis_server.stop()
    report(raw)
    if not rate:
        # Instance A had half of the cycles (the generator alternates).
        cycles = json.loads(answer)["loginsPerS"] * PROFILE_S / 2
        print(login_table(raw, 1000 * cpu / cycles))


def report(raw: Path) -> None:
    leaf, ours_inclusive, total = collections.Counter(), collections.Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        total += int(count)
        leaf[frames[-1]] += int(count)
        for frame in set(f for f in frames if "(chat/" in f):
            ours_inclusive[frame] += int(count)
    print(f"{total} samples; self time:")
    for frame, count in leaf.most_common(15):
        print(f"  {100 * count / total:5.1f}%  {frame}")
    print("our code, inclusive:")
    for frame, count in ours_inclusive.most_common(10):
        print(f"  {100 * count / total:5.1f}%  {frame}")


if __name__ == "__main__":
    arg = sys.argv[1] if len(sys.argv) > 1 else "40"
    main(None if arg == "churn" else int(arg), cluster="cluster" in sys.argv[2:])
