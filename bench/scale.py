"""``make bench-scale``: how the cost per instance grows with the cluster.

    python -m bench.scale            # 1, 2, 4, 8 instances (BENCH_QUICK=1: 1, 2)

The model: ROOMS rooms of ROOM_USERS users, each room's users split over two
instances (room r on instances r mod N and r+1 mod N, as sticky balancing of
people who share a link tends to give), one Redis, and the same total of
RATE messages per second at every size. With 4 and 8 instances most rooms
have no member on most instances, but python-socketio's Redis manager uses
one channel: every instance receives and decodes every message.

Per size it reports, over the send window:

- CPU per delivered message, per instance (all instances' CPU / deliveries);
- the CPU an instance spends on rooms it does not host: one more instance,
  the observer, subscribes like the others and hosts nobody, so all of its
  CPU is that cost; divided by the messages it received, it is the cost of
  one foreign message, and times the foreign messages a hosting instance
  receives, that instance's share;
- Redis's own CPU per chat message (``/proc`` of redis-server: the stream
  write, the publish and its fan-out to every subscriber).

Results go to bench/results/scale-<date>.json and .md; the decision they
support is written up in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.run import RESULTS, cpu_seconds, loadgen
from deploy.procs import Instance, Process, RedisServer, free_port

QUICK = os.environ.get("BENCH_QUICK") == "1"
SIZES = [1, 2] if QUICK else [1, 2, 4, 8]
ROOMS = 8 if QUICK else 40
ROOM_USERS = 4 if QUICK else 20
RATE = 20 if QUICK else 100
SECONDS = 3 if QUICK else 15


def redis_cpu(server: RedisServer) -> float:
    """redis-server's CPU seconds so far (it has no children)."""
    fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1]
    ticks = fields.split()
    return (int(ticks[11]) + int(ticks[12])) / os.sysconf("SC_CLK_TCK")


def rooms_spec(instances: list[Instance]) -> list[dict]:
    n = len(instances)
    rooms = []
    for r in range(ROOMS):
        homes = [instances[r % n], instances[(r + 1) % n]]
        half = ROOM_USERS // 2
        rooms.append(
            {
                "name": f"room{r}",
                "members": [
                    {"url": homes[0].url, "count": half},
                    {"url": homes[1].url, "count": ROOM_USERS - half},
                ],
            }
        )
    return rooms


def measure(size: int, workdir: Path) -> dict:
    redis_server = RedisServer(workdir, free_port()).start()
    env = {
        "REDIS_URL": redis_server.url,
        "LOG_LEVEL": "WARNING",
        "MAX_SESSIONS_PER_IP": "0",
        "MAX_CONNECTIONS_PER_IP": "0",
        # One generator plays every user from one address.
        "CLIENT_MESSAGES_PER_S": "0",
        "CLIENT_MESSAGE_BYTES_PER_S": "0",
        "CLIENT_ROOMS_PER_HOUR": "0",
        "RATE_PER_S": "1000",
        "RATE_BURST": "1000",
    }
    started: list[Process] = [redis_server]
    try:
        hosts = [Instance(free_port(), workdir, env).start() for _ in range(size)]
        observer = Instance(free_port(), workdir, env).start()
        started += [*hosts, observer]
        spec = {
            "mode": "rooms",
            "rooms": rooms_spec(hosts),
            "rate": RATE,
            "duration": SECONDS,
        }
        gen = loadgen(spec)
        result = cpu0 = None
        for line in gen.stdout:
            answer = json.loads(line)
            if answer.get("phase") == "sending":
                t0 = time.monotonic()
                cpu0 = [cpu_seconds(i) for i in hosts]
                observer0, redis0 = cpu_seconds(observer), redis_cpu(redis_server)
            else:
                result = answer
        gen.wait(300)
        elapsed = time.monotonic() - t0
        host_cpu = [cpu_seconds(i) - c for i, c in zip(hosts, cpu0, strict=True)]
        observer_cpu = cpu_seconds(observer) - observer0
        redis_used = redis_cpu(redis_server) - redis0
    finally:
        for process in reversed(started):
            process.stop()
    sent = result["sent"]
    # Rooms a host holds members of: 2 of every N rooms (all, with one).
    hosted = min(1.0, 2 / size)
    foreign_per_host = sent * (1 - hosted)
    per_foreign_us = 1e6 * observer_cpu / sent if sent else None
    host_share = (
        (per_foreign_us * foreign_per_host / 1e6) / (sum(host_cpu) / size)
        if per_foreign_us is not None and sum(host_cpu)
        else None
    )
    return {
        "instances": size,
        "sent": sent,
        "deliveries": result["received"],
        "complete": result["complete"],
        "p99_ms": result["p99"],
        "elapsed_s": elapsed,
        "host_cpu_s": host_cpu,
        "cpu_us_per_delivery": 1e6 * sum(host_cpu) / result["received"],
        "host_cpu_percent": 100 * sum(host_cpu) / size / elapsed,
        "observer_cpu_percent": 100 * observer_cpu / elapsed,
        "foreign_us_per_message": per_foreign_us,
        "foreign_share_of_host_cpu": host_share,
        "redis_cpu_percent": 100 * redis_used / elapsed,
        "redis_us_per_message": 1e6 * redis_used / sent if sent else None,
    }


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"# Scale model, {meta['date']}",
        "",
        f"{ROOMS} rooms of {ROOM_USERS} users, each room on 2 instances, "
        f"{RATE} messages/s in total for {SECONDS} s, one Redis; plus one "
        "observer instance that hosts nobody.",
        "",
        "| instances | CPU µs / delivery | host CPU % | foreign µs / msg | "
        "foreign share of a host's CPU | Redis CPU % | Redis µs / msg | "
        "complete | p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['instances']} | {r['cpu_us_per_delivery']:.0f} | "
            f"{r['host_cpu_percent']:.1f} | {r['foreign_us_per_message']:.0f} | "
            f"{100 * r['foreign_share_of_host_cpu']:.0f} % | "
            f"{r['redis_cpu_percent']:.1f} | {r['redis_us_per_message']:.0f} | "
            f"{r['complete']:.3f} | {r['p99_ms']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(series: dict[str, list[dict]], path: Path) -> None:
    """The model's figures against the number of instances, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    panels = (
        ("cpu_us_per_delivery", "CPU µs per delivery (hosts)", 1),
        ("foreign_share_of_host_cpu", "% of a host's CPU on foreign rooms", 100),
        ("redis_us_per_message", "Redis CPU µs per message", 1),
    )
    for label, rows in series.items():
        x = [r["instances"] for r in rows]
        for ax, (key, title, scale) in zip(axes, panels, strict=True):
            ax.plot(x, [scale * (r[key] or 0) for r in rows], "o-", label=label)
            ax.set(title=title, xlabel="instances", xticks=x)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    if sys.argv[1:2] == ["--plot"]:
        # python -m bench.scale --plot OUT.png LABEL=run.json [LABEL=run.json]
        series = {}
        for arg in sys.argv[3:]:
            label, _, json_path = arg.partition("=")
            series[label] = json.loads(Path(json_path).read_text())["rows"]
        plot(series, Path(sys.argv[2]))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for size in SIZES:
            sys.stderr.write(f"{size} instance(s)...\n")
            workdir = Path(tmp) / f"n{size}"
            workdir.mkdir()
            rows.append(measure(size, workdir))
    meta = {"date": time.strftime("%Y-%m-%d-%H%M"), "quick": QUICK}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"scale-{meta['date']}{'-quick' if QUICK else ''}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}))
    text = markdown(rows, meta)
    stem.with_suffix(".md").write_text(text)
    plot({"this run": rows}, stem.with_suffix(".png"))
    print(text)


if __name__ == "__main__":
    main()
