"""Where our server spends its time under fan-out load (py-spy, no restart).

    .venv/bin/python -m bench.profile [rate]

Two instances through a private Redis, FANOUT_USERS users, ``rate`` messages
a second for 10 s; py-spy samples instance A's worker and this prints the
functions with the most samples on top of the stack (self time) and the
hottest of our own frames (inclusive).
"""

from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path

from bench.run import FANOUT_USERS, RESULTS, loadgen, ours
from deploy.procs import BIN, RedisServer, free_port


def main(rate: int) -> None:
    workdir = RESULTS / ".work-profile"
    workdir.mkdir(parents=True, exist_ok=True)
    redis_server = RedisServer(workdir).start()
    a = ours(free_port(), workdir, redis_server.url).start()
    b = ours(free_port(), workdir, redis_server.url).start()
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
        gen = loadgen(spec)
        worker = max(a.worker_pids())
        subprocess.run(
            [
                str(BIN / "py-spy"),
                "record",
                "--pid",
                str(worker),
                "-d",
                "10",
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
        print(gen.communicate(timeout=120)[0].strip().splitlines()[-1])
    finally:
        a.stop()
        b.stop()
        redis_server.stop()
    report(raw)


def report(raw: Path) -> None:
    leaf, ours_inclusive, total = collections.Counter(), collections.Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        total += int(count)
        leaf[frames[-1]] += int(count)
        for frame in set(f for f in frames if "/chat/" in f):
            ours_inclusive[frame] += int(count)
    print(f"{total} samples; self time:")
    for frame, count in leaf.most_common(15):
        print(f"  {100 * count / total:5.1f}%  {frame}")
    print("our code, inclusive:")
    for frame, count in ours_inclusive.most_common(10):
        print(f"  {100 * count / total:5.1f}%  {frame}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
