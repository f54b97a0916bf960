"""nginx in front of the instances: sessions routed by their id, new ones spread.

Every instance starts its engine.io session ids with ``<ROUTE_ID>.``
(``p<port>``): nginx sends each request that names a session (``?sid=``)
to the instance holding it, falling back to the others when it is gone,
and spreads new sessions to the instance with the fewest connections. No
cookie pins a browser: after a rolling deploy, reconnecting users spread
over the instances again.

Open-source nginx has no active health checks, so failover is passive: a
request that an instance refuses, times out on (``proxy_connect_timeout``)
or answers 502/503 (an instance shutting down refuses new sessions with
503) is retried on another (``proxy_next_upstream``). Instances are never
marked failed (``max_fails=0``): nginx clears a mark only when a later
connection to that instance closes, which for a websocket can be hours,
so a restarted instance would get no new sessions; a refused connection to
a local instance costs well under a millisecond.

With a certificate and key, nginx listens with TLS and redirects plain HTTP
to HTTPS; websockets are upgraded over TLS and the instances learn the
scheme from ``X-Forwarded-Proto``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from deploy.procs import (
    Process,
    find_tool,
    free_port,
    http_get,
    route_id,
    wait_until,
)

NGINX_CONF = """\
worker_processes 1;
worker_rlimit_nofile {open_files};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections {worker_connections}; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;

  map $http_upgrade $connection_upgrade {{ default upgrade; "" close; }}

  # Per client address at the edge: open connections and request rate (a
  # browser long-polling makes about one request per batch of messages).
  # Slow senders of headers or bodies are cut off.
{edge_zones}  client_header_timeout 5s;
  client_body_timeout 10s;

  # New sessions (and the page) go to the instance with the fewest open
  # connections: a websocket opened without a sid (the page's first try)
  # counts here for its whole life. Never marked failed: nginx forgets a
  # failure only when a later connection to the peer closes, which for a
  # websocket may be hours; a refused connect moves on to the next at once.
  upstream chat_any {{
    {balance}
{any_servers}
  }}
{pinned_upstreams}
  # A session's requests carry ?sid=<ROUTE_ID>.<id>: back to its instance.
  map $arg_sid $chat_upstream {{
    default chat_any;
{sid_map}
  }}
{plain_server}
  server {{
{listen}
{edge_limits}    location / {{
      proxy_pass http://{target};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_buffering off;
      proxy_read_timeout 1h;
      proxy_connect_timeout 2s;
      # An instance shutting down answers new sessions with 503: try another.
      proxy_next_upstream error timeout http_502 http_503;
    }}
  }}
}}
"""

# A client is an IPv4 address or an IPv6 /64, as in the app (one IPv6 host
# normally holds a whole /64): the key is the first 8 of the 16 bytes of an
# IPv6 address, all 4 of an IPv4 one.
EDGE_ZONES = """\
  map $binary_remote_addr $chat_client {
    "~^(?s)(?P<prefix>.{8}).{8}$" $prefix;
    default $binary_remote_addr;
  }
  limit_conn_zone $chat_client zone=chat_conn:10m;
  limit_req_zone $chat_client zone=chat_req:10m rate=20r/s;
  limit_conn_status 429;
  limit_req_status 429;
"""
EDGE_LIMITS = """\
    limit_conn chat_conn 200;
    limit_req zone=chat_req burst=200 nodelay;
"""

TLS_LISTEN = """\
    listen {host}:{tls_port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:chat_tls:10m;"""

REDIRECT_SERVER = """
  # Plain HTTP only redirects to HTTPS.
  server {{
    listen {host}:{port};
    return 301 https://$host{port_suffix}$request_uri;
  }}
"""


def nginx_conf(
    port: int,
    backends: list[int],
    workdir: Path,
    sticky: bool = True,
    host: str = "127.0.0.1",
    tls: tuple[Path, Path, int] | None = None,
    edge_limits: bool = True,
    worker_connections: int = 8192,
) -> str:
    """An nginx.conf for ``backends``; ``sticky=False`` shows why routing matters.

    ``tls``: (certificate, key, port) to serve HTTPS there and redirect
    ``port`` to it. ``edge_limits=False`` drops the per-address caps (a
    benchmark's one generator plays thousands of people); a proxied
    connection takes two of ``worker_connections``.
    """
    addr = "127.0.0.1:{}".format
    any_servers = "\n".join(f"    server {addr(p)} max_fails=0;" for p in backends)
    pinned, sid_map = [], []
    for p in backends:
        backups = "".join(f"    server {addr(o)} backup;\n" for o in backends if o != p)
        # Never marked failed here: a session's instance that restarted must
        # get its new sessions' requests at once (if it is down, the backup
        # answers "Invalid session" and the client opens a new one).
        pinned.append(
            f"  upstream chat_{p} {{\n    server {addr(p)} max_fails=0;\n{backups}  }}"
        )
        sid_map.append(f'    "~^{route_id(p)}\\." chat_{p};')
    if tls:
        cert, key, tls_port = tls
        listen = TLS_LISTEN.format(host=host, tls_port=tls_port, cert=cert, key=key)
        suffix = "" if tls_port == 443 else f":{tls_port}"
        plain = REDIRECT_SERVER.format(host=host, port=port, port_suffix=suffix)
    else:
        listen, plain = f"    listen {host}:{port};", ""
    return NGINX_CONF.format(
        dir=workdir,
        worker_connections=worker_connections,
        open_files=worker_connections + 1024,
        edge_zones=EDGE_ZONES if edge_limits else "",
        edge_limits=EDGE_LIMITS if edge_limits else "",
        balance="least_conn;" if sticky else "",
        any_servers=any_servers,
        pinned_upstreams="\n".join(pinned),
        sid_map="\n".join(sid_map),
        plain_server=plain,
        listen=listen,
        target="$chat_upstream" if sticky else "chat_any",
    )


class Nginx(Process):
    """nginx in front of the instances, in the foreground, with its own files."""

    def __init__(
        self,
        workdir: Path,
        backends: list[int],
        port: int | None = None,
        sticky: bool = True,
        tls: tuple[Path, Path] | None = None,
        **options,
    ) -> None:
        super().__init__(workdir / "nginx.log")
        # nginx_conf's edge_limits and worker_connections.
        self.options = options
        self.workdir = workdir / ("nginx" if sticky else "nginx-plain")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.backends = backends
        self.sticky = sticky
        self.tls = None
        if tls:
            self.tls = (*tls, free_port())
            self.https_url = f"https://127.0.0.1:{self.tls[2]}"

    def write_conf(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "nginx.conf"
        text = nginx_conf(
            self.port,
            self.backends,
            self.workdir,
            self.sticky,
            tls=self.tls,
            **self.options,
        )
        conf.write_text(text)
        return conf

    def start(self) -> Nginx:
        self._spawn(nginx_argv(self.write_conf()))
        wait_until(self._answers, 10, f"nginx on {self.port}")
        return self

    def _answers(self) -> bool:
        if not self.running():
            error_log = self.workdir / "nginx-error.log"
            raise AssertionError(
                f"nginx exited:\n{self.log()}\n"
                f"{error_log.read_text() if error_log.exists() else ''}"
            )
        url = self.https_url if self.tls else self.url
        answer = http_get(f"{url}/healthz", verify=False)
        return answer is not None and answer.status_code == 200


def nginx_argv(conf: Path) -> list[str]:
    """nginx in the foreground with everything it writes next to ``conf``."""
    return [
        find_tool("nginx"),
        "-c",
        str(conf),
        "-p",
        str(conf.parent),
        "-e",
        str(conf.parent / "nginx-error.log"),
    ]


def reap_orphans(pid_file: Path, timeout: float = 5.0) -> int:
    """Kill what is left of an nginx whose master was killed (kill -9).

    Its workers keep running in the master's process group, holding the
    listening port with the old configuration, and a new nginx could never
    bind. The group is the old master's pid (supervisord makes every program
    a group leader); only processes named nginx in it are killed. Returns
    how many were.
    """
    import os
    import signal
    import time

    try:
        group = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return 0

    def left() -> list[int]:
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)
                name = fields[0].split("(", 1)[1]
                pgrp = int(fields[1].split()[2])
            except (OSError, IndexError, ValueError):
                continue
            if pgrp == group and name == "nginx":
                pids.append(int(stat.parent.name))
        return pids

    stray = left()
    for pid in stray:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while left() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid_file.unlink(missing_ok=True)
    return len(stray)
