"""What a Redis Cluster shard costs per connected user and per message.

    python -m bench.shard_cost [--users 400] [--rooms 20] [--messages 3000]

A private Redis Cluster (three masters, three replicas), two chat instances
on it, ``--users`` socket.io users in ``--rooms`` rooms spread over both
instances; then ``--messages`` messages, one at a time per sender, each
acknowledged. From each master's ``INFO`` before and after each phase:
Redis CPU (user + sys), commands and memory, per login and per message,
summed over the masters. The capacity table in the README is computed from
these figures and those of ``make bench``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import socketio

from deploy.procs import ROOT, Instance, RedisCluster, free_port

UNLIMITED = {
    "RATE_BURST": "100000",
    "RATE_PER_S": "100000",
    "CLIENT_MESSAGES_PER_S": "0",
    "CLIENT_MESSAGE_BYTES_PER_S": "0",
    "CLIENT_ROOMS_PER_HOUR": "0",
    "MAX_CONNECTIONS_PER_IP": "0",
    "MAX_SESSIONS_PER_IP": "0",
}


def snapshot(group: RedisCluster) -> dict:
    """Per master: CPU seconds, commands processed, memory used."""
    found = {}
    for node in group.live_masters():
        client = group.client(node)
        info = {**client.info("cpu"), **client.info("stats"), **client.info("memory")}
        found[node.port] = {
            "cpu": info["used_cpu_sys"] + info["used_cpu_user"],
            "commands": info["total_commands_processed"],
            "memory": info["used_memory"],
        }
    return found


def delta(before: dict, after: dict, key: str) -> float:
    return sum(after[p][key] - before[p][key] for p in after)


def connect(url: str, name: str, room: str) -> socketio.Client:
    client = socketio.Client()
    done = threading.Event()
    client.on("login", lambda *_: done.set())
    client.connect(url, transports=["websocket"], wait_timeout=10)
    client.emit("add user", (name, {"room": room}))
    if not done.wait(10):
        raise RuntimeError(f"{name} did not log in")
    return client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--messages", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        group = RedisCluster(workdir / "redis").start()
        instances = []
        clients: list[socketio.Client] = []
        try:
            for _ in range(2):
                env = {"REDIS_URL": group.url, **UNLIMITED}
                instances.append(Instance(free_port(), workdir, env).start())
            before = snapshot(group)
            for n in range(args.users):
                room = f"room-{n % args.rooms}"
                url = instances[n % 2].url
                clients.append(connect(url, f"user{n}", room))
            logged_in = snapshot(group)
            senders = clients[: args.rooms]
            started = time.monotonic()
            for n in range(args.messages):
                sender = senders[n % len(senders)]
                ack = sender.call("new message", f"message {n} " + "x" * 60, timeout=10)
                if not ack.get("id"):
                    raise RuntimeError(f"not stored: {ack}")
            took = time.monotonic() - started
            sent = snapshot(group)
        finally:
            for client in clients:
                client.disconnect()
            for instance in instances:
                instance.stop()
            group.stop()
    users, messages = args.users, args.messages
    figures = {
        "users": users,
        "rooms": args.rooms,
        "messages": messages,
        "masters": len(sent),
        "Redis CPU µs per login (all masters)": 1e6
        * delta(before, logged_in, "cpu")
        / users,
        "Redis commands per login": delta(before, logged_in, "commands") / users,
        "Redis bytes per connected user": delta(before, logged_in, "memory") / users,
        "Redis CPU µs per message (all masters)": 1e6
        * delta(logged_in, sent, "cpu")
        / messages,
        "Redis commands per message": delta(logged_in, sent, "commands") / messages,
        "messages/s (one at a time)": messages / took,
        "share of messages per master": {
            port: round(
                (sent[port]["commands"] - logged_in[port]["commands"])
                / max(1, delta(logged_in, sent, "commands")),
                2,
            )
            for port in sent
        },
    }
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%d-%H%M")
    (results / f"shard-cost-{stamp}.json").write_text(json.dumps(figures, indent=1))
    for name, value in figures.items():
        shown = f"{value:.1f}" if isinstance(value, float) else value
        print(f"| {name} | {shown} |")


if __name__ == "__main__":
    main()
