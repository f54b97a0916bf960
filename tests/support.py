"""Real processes for e2e tests: gunicorn instances, socket.io clients, waits.

Every wait has a deadline and says what it was waiting for when it gives up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
import socketio

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def healthz(url: str) -> requests.Response | None:
    try:
        return requests.get(f"{url}/healthz", timeout=2)
    except requests.RequestException:
        return None


class Gunicorn:
    """One chat instance: ``gunicorn -c gunicorn.conf.py wsgi:app`` on ``port``."""

    def __init__(
        self, port: int, log_dir: Path, env: dict | None = None, cwd: Path = ROOT
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"gunicorn-{port}.log"
        self.env = {
            **os.environ,
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "SECRET_KEY": "e2e",
            **(env or {}),
        }
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> Gunicorn:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 20.0) -> None:
        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"gunicorn exited:\n{self.log()}")
            response = healthz(self.url)
            return response is not None and response.status_code == 200

        wait_until(up, timeout, f"gunicorn on {self.port} to answer /healthz")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """kill -9 the whole process group: master and worker die at once."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        try:
            self.terminate(timeout=25)
        except subprocess.TimeoutExpired:
            self.kill()
        finally:
            self.kill()


class ChatClient:
    """A python-socketio client that records every event it receives."""

    def __init__(
        self, url: str, transports=("websocket",), auth=None, reconnection: bool = False
    ) -> None:
        self.events: list[tuple[str, object]] = []
        self._cond = threading.Condition()
        self.sio = socketio.Client(
            reconnection=reconnection, reconnection_delay=0.2, reconnection_delay_max=1
        )
        self.sio.on("*", self._record)
        self.sio.on("connect", lambda: self._record("connect"))
        self.sio.on("disconnect", lambda *a: self._record("disconnect"))
        self.sio.connect(url, transports=list(transports), auth=auth, wait_timeout=10)

    def _record(self, event, *args):
        with self._cond:
            self.events.append((event, args[0] if args else None))
            self._cond.notify_all()

    def named(self, name: str) -> list:
        with self._cond:
            return [data for event, data in self.events if event == name]

    def wait_for(self, name: str, match=None, timeout: float = 10.0):
        """The first ``name`` event whose payload satisfies ``match``."""

        def found():
            for data in self.named(name):
                if match is None or match(data):
                    return (data,)
            return None

        with self._cond:
            ok = self._cond.wait_for(found, timeout)
        if not ok:
            raise AssertionError(
                f"no {name!r} event matching in {timeout}s; got {self.events[-10:]}"
            )
        return ok[0]

    def login(self, name: str, room: str | None = None) -> dict:
        self.sio.emit("add user", (name, {"room": room}) if room else name)
        return self.wait_for("login")

    def say(self, text: str) -> None:
        self.sio.emit("new message", text)

    def close(self) -> None:
        if self.sio.connected:
            self.sio.disconnect()
        # After the server dropped the connection python-engineio keeps its
        # websocket and requests session open; close them.
        if self.sio.eio.ws is not None:
            self.sio.eio.ws.shutdown()
        if self.sio.eio.http is not None:
            self.sio.eio.http.close()
