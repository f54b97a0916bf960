"""Helpers for e2e tests: socket.io clients that record what they receive.

Processes (redis-server, gunicorn, nginx) come from ``deploy.procs``, the same
code ``make cluster`` runs.
"""

from __future__ import annotations

import json
import threading

import requests
import socketio

from deploy.procs import ROOT, free_port, wait_until

__all__ = ["ROOT", "ChatClient", "free_port", "wait_until"]


class ChatClient:
    """A python-socketio client that records every event it receives."""

    def __init__(
        self,
        url: str,
        transports=("websocket",),
        auth=None,
        reconnection: bool = False,
        resume: bool = False,
        ssl_verify: bool = True,
        headers: dict | None = None,
    ) -> None:
        self.events: list[tuple[str, object]] = []
        self._cond = threading.Condition()
        self.sio = socketio.Client(
            reconnection=reconnection,
            reconnection_delay=0.2,
            reconnection_delay_max=1,
            ssl_verify=ssl_verify,
        )
        self.sio.on("*", self._record)
        self.sio.on("connect", lambda: self._record("connect"))
        self.sio.on("disconnect", lambda *a: self._record("disconnect"))
        if resume:
            # As the page does: every (re)connect logs in again with the
            # token of its last login (reclaiming its name) and asks for what
            # was missed since the newest message seen.
            fixed = dict(auth or {})
            auth = lambda: {  # noqa: E731
                **fixed,
                "token": (self.named("login") or [{}])[-1].get("token"),
                "lastId": self.last_id(),
            }
        self.sio.connect(
            url,
            transports=list(transports),
            auth=auth,
            headers=headers or {},
            wait_timeout=10,
        )

    def last_id(self) -> str | None:
        """The id of the newest message received, live or in a ``history``."""
        ids = [m.get("id") for m in self.named("new message")]
        for history in self.named("history"):
            ids += [m.get("id") for m in history["messages"]]
        ids = [i for i in ids if isinstance(i, str)]
        return max(ids, key=lambda i: tuple(map(int, i.split("-")))) if ids else None

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

    def wait_for_any(self, names, timeout: float = 10.0) -> tuple[str, object]:
        """The first event received whose name is one of ``names``."""

        def found():
            for event, data in self.events:
                if event in names:
                    return ((event, data),)
            return None

        with self._cond:
            ok = self._cond.wait_for(found, timeout)
        if not ok:
            raise AssertionError(f"none of {names} in {timeout}s: {self.events[-10:]}")
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


def presence(payload: dict) -> dict:
    """A ``user joined`` / ``user left`` payload without its ``seq`` addition."""
    return {k: v for k, v in payload.items() if k != "seq"}


def polling_session(url: str) -> str:
    """A raw engine.io polling session connected to the default namespace."""
    handshake = requests.get(f"{url}/socket.io/?EIO=4&transport=polling", timeout=5)
    sid = json.loads(handshake.text[1:])["sid"]
    session = f"{url}/socket.io/?EIO=4&transport=polling&sid={sid}"
    assert requests.post(session, data="40", timeout=5).text == "OK"
    assert requests.get(session, timeout=5).text.startswith("40")
    return session
