"""Keeps a host's chat running: N instances and nginx; rolls them on SIGHUP.

    python -m deploy.supervisor /srv/chat     (started by the post-receive hook)

SIGHUP: rolling restart to the release ``current`` points at. For each
instance in turn a new gunicorn starts on the same port (SO_REUSEPORT), and
once it answers /readyz the old one gets SIGTERM: it refuses new sessions,
closes its sockets so clients reconnect through nginx to a live instance,
removes its users from presence, and exits. SIGTERM/SIGINT: stop everything.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

from deploy.host import read_env
from deploy.nginx import Nginx
from deploy.procs import Instance, wait_until


class Supervisor:
    """The processes of one host, described by ``root/env``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.settings = read_env(root)
        count = int(self.settings.get("INSTANCES", "1"))
        base = int(self.settings.get("BASE_PORT", "5051"))
        self.lb_port = int(self.settings.get("LB_PORT", "5050"))
        self.ports = [base + i for i in range(count)]
        self.instances: dict[int, Instance] = {}
        self.nginx: Nginx | None = None
        self.release = ""

    def write_state(self, status: str, reason: str = "") -> None:
        state = {
            "release": self.release,
            "status": status,
            "reason": reason,
            "port": self.lb_port,
            "instances": self.ports,
        }
        tmp = self.root / "state.json.tmp"
        tmp.write_text(json.dumps(state))
        tmp.replace(self.root / "state.json")

    def _instance(self, port: int, release: Path) -> Instance:
        # nginx on this host is the only peer; the client is in X-Forwarded-For.
        env = {
            "TRUSTED_PROXIES": "127.0.0.1",
            **self.settings,
            "REUSE_PORT": "1",
            "RELEASE": release.name,
        }
        return Instance(
            port,
            self.root / "logs",
            env,
            cwd=release,
            python_bin=release / ".venv" / "bin",
        )

    def start(self) -> None:
        release = (self.root / "current").resolve()
        self.release = release.name
        for port in self.ports:
            self.instances[port] = self._instance(port, release).start()
        self.nginx = Nginx(self.root / "logs", self.ports, self.lb_port).start()
        self.write_state("serving")

    def roll(self) -> None:
        """Replace each instance by one of the current release, one at a time."""
        release = (self.root / "current").resolve()
        self.release = release.name
        self.write_state("rolling")
        for port in self.ports:
            fresh = self._instance(port, release).start(wait=False)
            try:
                wait_until(fresh.serves_itself, 60, f"new instance on {port}")
            except AssertionError as exc:
                fresh.stop()
                self.write_state("failed", str(exc))
                return
            old = self.instances[port]
            old.terminate(timeout=60)
            self.instances[port] = fresh
        self.write_state("serving")

    def stop(self) -> None:
        for process in [self.nginx, *self.instances.values()]:
            if process is not None:
                process.stop()


def main(root: Path) -> None:
    supervisor = Supervisor(root)
    (root / "supervisor.pid").write_text(str(__import__("os").getpid()))
    wake = threading.Event()
    requests: list[str] = []
    signal.signal(signal.SIGHUP, lambda *_: (requests.append("roll"), wake.set()))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: (requests.append("stop"), wake.set()))
    try:
        supervisor.start()
        while True:
            wake.wait()
            wake.clear()
            while requests:
                if requests.pop(0) == "stop":
                    return
                supervisor.roll()
    finally:
        supervisor.stop()
        (root / "supervisor.pid").unlink(missing_ok=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
