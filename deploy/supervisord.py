"""supervisord's configuration for a host's chat, and for ``make cluster``.

One program per instance (``chat-<port>``), one for nginx and, for
``make cluster``, one for a private redis-server. supervisord restarts
whatever dies, rotates the logs and is what a rolling deploy drives
(``supervisorctl restart chat-<port>``, one instance at a time).

An instance never starts gunicorn directly: its command is
``deploy/host.py instance ROOT PORT`` of the release ``ROOT/current`` points
at, which reads ``ROOT/env`` at that moment. So every start, whether after a
crash or in a deploy, runs the current release with the current settings,
and a command line that never changes lets ``supervisorctl update`` add or
remove instances without restarting the others.

Only the standard library: ``deploy/host.py`` writes this before any
virtual environment exists.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

# How long supervisord waits for a SIGTERM'd instance to drain before it
# kills the process group; gunicorn's own graceful timeout is shorter.
STOP_WAIT_S = 40


@dataclass
class Layout:
    """Where one supervisord keeps its files: a host's root or ``.cluster``."""

    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "supervisord.conf"

    @property
    def socket(self) -> Path:
        return self.root / "supervisor.sock"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def nginx_dir(self) -> Path:
        return self.root / "nginx"


def instance_program(layout: Layout, port: int, python: str = sys.executable) -> str:
    """The program of the chat instance on ``port``."""
    launcher = layout.root / "current" / "deploy" / "host.py"
    return _program(
        f"chat-{port}",
        f"{python} {launcher} instance {layout.root} {port}",
        layout.logs / f"chat-{port}.log",
        priority=100,
        # Drain: sockets closed, users handed over, then exit.
        stopsignal="TERM",
        stopwaitsecs=STOP_WAIT_S,
    )


def nginx_program(layout: Layout, argv: list[str]) -> str:
    return _program(
        "nginx",
        " ".join(argv),
        layout.logs / "nginx.log",
        priority=200,
        stopsignal="TERM",
        stopwaitsecs=10,
    )


def redis_program(
    layout: Layout, argv: list[str], name: str = "redis", autorestart: bool = True
) -> str:
    """A redis-server (or a sentinel) of make cluster.

    ``autorestart=False`` for the master and replica under Sentinel: a killed
    master restarted within a second, before the sentinels call it down,
    would come back as master with an empty dataset (no persistence here)
    and the replica would copy that; left down, the replica is promoted.
    """
    return _program(
        name,
        " ".join(shlex.quote(arg) for arg in argv),
        layout.logs / f"{name}.log",
        autorestart=autorestart,
        priority=10,
        stopsignal="TERM",
        stopwaitsecs=10,
    )


def _program(
    name: str, command: str, log: Path, autorestart: bool = True, **options
) -> str:
    lines = [
        f"[program:{name}]",
        f"command={command}",
        "autostart=true",
        # Restarted whenever it exits, however it exits.
        f"autorestart={'true' if autorestart else 'false'}",
        # Up for a second counts as started; a release that cannot start
        # is given up on after a few tries (FATAL in supervisorctl status).
        "startsecs=1",
        "startretries=5",
        # A gunicorn master and its worker stop (or are killed) together.
        "stopasgroup=true",
        "killasgroup=true",
        "redirect_stderr=true",
        f"stdout_logfile={log}",
        "stdout_logfile_maxbytes=20MB",
        "stdout_logfile_backups=5",
    ]
    lines += [f"{key}={value}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


def supervisord_conf(layout: Layout, programs: list[str]) -> str:
    """The whole file: supervisord itself, its control socket, the programs."""
    return (
        "; Written by deploy/ (host.py init and every deploy, or make cluster);\n"
        "; edits are overwritten.\n"
        "[supervisord]\n"
        f"logfile={layout.logs / 'supervisord.log'}\n"
        "logfile_maxbytes=20MB\n"
        "logfile_backups=5\n"
        f"pidfile={layout.root / 'supervisord.pid'}\n"
        f"childlogdir={layout.logs}\n"
        "\n"
        "[unix_http_server]\n"
        f"file={layout.socket}\n"
        "chmod=0700\n"
        "\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = "
        "supervisor.rpcinterface:make_main_rpcinterface\n"
        "\n"
        "[supervisorctl]\n"
        f"serverurl=unix://{layout.socket}\n"
        "\n" + "\n".join(programs)
    )
