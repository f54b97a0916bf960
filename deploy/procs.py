"""Local processes of a cluster: redis-server, gunicorn instances and nginx.

Used by ``make cluster`` and by the e2e tests, so both run exactly the same
commands. Every class owns its process and stops it, also when the caller
fails; every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports that nothing listens on
    (a host's instances take BASE_PORT, BASE_PORT+1, ...)."""
    while True:
        base = free_port()
        if all(bindable(p) for p in range(base, base + count)):
            return base


def cluster_node_port(taken: set[int] = frozenset()) -> int:
    """A port for a Redis Cluster node: free, at most 55535, and with the
    cluster bus port (10,000 above it) free too."""
    while True:
        port = free_port()
        if port <= 55535 and port not in taken and bindable(port + 10000):
            return port


def bindable(port: int) -> bool:
    """Whether 127.0.0.1:``port`` is free to listen on."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def route_id(port: int) -> str:
    """The ROUTE_ID of the instance on ``port``: its session ids start with it,
    and the generated nginx config routes them back to it by that."""
    return f"p{port}"


@dataclass
class Answer:
    """An HTTP answer: what the health checks need of one, from the stdlib."""

    status_code: int
    text: str

    def json(self):
        return json.loads(self.text)


def http_get(url: str, timeout: float = 2.0, verify: bool = True) -> Answer | None:
    """GET ``url`` on a fresh connection; None when nothing answers.

    ``verify=False`` accepts any TLS certificate (a test's self-signed one).
    """
    context = None
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return Answer(response.status, response.read().decode(errors="replace"))
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.read().decode(errors="replace"))
    except OSError:
        return None


def find_tool(name: str) -> str:
    """Path of a Debian tool that may live in /usr/sbin, outside a user's PATH."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        raise RuntimeError(f"{name} is not installed (make system-deps installs it)")
    return path


class Process:
    """A child process in its own session, its output in ``log_path``."""

    proc: subprocess.Popen | None = None

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path

    def _spawn(
        self, argv: list[str], env: dict | None = None, cwd: Path = ROOT
    ) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return (
            self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; the exit code."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout) if self.proc else 0

    def kill(self) -> None:
        """SIGKILL the whole process group: a gunicorn master and worker die at once."""
        if self.running():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        try:
            self.terminate(timeout=25)
        except subprocess.TimeoutExpired:
            pass
        finally:
            self.kill()


class RedisServer(Process):
    """A private redis-server on its own port, with a password, nothing on disk."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        password: str | None = "s3cret-pw",
        unix_socket: bool = False,
        persistent: bool = False,
        replica_of: int | None = None,
        tls: tuple[Path, Path, Path] | None = None,
        maxmemory: str = "512mb",
        cluster_enabled: bool = False,
        key_load_delay_us: int = 0,
    ) -> None:
        super().__init__(workdir / "redis.log")
        # Redis's own test knob: each key read from disk at start-up waits
        # this long, so a test can catch Redis while it loads (it takes
        # SUBSCRIBE and PUBLISH then, and answers reads with LOADING).
        self.key_load_delay_us = key_load_delay_us
        # A Redis Cluster node (chat.cluster.clients, redis+cluster://).
        self.cluster_enabled = cluster_enabled
        # Redis is a budget the app keeps (history in bytes per room, keys
        # with TTLs): a cap it must never reach, and never an eviction that
        # would silently drop what the app acknowledged.
        self.maxmemory = maxmemory
        self.workdir = workdir
        # (certificate, key, CA certificate): TLS only, on ``port``.
        self.tls = tls
        # The port of a master (on 127.0.0.1, same password) to replicate.
        self.replica_of = replica_of
        self.port = port or free_port()
        self.password = password
        self.socket_path = workdir / "redis.sock" if unix_socket else None
        # AOF with fsync on every write: what production needs for history
        # to survive a Redis restart.
        self.persistent = persistent

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls[2]}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        query = f"?password={self.password}" if self.password else ""
        return f"unix://{self.socket_path}{query}"

    def argv(self) -> list[str]:
        """The redis-server command line (also supervisord's, in make cluster)."""
        ports = ["--port", str(self.port)]
        if self.tls:
            cert, key, ca = self.tls
            ports = ["--port", "0", "--tls-port", str(self.port)]
            ports += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
            ports += ["--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]
        argv = [
            find_tool("redis-server"),
            *ports,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.persistent else "no",
            "--appendfsync",
            "always",
            "--dir",
            str(self.workdir),
            "--maxmemory",
            self.maxmemory,
            "--maxmemory-policy",
            "noeviction",
            # A replica's full sync starts at once: Redis waits 5 s by
            # default for more replicas to share it, and ours have one.
            "--repl-diskless-sync-delay",
            "0",
        ]
        if self.password:
            argv += ["--requirepass", self.password]
        if self.replica_of:
            argv += ["--replicaof", "127.0.0.1", str(self.replica_of)]
            if self.password:
                argv += ["--masterauth", self.password]
        if self.socket_path:
            argv += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        if self.key_load_delay_us:
            argv += ["--key-load-delay", str(self.key_load_delay_us)]
        if self.cluster_enabled:
            # A node gives up on a silent peer after a second, so a killed
            # master's replica takes over within a few seconds.
            argv += ["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"]
            # A replica may always take over, however long ago it last
            # heard its master (with a 1 s node timeout Redis's default
            # refused a replica idle for 20 s): what it has is what
            # STORE_REPLICAS acknowledged.
            argv += ["--cluster-replica-validity-factor", "0"]
            argv += ["--cluster-config-file", str(self.workdir / "nodes.conf")]
            if self.password:  # any node may become a replica
                argv += ["--masterauth", self.password]
        return argv

    def start(self, loaded: bool = True) -> RedisServer:
        """Start, and wait until it answers; with ``loaded`` False, only
        until it takes connections (it may still be loading its data)."""
        argv = self.argv()
        self._spawn(argv)
        wait_until(
            lambda: self._answers(loading_is_up=not loaded),
            10,
            f"redis-server on {self.port}",
        )
        return self

    def _answers(self, loading_is_up: bool = False) -> bool:
        if not self.running():
            raise AssertionError(f"redis-server exited:\n{self.log()}")
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No retries: redis-py's default retries LOADING for seconds.
        once = Retry(NoBackoff(), 0)
        try:
            return redis.Redis.from_url(self.url, socket_timeout=1, retry=once).ping()
        except redis.BusyLoadingError:
            return loading_is_up
        except redis.RedisError:
            return False


SENTINEL_CONF = """\
port {port}
bind 127.0.0.1
daemonize no
dir {dir}
sentinel monitor {service} 127.0.0.1 {master} 2
sentinel down-after-milliseconds {service} {down_after_ms}
sentinel failover-timeout {service} 10000
sentinel parallel-syncs {service} 1
"""


class Sentinel(Process):
    """One ``redis-server --sentinel`` watching ``service``; its config file
    is its own (a sentinel rewrites it)."""

    def __init__(self, workdir: Path, conf: str, port: int) -> None:
        super().__init__(workdir / f"sentinel-{port}.log")
        self.workdir, self.conf, self.port = workdir, conf, port

    def argv(self) -> list[str]:
        path = self.workdir / f"sentinel-{self.port}.conf"
        path.write_text(self.conf)
        return [find_tool("redis-server"), str(path), "--sentinel"]

    def start(self) -> Sentinel:
        self._spawn(self.argv())
        return self


class RedisSentinels:
    """A Redis master, one replica and three sentinels, private, on free ports.

    ``password`` protects the Redis nodes, ``sentinel_password`` the
    sentinels; ``url`` is the ``redis+sentinel://`` REDIS_URL for them.
    """

    def __init__(
        self,
        workdir: Path,
        password: str | None = "node-pw",
        sentinel_password: str | None = None,
        down_after_ms: int = 1000,
        service: str = "chat",
    ) -> None:
        self.workdir, self.service = workdir, service
        self.password, self.sentinel_password = password, sentinel_password
        for sub in ("master", "replica", "sentinels"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        self.master = RedisServer(workdir / "master", password=password)
        self.replica = RedisServer(
            workdir / "replica", password=password, replica_of=self.master.port
        )
        self.sentinels = []
        for _ in range(3):
            port = free_port()
            conf = SENTINEL_CONF.format(
                port=port,
                dir=workdir / "sentinels",
                service=service,
                master=self.master.port,
                down_after_ms=down_after_ms,
            )
            if password:
                conf += f"sentinel auth-pass {service} {password}\n"
            if sentinel_password:
                conf += f"requirepass {sentinel_password}\n"
                conf += f"sentinel sentinel-pass {sentinel_password}\n"
            self.sentinels.append(Sentinel(workdir / "sentinels", conf, port))

    def url(self, password=..., sentinel_password=...) -> str:
        """REDIS_URL for these sentinels; the passwords may be overridden."""
        password = self.password if password is ... else password
        secret = (
            self.sentinel_password if sentinel_password is ... else sentinel_password
        )
        auth = f":{password}@" if password else ""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        query = f"?sentinel_password={secret}" if secret else ""
        return f"redis+sentinel://{auth}{hosts}/0/{self.service}{query}"

    def sentinel_client(self, sentinel: Sentinel):
        import redis

        return redis.Redis(
            port=sentinel.port, password=self.sentinel_password, socket_timeout=2
        )

    def master_port(self) -> int | None:
        """The master's port, as the first sentinel that answers says."""
        import redis

        for sentinel in self.sentinels:
            try:
                address = self.sentinel_client(
                    sentinel
                ).sentinel_get_master_addr_by_name(self.service)
            except redis.RedisError:
                continue
            if address:
                return int(address[1])
        return None

    def _offset(self, server: RedisServer) -> int:
        import redis

        client = redis.Redis(port=server.port, password=self.password, socket_timeout=2)
        return client.info("replication")["master_repl_offset"]

    def master_offset(self) -> int:
        """How far the master's replication stream goes."""
        return self._offset(self.master)

    def replica_offset(self) -> int:
        """How far the replica has applied it."""
        return self._offset(self.replica)

    def _watching(self) -> bool:
        """Every sentinel knows the replica and the two other sentinels."""
        import redis

        try:
            for sentinel in self.sentinels:
                client = self.sentinel_client(sentinel)
                if len(client.sentinel_slaves(self.service)) != 1:
                    return False
                if len(client.sentinel_sentinels(self.service)) != 2:
                    return False
        except redis.RedisError:
            return False
        return True

    def start(self) -> RedisSentinels:
        self.master.start()
        self.replica.start()
        for sentinel in self.sentinels:
            sentinel.start()
        wait_until(
            self._watching, 30, "the sentinels to see the replica and each other"
        )
        return self

    def stop(self) -> None:
        for process in [*self.sentinels, self.replica, self.master]:
            process.stop()


class Instance(Process):
    """One chat instance: ``gunicorn -c gunicorn.conf.py wsgi:app`` on ``port``."""

    def __init__(
        self,
        port: int,
        workdir: Path,
        env: dict | None = None,
        cwd: Path = ROOT,
        python_bin: Path = BIN,
    ) -> None:
        super().__init__(workdir / f"gunicorn-{port}.log")
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.cwd = cwd
        self.python_bin = python_bin
        self.env = {
            **os.environ,
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "SECRET_KEY": os.environ.get("SECRET_KEY", "local-cluster"),
            "ROUTE_ID": route_id(port),
            **(env or {}),
        }

    def start(self, wait: bool = True) -> Instance:
        self._spawn(
            [str(self.python_bin / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
            env=self.env,
            cwd=self.cwd,
        )
        if wait:
            self.wait_healthy()
        return self

    def health(self) -> Answer | None:
        return http_get(f"{self.url}/healthz")

    def ready(self) -> Answer | None:
        return http_get(f"{self.url}/readyz")

    def worker_pids(self) -> set[int]:
        """The gunicorn worker processes of this master (Linux /proc)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return {int(pid) for pid in children.read_text().split()}
        except OSError:
            return set()

    def wait_healthy(self, timeout: float = 20.0) -> None:
        def up():
            if not self.running():
                raise AssertionError(f"gunicorn exited:\n{self.log()}")
            response = self.ready()
            return response is not None and response.status_code == 200

        wait_until(up, timeout, f"gunicorn on {self.port} to answer /readyz")


class RedisCluster:
    """A Redis Cluster: ``masters`` masters with one replica each, private,
    on free ports, joined by ``redis-cli --cluster create``.

    ``url`` is the ``redis+cluster://`` REDIS_URL naming every node as a
    seed (chat.cluster.clients).
    """

    def __init__(
        self, workdir: Path, masters: int = 3, password: str | None = "node-pw"
    ) -> None:
        self.workdir, self.password = workdir, password
        self.nodes: list[RedisServer] = []
        taken: set[int] = set()
        for index in range(masters * 2):
            home = workdir / f"node{index}"
            home.mkdir(parents=True, exist_ok=True)
            port = cluster_node_port(taken)
            taken |= {port, port + 10000}
            self.nodes.append(
                RedisServer(home, port=port, password=password, cluster_enabled=True)
            )
        self.masters = masters

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return f"redis+cluster://{auth}{hosts}"

    def cli(self, *args: str, timeout: float = 60) -> str:
        """``redis-cli --cluster ...`` (or any redis-cli command); its output."""
        auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
        done = subprocess.run(
            [find_tool("redis-cli"), *auth, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"redis-cli {' '.join(args)}:\n{done.stdout}{done.stderr}"
            )
        return done.stdout

    def client(self, node: RedisServer):
        """A plain client of one node (INFO, CLUSTER INFO, DEBUG SLEEP)."""
        import redis

        return redis.Redis(port=node.port, password=self.password, socket_timeout=5)

    def role_of(self, node: RedisServer) -> str | None:
        import redis

        try:
            return self.client(node).info("replication")["role"]
        except redis.RedisError:
            return None

    def live_masters(self) -> list[RedisServer]:
        return [n for n in self.nodes if self.role_of(n) == "master"]

    def master_of_slot(self, slot: int) -> RedisServer:
        """The node that serves ``slot`` now, as a live node says."""
        import redis

        for node in self.nodes:
            try:
                shards = self.client(node).execute_command("CLUSTER", "SLOTS")
            except redis.RedisError:
                continue
            for start, end, master, *_ in shards:
                if start <= slot <= end:
                    return next(n for n in self.nodes if n.port == int(master[1]))
        raise AssertionError(f"no live node serves slot {slot}")

    def node_id(self, node: RedisServer) -> str:
        return self.client(node).execute_command("CLUSTER", "MYID").decode()

    def move_slot(self, slot: int, source: RedisServer, target: RedisServer) -> None:
        """Migrate one slot, keys and all, from ``source`` to ``target``: the
        steps ``redis-cli --cluster reshard`` takes for each slot."""
        src, dst = self.client(source), self.client(target)
        source_id, target_id = self.node_id(source), self.node_id(target)
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            auth = ["AUTH", self.password] if self.password else []
            src.execute_command(
                "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, *auth, "KEYS", *keys
            )
        for node in self.live_masters():
            self.client(node).execute_command(
                "CLUSTER", "SETSLOT", slot, "NODE", target_id
            )

    def healthy(self) -> bool:
        """Every live node says the cluster is ok and sees every slot served."""
        import redis

        answering = 0
        for node in self.nodes:
            try:
                info = self.client(node).execute_command("CLUSTER", "INFO")
            except redis.ConnectionError:
                continue  # killed, or not started
            except redis.RedisError:
                return False
            answering += 1
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text:
                return False
        return answering > 0

    def start(self) -> RedisCluster:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> RedisCluster:
        for node in self.nodes:
            self._start_node(node)
        return self.form()

    def _start_node(self, node: RedisServer, attempts: int = 3) -> None:
        """Start ``node``; on new ports if another process took its port or
        its bus port since they were chosen (outgoing connections take
        ports from the same range: a benchmark's thousands of them did)."""
        for attempt in range(attempts):
            logged = len(node.log())
            try:
                node.start()
                return
            except AssertionError:
                if attempt == attempts - 1 or (
                    "Address already in use" not in node.log()[logged:]
                ):
                    raise
            node.stop()
            (node.workdir / "nodes.conf").unlink(missing_ok=True)
            taken = {p for n in self.nodes for p in (n.port, n.port + 10000)}
            node.port = cluster_node_port(taken)

    def form(self) -> RedisCluster:
        """Join the running nodes into a cluster, and wait until it serves."""
        self.cli(
            "--cluster",
            "create",
            *(f"127.0.0.1:{n.port}" for n in self.nodes),
            "--cluster-replicas",
            "1",
            "--cluster-yes",
        )
        wait_until(self._formed, 30, "the cluster to agree on every slot")
        return self

    def _formed(self) -> bool:
        return self.healthy() and self.in_sync()

    def in_sync(self) -> bool:
        """Every master has a replica in sync (a WAIT counts only a replica
        whose link is up)."""
        import redis

        masters = []
        for node in self.nodes:
            try:
                found = self.client(node).info("replication")
            except redis.ConnectionError:
                continue  # killed, or not started
            except redis.RedisError:
                return False
            if found["role"] == "master":
                masters.append(found)
        return len(masters) == self.masters and all(
            m.get("slave0", {}).get("state") == "online" for m in masters
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
