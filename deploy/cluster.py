"""``make cluster``: N instances behind nginx, joined by a private Redis.

    python -m deploy.cluster --instances 3 [--sentinel]

The same supervisord configuration as a deployed host (deploy/host.py),
run in the foreground from ``.cluster/``: a password-protected
redis-server on its own port (never the shared 6379), gunicorn instances on
5051.. and nginx on 5050. Kill an instance and watch its users fail over
and supervisord start it again; Ctrl-C stops everything.

``--sentinel``: instead of the one redis-server, a master, a replica and
three sentinels (``down-after-milliseconds`` 1000), with passwords on the
nodes and on the sentinels, and a ``redis+sentinel://`` REDIS_URL. Kill the
master to watch a failover: the instances follow the promoted replica;
``supervisorctl start redis-master`` brings the old one back, and the
sentinels make it a replica.

``--redis-cluster``: a Redis Cluster of three masters and three replicas
(``cluster-node-timeout`` 1000), joined with ``redis-cli --cluster create``,
and a ``redis+cluster://`` REDIS_URL. Kill a master to watch its replica
take over; ``supervisorctl start redis-node-<port>`` brings the old one back
as the new master's replica. Nodes are not restarted by themselves, for the
same reason as under Sentinel.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import signal
import subprocess
import threading
from pathlib import Path

from deploy.host import Host, point_current, ready
from deploy.procs import (
    BIN,
    ROOT,
    RedisCluster,
    RedisSentinels,
    RedisServer,
    bindable,
    free_port,
    wait_until,
)
from deploy.supervisord import Layout, redis_program


def release_name() -> str:
    """The checked-out commit, marked when the work tree has changes."""
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "local"


def write_env(workdir: Path, instances: int, port: int, redis_url: str) -> None:
    (workdir / "env").write_text(
        "# Written by make cluster at every start.\n"
        f"INSTANCES={instances}\nBASE_PORT={port + 1}\nLB_PORT={port}\n"
        f"HOST=127.0.0.1\nREDIS_URL={redis_url}\nSECRET_KEY=local-cluster\n"
        f"RELEASE={release_name()}\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--port", type=int, default=5050, help="nginx port")
    parser.add_argument("--redis-port", type=int, default=0, help="0: a free port")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cluster")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument(
        "--sentinel", action="store_true", help="Redis with a replica and sentinels"
    )
    modes.add_argument(
        "--redis-cluster",
        action="store_true",
        help="a Redis Cluster: three masters, three replicas",
    )
    args = parser.parse_args(argv)

    ports = [args.port, *range(args.port + 1, args.port + 1 + args.instances)]
    taken = [port for port in ports if not bindable(port)]
    if taken:
        print(
            f"cannot start: port {', '.join(map(str, taken))} is in use (another "
            f"cluster?); choose others: make cluster CLUSTER_PORT={args.port + 1000}"
        )
        return 1
    workdir = args.workdir.resolve()
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    layout = Layout(workdir)
    if args.sentinel:
        group = RedisSentinels(
            workdir / "redis",
            password=secrets.token_urlsafe(16),
            sentinel_password=secrets.token_urlsafe(16),
        )
        redis_url = group.url()
        programs = [
            redis_program(layout, group.master.argv(), "redis-master", False),
            redis_program(layout, group.replica.argv(), "redis-replica", False),
        ] + [
            redis_program(layout, s.argv(), f"sentinel-{s.port}")
            for s in group.sentinels
        ]
        redis_where = "redis master {}, replica {}, sentinels {}".format(
            group.master.port,
            group.replica.port,
            ",".join(str(s.port) for s in group.sentinels),
        )
    elif args.redis_cluster:
        # A new cluster at every start: nodes.conf of an earlier run names
        # other ports and another password.
        shutil.rmtree(workdir / "redis-cluster", ignore_errors=True)
        group = RedisCluster(
            workdir / "redis-cluster", password=secrets.token_urlsafe(16)
        )
        redis_url = group.url
        programs = [
            redis_program(layout, node.argv(), f"redis-node-{node.port}", False)
            for node in group.nodes
        ]
        redis_where = "redis cluster nodes {}".format(
            ",".join(str(node.port) for node in group.nodes)
        )
    else:
        redis_server = RedisServer(
            workdir, args.redis_port or free_port(), password=secrets.token_urlsafe(16)
        )
        redis_url = redis_server.url
        programs = [redis_program(layout, redis_server.argv())]
        redis_where = f"redis on {redis_server.port}"
    write_env(workdir, args.instances, args.port, redis_url)
    point_current(workdir, ROOT)
    host = Host(workdir, tools=BIN, extra=tuple(programs))
    host.write_conf()
    supervisord = subprocess.Popen(
        [str(BIN / "supervisord"), "-n", "-c", str(host.layout.conf)],
        cwd=workdir,
        start_new_session=True,
    )
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    try:
        if args.redis_cluster:
            # The instances start degraded and join once the slots are served.
            wait_until(
                lambda: all(group.role_of(n) for n in group.nodes),
                30,
                "the cluster's nodes to answer",
            )
            group.form()
        for port in host.ports:
            if not ready(host.url(port), 30):
                print(f"the instance on {port} did not start; see {workdir}/logs")
                return 1
        wait_until(
            lambda: ready(f"http://127.0.0.1:{args.port}", 0.5), 10, "nginx to answer"
        )
        print(
            f"chat cluster of {args.instances} on http://127.0.0.1:{args.port}  "
            f"(instances {host.ports[0]}..{host.ports[-1]}, {redis_where}, "
            f"logs in {workdir}/logs)\n"
            f"REDIS_URL={redis_url}\n"
            f"supervisorctl: {BIN}/supervisorctl -c {host.layout.conf} status\n"
            "Kill an instance and supervisord starts it again. Ctrl-C stops it.",
            flush=True,
        )
        if args.redis_cluster:
            print(
                "Kill a Redis master: "
                f"{BIN}/supervisorctl -c {host.layout.conf} signal KILL "
                "redis-node-<port> (ports: redis-cli -p <port> -a <password> "
                "cluster nodes); its replica takes over within seconds.",
                flush=True,
            )
        while not stopped.wait(1.0):
            if supervisord.poll() is not None:
                print(f"supervisord exited; see {workdir}/logs/supervisord.log")
                return 1
        return 0
    finally:
        print("stopping...", flush=True)
        if supervisord.poll() is None:
            supervisord.terminate()
            supervisord.wait(60)


if __name__ == "__main__":
    raise SystemExit(main())
