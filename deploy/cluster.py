"""``make cluster``: N instances behind nginx, joined by a private Redis.

    python -m deploy.cluster --instances 3

Starts a password-protected redis-server on its own port (never the shared
6379), gunicorn instances on 5051.., and nginx with sticky sessions on 5050.
Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import threading
from pathlib import Path

from deploy.nginx import Nginx
from deploy.procs import ROOT, Instance, RedisServer, free_port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--port", type=int, default=5050, help="nginx port")
    parser.add_argument("--redis-port", type=int, default=0, help="0: a free port")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cluster")
    args = parser.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    redis_server = RedisServer(
        args.workdir, args.redis_port or free_port(), password=secrets.token_urlsafe(16)
    )
    started = [redis_server.start()]
    try:
        # Behind nginx every peer is 127.0.0.1; the client is in X-Forwarded-For.
        env = {"REDIS_URL": redis_server.url, "TRUSTED_PROXIES": "127.0.0.1"}
        for i in range(args.instances):
            started.append(Instance(args.port + 1 + i, args.workdir, env).start())
        balancer = Nginx(args.workdir, [i.port for i in started[1:]], args.port)
        started.append(balancer.start())
        print(
            f"chat cluster of {args.instances} on {balancer.url}  "
            f"(instances {started[1].port}..{started[-2].port}, "
            f"redis on {redis_server.port}, logs in {args.workdir})"
        )
        print("Ctrl-C stops it.", flush=True)
        stopped = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopped.set())
        while not stopped.wait(1.0):
            dead = [p for p in started if not p.running()]
            if dead:
                print(f"a process stopped; see {dead[0].log_path}")
                return 1
        return 0
    finally:
        print("stopping...", flush=True)
        for process in reversed(started):
            process.stop()


if __name__ == "__main__":
    raise SystemExit(main())
