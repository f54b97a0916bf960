"""Benchmark ours against the Node socket.io peer, side by side, in one run.

    make bench                  # about 15 minutes
    BENCH_QUICK=1 make bench    # about 90 s, tiny steps: checks that it runs

Both servers run on this machine with the same private Redis, one process per
instance, and are driven by the same Node load generator (bench/loadgen.js)
over websocket on 127.0.0.1. Writes bench/results/<date>.json, .md and .png:
CPU per delivery as the median of the unsaturated steps (UNSATURATED), on
one instance and on two, counted from the first send; p99 at P99_RATE;
memory per connection as the slope between the two largest steps held.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import redis

from chat.cluster.clients import is_cluster
from deploy.nginx import Nginx
from deploy.procs import (
    ROOT,
    Instance,
    Process,
    RedisCluster,
    RedisServer,
    free_port,
    http_get,
    wait_until,
)

QUICK = os.environ.get("BENCH_QUICK") == "1"
# The largest step stays under this machine's hard limit of 20,000 open
# files per process, which nobody here may raise: 19,000 connections and
# the server's own descriptors fit (and the generator's, in its process).
HOLD_STEPS = [100, 300] if QUICK else [1000, 2000, 5000, 10000, 19000]
# The idle window at each step, in which only pings run.
IDLE_SECONDS = 1 if QUICK else 3
FANOUT_USERS = 20 if QUICK else 200
SENDERS = 10
FANOUT_RATES = [5, 20] if QUICK else [5, 20, 40, 80, 160, 320, 480, 640]
# The unsaturated steps whose median is the CPU figure; never a saturated one.
UNSATURATED = (5, 20) if QUICK else (20, 160)
P99_RATE = 20 if QUICK else 160
FANOUT_SECONDS = 1 if QUICK else 4
MODERATE_RATE = 5
CROSS_RECEIVERS = 10
CROSS_RATE, CROSS_SECONDS = 20, (1 if QUICK else 5)
RESULTS = Path(os.environ.get("BENCH_RESULTS") or ROOT / "bench" / "results")
PEER = ROOT / "bench" / "peer"


# -- servers ------------------------------------------------------------------
class Peer(Process):
    """One Node socket.io instance (bench/peer/server.js)."""

    def __init__(
        self, port: int, workdir: Path, redis_url: str | None, **settings: str
    ) -> None:
        super().__init__(workdir / f"peer-{port}.log")
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "PORT": str(port), **settings}
        if redis_url:
            self.env["REDIS_URL"] = redis_url

    def start(self) -> Peer:
        self._spawn(["node", str(PEER / "server.js")], env=self.env, cwd=PEER)
        wait_until(
            lambda: (a := http_get(f"{self.url}/healthz")) and a.status_code == 200,
            15,
            f"peer on {self.port}",
        )
        return self


def ours(port: int, workdir: Path, redis_url: str | None, **settings: str) -> Instance:
    # One generator on one address plays every user: the per-connection and
    # per-address caps are lifted explicitly (the defaults are per person).
    env = {
        "LOG_LEVEL": "WARNING",
        "RATE_BURST": "1000000",
        "RATE_PER_S": "1000000",
        "TRANSPORT_PACKETS_PER_S": "1000000",
        "TRANSPORT_BYTES_PER_S": "1000000000",
        "MAX_SESSIONS_PER_IP": "0",
        "MAX_CONNECTIONS_PER_IP": "0",
        # One generator plays every user from one address.
        "CLIENT_MESSAGES_PER_S": "0",
        "CLIENT_MESSAGE_BYTES_PER_S": "0",
        "CLIENT_ROOMS_PER_HOUR": "0",
    }
    if redis_url:
        env["REDIS_URL"] = redis_url
    return Instance(port, workdir, {**env, **settings})


def equal_peer(port: int, workdir: Path, redis_url: str | None, **settings: str):
    """The peer doing our Redis work per login and per message (PEER_WORK=equal
    in bench/peer/server.js): it runs the workloads that go through Redis."""
    from chat.messages.stream import _STORE
    from chat.presence.rooms import _ADMIT

    return Peer(
        port,
        workdir,
        redis_url,
        PEER_WORK="equal",
        PEER_ADMIT_SCRIPT=_ADMIT,
        PEER_STORE_SCRIPT=_STORE,
        **settings,
    )


SERVERS = {"ours": ours, "peer": Peer, "equal": equal_peer}
# Held connections and one instance need no Redis: there the peers are alike.
WITHOUT_REDIS = ("ours", "peer")
LABELS = {"ours": "ours", "peer": "peer (Node)", "equal": "peer doing our work"}


def pids_of(process: Process) -> list[int]:
    pid = process.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [pid, *map(int, children.read_text().split())]


def rss_kb(process: Process) -> int:
    total = 0
    for pid in pids_of(process):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def cpu_seconds(process: Process) -> float:
    ticks = 0
    for pid in pids_of(process):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


# -- progress -------------------------------------------------------------------
class Progress:
    def __init__(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.monotonic()

    def step(self, label: str) -> None:
        self.done += 1
        filled = int(30 * self.done / self.total)
        elapsed = time.monotonic() - self.started
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (30 - filled)}] "
            f"{self.done}/{self.total} {elapsed:5.0f}s {label:<40}"
        )
        sys.stderr.flush()


# -- workloads ------------------------------------------------------------------
def loadgen(spec: dict, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        ["node", str(ROOT / "bench/loadgen.js"), json.dumps(spec)],
        cwd=PEER,
        text=True,
        stdout=subprocess.PIPE,
        **popen,
    )


def hold(kind: str, workdir: Path, progress: Progress) -> list[dict]:
    """Connections held: RSS and idle CPU of one instance at each step."""
    # gunicorn's cap on connections (10,000 by default) above the last step.
    settings = {"WORKER_CONNECTIONS": str(HOLD_STEPS[-1] + 500)}
    server = SERVERS[kind](free_port(), workdir, None, **settings).start()
    rows = []
    try:
        base = rss_kb(server)
        gen = loadgen({"mode": "hold", "url": server.url}, stdin=subprocess.PIPE)
        for step in HOLD_STEPS:
            gen.stdin.write(f"target {step}\n")
            gen.stdin.flush()
            answer = json.loads(gen.stdout.readline())
            cpu0, t0 = cpu_seconds(server), time.monotonic()
            time.sleep(IDLE_SECONDS)  # an idle window: pings only
            idle_cpu = (cpu_seconds(server) - cpu0) / (time.monotonic() - t0)
            rss = rss_kb(server)
            rows.append(
                {
                    "connections": answer["ready"],
                    "errors": answer["errors"],
                    "rss_kb": rss,
                    "kb_per_conn": (rss - base) / max(1, step),
                    "idle_cpu": idle_cpu,
                }
            )
            progress.step(f"hold {kind} {step}")
            if answer["errors"]:
                break
        gen.stdin.write("quit\n")
        gen.stdin.flush()
        gen.wait(60)
    finally:
        server.stop()
    return rows


def measured_run(spec: dict, servers: list[Process], timeout: float = 300) -> dict:
    """Run the generator; the servers' CPU counts from its first send to the end.

    The generator says when it starts sending: the connect phase (logins,
    history) is left out of a delivery figure.
    """
    gen = loadgen(spec)
    cpu0 = t0 = None
    result = None
    with gen.stdout:
        for line in gen.stdout:
            answer = json.loads(line)
            if answer.get("phase") == "sending":
                cpu0, t0 = sum(cpu_seconds(s) for s in servers), time.monotonic()
            else:
                result = answer
    gen.wait(timeout)
    result["server_cpu"] = (sum(cpu_seconds(s) for s in servers) - cpu0) / (
        time.monotonic() - t0
    )
    return result


def fanout_run(spec: dict, servers: list[Process]) -> dict:
    """One fan-out step, with the servers' CPU per delivery."""
    result = measured_run(spec, servers)
    result["cpu_us_per_delivery"] = (
        1e6 * result["server_cpu"] / result["deliveriesPerS"]
        if result["deliveriesPerS"]
        else None
    )
    return result


def fanout_steps(
    servers: list[Process], progress: Progress, kind: str, rates=FANOUT_RATES
) -> list[dict]:
    """Raise the rate into one room of FANOUT_USERS spread over ``servers``."""
    per = FANOUT_USERS // len(servers)
    senders = SENDERS // len(servers)
    # Warm-up (JIT, caches, connection pools), not recorded.
    warm_up = {
        "mode": "fanout",
        "rate": 20,
        "duration": 1,
        "senders": [{"url": servers[0].url, "count": 2}],
        "receivers": [{"url": servers[-1].url, "count": 2}],
    }
    fanout_run(warm_up, servers)
    steps = []
    for rate in rates:
        spec = {
            "mode": "fanout",
            "rate": rate,
            "duration": FANOUT_SECONDS,
            "senders": [{"url": s.url, "count": senders} for s in servers],
            "receivers": [{"url": s.url, "count": per - senders} for s in servers],
        }
        result = fanout_run(spec, servers)
        steps.append({"rate": rate, **result})
        progress.step(f"fan-out {kind} x{len(servers)} {rate}/s")
        if result["complete"] < 0.95 or (result["p99"] or 0) > 2000:
            break
    return steps


@contextlib.contextmanager
def pair(kind: str, workdir: Path, redis_url: str, **settings: str):
    """Two instances of ``kind`` through ``redis_url``; both are stopped
    afterwards, also when the second one does not start.

    The benchmark's private Redis is emptied first: what an earlier
    workload left there (the users a stopped pair handed over, which the
    next instances on that Redis reap and announce as left) is not this
    one's to pay for."""
    if not is_cluster(redis_url):
        redis.Redis.from_url(redis_url).flushall()
    with contextlib.ExitStack() as stack:
        servers = []
        for _ in range(2):
            server = SERVERS[kind](free_port(), workdir, redis_url, **settings)
            stack.callback(server.stop)
            servers.append(server.start())
        yield servers


def fanout(kind: str, workdir: Path, redis_url: str, progress: Progress) -> dict:
    """The rate steps on one instance, then on two through Redis."""
    results = {"one": []}
    if kind in WITHOUT_REDIS:
        one = SERVERS[kind](free_port(), workdir, None).start()
        try:
            results["one"] = fanout_steps([one], progress, kind)
        finally:
            one.stop()
    with pair(kind, workdir, redis_url) as (a, b):
        results["steps"] = fanout_steps([a, b], progress, kind)
        spec = {
            "mode": "fanout",
            "rate": CROSS_RATE,
            "duration": CROSS_SECONDS,
            "senders": [{"url": a.url, "count": 1}],
            "receivers": [{"url": b.url, "count": CROSS_RECEIVERS}],
        }
        results["cross"] = fanout_run(spec, [a, b])
        progress.step(f"cross-instance {kind}")
    return results


# The unsaturated steps for ours, two instances, on one Redis and on a Redis
# Cluster (three masters, three replicas), in alternating rounds: a step
# moves by up to 40 % between runs minutes apart, so the two topologies are
# compared within the same minutes, several times over.
CLUSTER_RATES = [r for r in FANOUT_RATES if UNSATURATED[0] <= r <= UNSATURATED[1]]
CLUSTER_ROUNDS = 1 if QUICK else 3


def on_redis_cluster(workdir: Path, redis_url: str, progress: Progress) -> dict:
    """Ours, two instances on one Redis and two on a Redis Cluster, the same
    room and rates, alternating: {"one": steps, "cluster": steps}."""
    group = RedisCluster(workdir / "redis-cluster").start()
    rounds = {"one": [], "cluster": []}
    try:
        with (
            pair("ours", workdir, redis_url) as single,
            pair("ours", workdir, group.url) as sharded,
        ):
            for number in range(CLUSTER_ROUNDS):
                for topology, servers in (("one", single), ("cluster", sharded)):
                    label = f"ours, {topology} Redis, round {number + 1}"
                    for step in fanout_steps(servers, progress, label, CLUSTER_RATES):
                        rounds[topology].append({"round": number, **step})
    finally:
        group.stop()
    return rounds


STORM_SECONDS = 1 if QUICK else 60
STORM_BATCH = 50
STORM_ROOMS = 20


def storm(kind: str, workdir: Path, redis_url: str, progress: Progress) -> dict:
    """The churn of a reconnect storm: batches of users connect, log in to one
    of the rooms, send one message and leave, on two instances through Redis.

    Ours runs with its default logging (INFO: a line per connect, login and
    disconnect), as deployed; the peer logs nothing.
    """
    settings = (
        {"LOG_LEVEL": os.environ.get("STORM_LOG_LEVEL", "INFO")}
        if kind == "ours"
        else {}
    )
    with pair(kind, workdir, redis_url, **settings) as (a, b):
        spec = {
            "mode": "churn",
            "urls": [a.url, b.url],
            "rooms": STORM_ROOMS,
            "batch": STORM_BATCH,
            "duration": int(os.environ.get("STORM_SECONDS") or STORM_SECONDS),
        }
        result = measured_run(spec, [a, b], STORM_SECONDS + 120)
        progress.step(f"storm {kind}")
    return result


# Logged-in users each instance holds while ``storm_held``'s churn runs.
HELD_USERS = 100 if QUICK else 10000
HELD_STORM_SECONDS = 1 if QUICK else 20


def storm_held(kind: str, workdir: Path, redis_url: str, progress: Progress) -> dict:
    """The storm's churn on two instances that each hold HELD_USERS users.

    A deployed instance is not empty while users come and go, and what a
    login or a leave costs may grow with the users already there (a leave
    in python-socketio's manager tested every room of the instance). The
    held users sit in rooms of their own, so the churn's broadcasts are the
    same as in ``storm``. Their own CPU (pings, presence upkeep) is measured
    in a quiet window first and taken out of the figure.
    """
    settings = {"LOG_LEVEL": "INFO"} if kind == "ours" else {}
    holders = []
    with pair(kind, workdir, redis_url, **settings) as servers:
        try:
            held = []
            for server in servers:
                gen = loadgen(
                    {"mode": "hold", "url": server.url}, stdin=subprocess.PIPE
                )
                holders.append(gen)
                gen.stdin.write(f"target {HELD_USERS}\n")
                gen.stdin.flush()
                held.append(json.loads(gen.stdout.readline()))
            cpu0, t0 = sum(cpu_seconds(s) for s in servers), time.monotonic()
            time.sleep(IDLE_SECONDS)
            idle = (sum(cpu_seconds(s) for s in servers) - cpu0) / (
                time.monotonic() - t0
            )
            spec = {
                "mode": "churn",
                "urls": [s.url for s in servers],
                "rooms": STORM_ROOMS,
                "batch": STORM_BATCH,
                "duration": HELD_STORM_SECONDS,
            }
            result = measured_run(spec, servers, HELD_STORM_SECONDS + 120)
        finally:
            for gen in holders:
                with contextlib.suppress(OSError):
                    gen.stdin.write("quit\n")
                    gen.stdin.flush()
                try:
                    gen.wait(60)
                except subprocess.TimeoutExpired:
                    gen.kill()
    result["held"] = held
    result["idle_cpu"] = idle
    result["server_cpu"] -= idle
    progress.step(f"storm with users held {kind}")
    return result


RECOVER_USERS = 200 if QUICK else 5000
RECOVER_ROOM_SIZE = 50
RECOVER_RUNS = 1 if QUICK else 3
RECOVER_RATE = 100  # messages/s to the rooms: enough samples for a p99 over seconds


def recover(kind: str, workdir: Path, redis_url: str, progress: Progress) -> dict:
    """A lost instance: users on two instances behind nginx, one killed -9.

    The generator plays the page (login in ``auth`` with its token and last
    message id, socket.io's jittered backoff); the figures are the seconds
    until every user of the dead instance is logged in again, and the
    message latency of the others before and during that storm. A p99 over
    a few seconds moves a lot from run to run (136 and 345 ms with the same
    code): the figures are the medians of RECOVER_RUNS runs, all kept.
    """
    runs = [recover_once(kind, workdir, redis_url) for _ in range(RECOVER_RUNS)]
    progress.step(f"recover {kind}")
    figures = {"runs": runs}
    for key in ("recoverS", "p50Before", "p99Before", "p50During", "p99During"):
        values = [run.get(key) for run in runs]
        # A run in which some users never came back shows as no figure.
        figures[key] = None if None in values else median(values)
    return figures


def recover_once(kind: str, workdir: Path, redis_url: str) -> dict:
    # One generator plays every user: no per-address caps at the edge.
    (workdir / f"recover-{kind}").mkdir(exist_ok=True)
    with pair(kind, workdir, redis_url) as (a, b):
        lb = Nginx(
            workdir / f"recover-{kind}",
            [a.port, b.port],
            edge_limits=False,
            worker_connections=4 * RECOVER_USERS + 1024,
        )
        try:
            lb.start()
            return kill_one_under_load(a, lb.url)
        finally:
            lb.stop()


def kill_one_under_load(victim: Process, url: str) -> dict:
    """The generator's recover mode through ``url``; ``victim`` is killed -9
    when it asks."""
    spec = {
        "mode": "recover",
        "url": url,
        "users": RECOVER_USERS,
        "roomSize": RECOVER_ROOM_SIZE,
        "rate": RECOVER_RATE,
        "baseline": 3,
        "timeout": 60,
    }
    gen = loadgen(spec, stdin=subprocess.PIPE)
    result = {"error": "the generator ended early"}
    try:
        for line in gen.stdout:
            answer = json.loads(line)
            if answer.get("phase") == "kill":
                killed_at = time.time() * 1000
                victim.kill()
                gen.stdin.write(f"killed {killed_at:.0f}\n")
                gen.stdin.flush()
            else:
                result = answer
        gen.wait(120)
    finally:
        if gen.poll() is None:
            gen.kill()
    return result


# -- report ---------------------------------------------------------------------
def median(values: list[float]) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def unsaturated_cpu(steps: list[dict]) -> float | None:
    """Median CPU µs per delivery over the unsaturated steps (UNSATURATED)."""
    low, high = UNSATURATED
    return median(
        [
            s["cpu_us_per_delivery"]
            for s in steps
            if low <= s["rate"] <= high and s["complete"] >= 0.95
        ]
    )


def at_rate(steps: list[dict], rate: int, key: str) -> float | None:
    return next((s[key] for s in steps if s["rate"] == rate), None)


def memory_slope(held: list[dict]) -> float | None:
    """kB per connection between the two largest steps held without errors."""
    if len(held) < 2:
        return None
    small, large = held[-2], held[-1]
    added = large["connections"] - small["connections"]
    return (large["rss_kb"] - small["rss_kb"]) / added if added else None


def per_cycle_ms(storm: dict) -> float | None:
    """Server CPU ms per churn cycle (connect, log in, one message, leave)."""
    if not storm.get("loginsPerS"):
        return None
    return 1000 * storm["server_cpu"] / storm["loginsPerS"]


def summarize(results: dict) -> dict:
    """The figures the README quotes; ratios are taken by ``markdown``."""
    figures = {}
    low, high = UNSATURATED
    for kind in SERVERS:
        mine = results[kind]
        held = [r for r in mine.get("hold", []) if not r["errors"]]
        fan = mine["fanout"]
        one, two = fan["one"], fan["steps"]
        ok_steps = [s for s in one + two if s["complete"] >= 0.95] or one + two
        figures[kind] = {
            f"CPU µs per delivery, 1 instance (median {low}-{high} msg/s)": (
                unsaturated_cpu(one)
            ),
            f"CPU µs per delivery, 2 instances (median {low}-{high} msg/s)": (
                unsaturated_cpu(two)
            ),
            f"p99 ms at {P99_RATE} msg/s, 1 instance": at_rate(one, P99_RATE, "p99"),
            f"p99 ms at {P99_RATE} msg/s, 2 instances": at_rate(two, P99_RATE, "p99"),
            "kB per connection (slope, two largest steps)": memory_slope(held),
            "largest step held": held[-1]["connections"] if held else None,
            "deliveries/s at saturation (either topology)": max(
                (s["deliveriesPerS"] for s in ok_steps), default=None
            ),
            f"p50 ms at {MODERATE_RATE} msg/s, 2 instances": at_rate(
                two, MODERATE_RATE, "p50"
            ),
            "cross-instance p50 ms": fan["cross"]["p50"],
            "cross-instance p99 ms": fan["cross"]["p99"],
            "logins/s in a churn, 2 instances": mine["storm"]["loginsPerS"],
            "server CPU ms per churn cycle (connect, log in, a message, leave)": (
                per_cycle_ms(mine["storm"])
            ),
            f"the same with {HELD_USERS:,} users held on each instance": (
                per_cycle_ms(mine["storm_held"])
            ),
            "logins/s in that churn": mine["storm_held"]["loginsPerS"],
            f"s to log in again all users of a killed instance ({RECOVER_USERS} "
            f"users on 2, nginx; median of {RECOVER_RUNS})": mine["recover"][
                "recoverS"
            ],
            "unaffected users' p99 ms during that storm": mine["recover"]["p99During"],
            "unaffected users' p99 ms before it": mine["recover"]["p99Before"],
        }
    ab = results["ours"].get("redis_cluster")
    if ab:
        figures["ours"].update(
            {
                f"A/B: CPU µs per delivery, 2 instances, one Redis (median {low}-"
                f"{high} msg/s, {CLUSTER_ROUNDS} rounds)": unsaturated_cpu(ab["one"]),
                "A/B: the same on a Redis Cluster (alternating with it)": (
                    unsaturated_cpu(ab["cluster"])
                ),
            }
        )
    return figures


def step_table(results: dict) -> list[str]:
    """Every fan-out step, all servers, so no figure hides its neighbours."""
    lines = [
        "",
        "| instances | msg/s | ours µs/delivery | peer µs/delivery | ratio "
        "| peer doing our work µs/delivery | ratio | ours p99 ms | peer p99 ms "
        "| peer doing our work p99 ms |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for topology, count in (("one", 1), ("steps", 2)):
        by_kind = {
            kind: {s["rate"]: s for s in results[kind]["fanout"][topology]}
            for kind in SERVERS
        }
        for rate in FANOUT_RATES:
            a, b, c = (by_kind[kind].get(rate) for kind in SERVERS)
            if not a or not b:
                continue
            ca, cb = a["cpu_us_per_delivery"], b["cpu_us_per_delivery"]
            cc = c["cpu_us_per_delivery"] if c else None
            lines.append(
                f"| {count} | {rate} | {fmt(ca)} | {fmt(cb)} | {ratio(ca, cb)} "
                f"| {fmt(cc)} | {ratio(ca, cc)} | {fmt(a['p99'])} | {fmt(b['p99'])} "
                f"| {fmt(c['p99'] if c else None)} |"
            )
    return lines


def ratio(mine, theirs) -> str:
    return f"{mine / theirs:.2f}" if mine and theirs else "–"


def markdown(figures: dict, meta: dict, results: dict) -> str:
    lines = [
        f"Run {meta['date']} on {meta['machine']}{' (BENCH_QUICK)' if QUICK else ''}.",
        "",
        "| figure | ours | peer (Node) | ours / peer | peer doing our work "
        "| ours / it |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, mine in figures["ours"].items():
        theirs = figures["peer"].get(name)
        equal = figures["equal"].get(name)
        lines.append(
            f"| {name} | {fmt(mine)} | {fmt(theirs)} | {ratio(mine, theirs)} "
            f"| {fmt(equal)} | {ratio(mine, equal)} |"
        )
    lines += step_table(results)
    lines += cluster_table(results)
    return "\n".join(lines) + "\n"


def cluster_table(results: dict) -> list[str]:
    """Ours on one Redis and on a Redis Cluster, two instances, alternating
    rounds of the same run: the median of the rounds at each rate."""
    ab = results["ours"].get("redis_cluster")
    if not ab:
        return []
    lines = [
        "",
        "| ours, 2 instances, msg/s | one Redis µs/delivery (each round) "
        "| Redis Cluster µs/delivery (each round) | cluster / one (medians) |",
        "| ---: | --- | --- | ---: |",
    ]
    for rate in CLUSTER_RATES:
        one = [s["cpu_us_per_delivery"] for s in ab["one"] if s["rate"] == rate]
        mine = [s["cpu_us_per_delivery"] for s in ab["cluster"] if s["rate"] == rate]
        lines.append(
            f"| {rate} | {' / '.join(map(fmt, one))} | {' / '.join(map(fmt, mine))} "
            f"| {ratio(median(mine), median(one))} |"
        )
    return lines


def fmt(value) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, mem) = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind, style in (("ours", "o-"), ("peer", "s--")):  # WITHOUT_REDIS
        steps = results[kind]["fanout"]["one"]
        lat.plot(
            [s["rate"] for s in steps],
            [s["p50"] for s in steps],
            style,
            label=f"{kind} p50",
        )
        lat.plot(
            [s["rate"] for s in steps],
            [s["p99"] for s in steps],
            style,
            alpha=0.5,
            label=f"{kind} p99",
        )
        held = results[kind]["hold"]
        mem.plot(
            [h["connections"] for h in held],
            [h["rss_kb"] / 1024 for h in held],
            style,
            label=kind,
        )
    lat.set(
        xlabel=f"messages/s into a room of {FANOUT_USERS} (1 instance)",
        ylabel="latency ms",
        yscale="log",
        title="Fan-out latency",
    )
    mem.set(
        xlabel="logged-in websocket connections",
        ylabel="server RSS MiB",
        title="Memory of one instance",
    )
    for ax in (lat, mem):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    workdir = RESULTS / f".work-{stamp}"
    workdir.mkdir(exist_ok=True)
    total = (
        2 * len(HOLD_STEPS)
        + 5 * len(FANOUT_RATES)
        + 3 * 4
        + 2 * CLUSTER_ROUNDS * len(CLUSTER_RATES)
    )
    progress = Progress(total)
    redis_server = RedisServer(workdir).start()
    results = {kind: {} for kind in SERVERS}
    try:
        for kind in WITHOUT_REDIS:
            results[kind]["hold"] = hold(kind, workdir, progress)
        url = redis_server.url
        for kind in SERVERS:
            results[kind]["fanout"] = fanout(kind, workdir, url, progress)
        results["ours"]["redis_cluster"] = on_redis_cluster(workdir, url, progress)
        for kind in SERVERS:
            results[kind]["storm"] = storm(kind, workdir, url, progress)
        for kind in SERVERS:
            results[kind]["storm_held"] = storm_held(kind, workdir, url, progress)
        for kind in SERVERS:
            results[kind]["recover"] = recover(kind, workdir, url, progress)
    finally:
        redis_server.stop()
    sys.stderr.write("\n")
    meta = {
        "date": stamp,
        "quick": QUICK,
        "machine": f"{os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
    }
    figures = summarize(results)
    (RESULTS / f"{stamp}.json").write_text(
        json.dumps({"meta": meta, "figures": figures, "results": results}, indent=1)
    )
    table = markdown(figures, meta, results)
    (RESULTS / f"{stamp}.md").write_text(table)
    plot(results, RESULTS / f"{stamp}.png")
    print(table)
    print(f"written: {RESULTS / stamp}.json, .md, .png")


if __name__ == "__main__":
    main()
