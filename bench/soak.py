"""make soak: a month unattended, compressed: does anything grow with time?

Two instances on one Redis with ``maxmemory`` (as shipped), and for
SOAK_SECONDS (600 by default):
- bystanders: 40 users in 20 rooms, each saying something every 2 s;
- churn: logins into a long tail of one-off rooms (a login, a message,
  gone), from many addresses, several a second;
- a flood: one address, 8 sessions, sending into the lobby as fast as its
  budget lets it.
At the start (after a warm-up), the middle and the end it prints each
worker's RSS, Redis ``used_memory`` and key count, and the bystanders'
delivery. Exit code 1 unless memory and keys are flat after the warm-up
(within the bounds below) and every message a bystander had acknowledged
reached every other bystander of its room.

    python -m bench.soak --seconds 600
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import random
import tempfile
import threading
import time
from pathlib import Path

import redis
import socketio

from deploy.procs import Instance, RedisServer, free_port, wait_until

BYSTANDERS, ROOMS = 40, 20
SAY_EVERY_S = 2.0
FLOOD_SESSIONS = 8
# Flat: what the end may exceed the warm-up's figures by.
RSS_GROWTH_MB = 15.0
REDIS_GROWTH_MB = 16.0
KEY_GROWTH = 0.25


class Person:
    """A socket.io client that records what it acknowledged and received."""

    def __init__(self, url: str, name: str, room: str, address: str) -> None:
        self.name, self.room = name, room
        self.acked: list[str] = []
        self.received: set[str] = set()
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("new message", self._heard)
        self.sio.connect(
            url,
            transports=["websocket"],
            auth={"username": name, "room": room},
            headers={"X-Forwarded-For": address},
            wait_timeout=10,
        )

    def _heard(self, message) -> None:
        if message.get("id"):
            self.received.add(message["id"])

    def say(self, text: str) -> dict:
        ack = self.sio.call("new message", text, timeout=10)
        if "id" in ack:
            self.acked.append(ack["id"])
        return ack

    def close(self) -> None:
        self.sio.disconnect()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Soak:
    def __init__(self, seconds: float, workdir: Path) -> None:
        self.seconds = seconds
        self.workdir = workdir
        self.stop = threading.Event()
        self.counts = {"churn logins": 0, "churn refused": 0, "flood acked": 0}
        self.counts |= {"flood refused": 0, "bystander acked": 0, "errors": 0}

    def run(self) -> int:
        redis_server = RedisServer(self.workdir, free_port(), maxmemory="64mb")
        redis_server.start()
        env = {
            "REDIS_URL": redis_server.url,
            "TRUSTED_PROXIES": "127.0.0.1",
            "MAX_ROOMS": "300",
            "HISTORY_MAX_BYTES": str(24 * 1024 * 1024),
            "ROOM_LINGER_S": "2",
            "LOG_LEVEL": "WARNING",
            "TRANSPORT_PACKETS_PER_S": "1000",
        }
        instances = [Instance(free_port(), self.workdir, env) for _ in range(2)]
        try:
            for instance in instances:
                instance.start()
            return self._drive(instances, redis_server)
        finally:
            self.stop.set()
            for instance in instances:
                instance.stop()
            redis_server.stop()

    def _drive(self, instances, redis_server) -> int:
        urls = [i.url for i in instances]
        people = [
            Person(urls[n % 2], f"b{n}", f"room{n % ROOMS}", f"198.51.100.{n + 1}")
            for n in range(BYSTANDERS)
        ]
        threads = [
            threading.Thread(target=self._chatter, args=(people,)),
            threading.Thread(target=self._churn, args=(urls,)),
            *(
                threading.Thread(target=self._flood, args=(urls[i % 2], i))
                for i in range(FLOOD_SESSIONS)
            ),
        ]
        for thread in threads:
            thread.start()
        store = redis.Redis.from_url(redis_server.url)
        warm_up = min(60.0, self.seconds / 5)
        rows = []
        started = time.monotonic()
        for label, at in (
            ("start", warm_up),
            ("middle", (warm_up + self.seconds) / 2),
            ("end", self.seconds),
        ):
            time.sleep(max(0.0, started + at - time.monotonic()))
            rows.append(
                self._sample(label, time.monotonic() - started, instances, store)
            )
            print(_row(rows[-1]), flush=True)
        self.stop.set()
        for thread in threads:
            thread.join(30)
        missing = self._missing(people)
        for person in people:
            person.close()
        return self._verdict(rows, missing)

    def _sample(self, label, elapsed, instances, store) -> dict:
        workers = [pid for i in instances for pid in i.worker_pids()]
        info = store.info("memory")
        return {
            "at": label,
            "seconds": round(elapsed),
            "rss_mb": [round(rss_mb(pid), 1) for pid in workers],
            "redis_mb": round(info["used_memory"] / 2**20, 1),
            "keys": store.dbsize(),
            **dict(self.counts),
        }

    def _chatter(self, people) -> None:
        n = itertools.count()
        while not self.stop.is_set():
            for person in people:
                if self.stop.is_set():
                    return
                try:
                    if "id" in person.say(f"hello {next(n)}"):
                        self.counts["bystander acked"] += 1
                except Exception:
                    self.counts["errors"] += 1
            time.sleep(max(0.0, SAY_EVERY_S - 0.01 * len(people)))

    def _churn(self, urls) -> None:
        rng = random.Random(7)
        for n in itertools.count():
            if self.stop.is_set():
                return
            address = f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"
            try:
                person = Person(rng.choice(urls), f"c{n}", f"once-{n}", address)
            except Exception:
                self.counts["errors"] += 1
                continue
            try:
                ack = person.say("just passing")
                key = "churn logins" if "id" in ack else "churn refused"
                self.counts[key] += 1
            except Exception:
                self.counts["errors"] += 1
            finally:
                person.close()

    def _flood(self, url, i) -> None:
        person = Person(url, f"flood{i}", "lobby", "203.0.113.66")
        while not self.stop.is_set():
            try:
                ack = person.say("\U0001f4a5" * 500)
            except Exception:
                self.counts["errors"] += 1
                return
            key = "flood acked" if "id" in ack else "flood refused"
            self.counts[key] += 1
            if "id" not in ack:
                # At the budget, not past the transport's own limits (which
                # cut the connection).
                time.sleep(0.05)
        person.close()

    def _missing(self, people) -> int:
        """Acknowledged messages of a bystander that another bystander of its
        room never received (all of them were connected throughout)."""

        def gaps():
            total = 0
            for person in people:
                for other in people:
                    if other is not person and other.room == person.room:
                        total += len(set(person.acked) - other.received)
            return total

        with contextlib.suppress(AssertionError):
            wait_until(lambda: gaps() == 0, 15, "every acknowledged message")
        return gaps()

    def _verdict(self, rows, missing) -> int:
        first, last = rows[0], rows[-1]
        problems = []
        for before, after in zip(first["rss_mb"], last["rss_mb"], strict=False):
            if after - before > RSS_GROWTH_MB:
                problems.append(f"a worker grew {before} -> {after} MB")
        if last["redis_mb"] - first["redis_mb"] > REDIS_GROWTH_MB:
            problems.append(f"Redis grew {first['redis_mb']} -> {last['redis_mb']} MB")
        if last["keys"] > first["keys"] * (1 + KEY_GROWTH) + 50:
            problems.append(f"keys grew {first['keys']} -> {last['keys']}")
        if missing:
            problems.append(f"{missing} acknowledged messages missing")
        print(f"missing: {missing}")
        for problem in problems:
            print(f"FAIL: {problem}")
        if not problems:
            print("soak: flat after warm-up, nothing missing")
        return 1 if problems else 0


def _row(row: dict) -> str:
    return " | ".join(f"{k} {v}" for k, v in row.items())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="soak-") as workdir:
        return Soak(args.seconds, Path(workdir)).run()


if __name__ == "__main__":
    raise SystemExit(main())
