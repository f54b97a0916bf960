"""nginx in front of the instances: sticky sessions for long-polling.

New sessions are spread round-robin; nginx then sets a ``chat_backend``
cookie naming the instance that answered, and routes every later request of
that browser there, falling back to the others when it is gone.
"""

from __future__ import annotations

from pathlib import Path

from deploy.procs import Process, find_tool, free_port, http_get, wait_until

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 8192; }}
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
  limit_conn_zone $binary_remote_addr zone=chat_conn:10m;
  limit_req_zone $binary_remote_addr zone=chat_req:10m rate=20r/s;
  limit_conn_status 429;
  limit_req_status 429;
  client_header_timeout 5s;
  client_body_timeout 10s;

  # New sessions are spread round-robin; the chat_backend cookie then pins a
  # browser to its instance (long-polling needs every request on the same
  # one). A dead instance's sessions fall back to the others.
  upstream chat_any {{
{any_servers}
  }}
{pinned_upstreams}
  map $cookie_chat_backend $chat_upstream {{
    default chat_any;
{cookie_map}
  }}
  # After a fallback $upstream_addr lists every address tried; keep the last.
  map $upstream_addr $chat_served_by {{ "~(?<last>[^, ]+)$" $last; }}

  server {{
    listen 127.0.0.1:{port};
    limit_conn chat_conn 200;
    limit_req zone=chat_req burst=200 nodelay;
    location / {{
      proxy_pass http://{target};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_buffering off;
      proxy_read_timeout 1h;
      # An instance shutting down answers new sessions with 503: try another.
      proxy_next_upstream error timeout http_502 http_503;
{cookie_header}
    }}
  }}
}}
"""


def nginx_conf(
    port: int, backends: list[int], workdir: Path, sticky: bool = True
) -> str:
    """An nginx.conf for ``backends``; ``sticky=False`` shows why stickiness matters."""
    addr = "127.0.0.1:{}".format
    any_servers = "\n".join(
        f"    server {addr(p)} max_fails=1 fail_timeout=5s;" for p in backends
    )
    pinned, cookie_map = [], []
    for p in backends:
        backups = "".join(f"    server {addr(o)} backup;\n" for o in backends if o != p)
        pinned.append(f"  upstream chat_{p} {{\n    server {addr(p)};\n{backups}  }}")
        cookie_map.append(f'    "{addr(p)}" chat_{p};')
    cookie = (
        "      add_header Set-Cookie "
        '"chat_backend=$chat_served_by; Path=/; HttpOnly; SameSite=Lax" always;'
    )
    return NGINX_CONF.format(
        dir=workdir,
        port=port,
        any_servers=any_servers,
        pinned_upstreams="\n".join(pinned),
        cookie_map="\n".join(cookie_map),
        target="$chat_upstream" if sticky else "chat_any",
        cookie_header=cookie if sticky else "",
    )


class Nginx(Process):
    """nginx in front of the instances, in the foreground, with its own files."""

    def __init__(
        self,
        workdir: Path,
        backends: list[int],
        port: int | None = None,
        sticky: bool = True,
    ) -> None:
        super().__init__(workdir / "nginx.log")
        self.workdir = workdir / ("nginx" if sticky else "nginx-plain")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.backends = backends
        self.sticky = sticky

    def start(self) -> Nginx:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "nginx.conf"
        conf.write_text(nginx_conf(self.port, self.backends, self.workdir, self.sticky))
        self._spawn(
            [
                find_tool("nginx"),
                "-c",
                str(conf),
                "-p",
                str(self.workdir),
                "-e",
                str(self.workdir / "nginx-error.log"),
            ]
        )
        wait_until(self._answers, 10, f"nginx on {self.port}")
        return self

    def _answers(self) -> bool:
        if not self.running():
            error_log = self.workdir / "nginx-error.log"
            raise AssertionError(
                f"nginx exited:\n{self.log()}\n"
                f"{error_log.read_text() if error_log.exists() else ''}"
            )
        answer = http_get(f"{self.url}/healthz")
        return answer is not None and answer.status_code == 200
