"""Helpers for e2e tests: socket.io clients that record what they receive.

Processes (redis-server, gunicorn, nginx) come from ``deploy.procs``, the same
code ``make cluster`` runs.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading

import requests
import socketio

from deploy.procs import ROOT, free_port, wait_until

__all__ = [
    "ROOT",
    "ChatClient",
    "Conversation",
    "NodeClient",
    "free_port",
    "wait_until",
]


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

    def on_ack(self, name: str):
        """A callback for an emit that records its answer as ``name``, in
        order with the events."""
        return lambda *args: self._record(name, *args)

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


class NodeClient:
    """The stock Node socket.io-client as a chat user (``tests/node/interop.js``
    in a subprocess); its JSON lines in a queue.

    ``ca``: a certificate the client trusts besides Node's own, for a server
    with a self-signed one.
    """

    def __init__(self, url: str, name: str, transport: str, ca=None) -> None:
        self.lines: queue.Queue = queue.Queue()
        env = dict(os.environ)
        if ca is not None:
            env["NODE_EXTRA_CA_CERTS"] = str(ca)
        self.proc = subprocess.Popen(
            ["node", str(ROOT / "tests/node/interop.js"), url, name, transport],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def wait_for(self, event: str, timeout: float = 10.0) -> object:
        while True:
            try:
                item = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"node client never received {event!r}") from None
            if item["event"] == event:
                return item["data"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        self.proc.stdout.close()


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


class Conversation:
    """Alice and Bob through nginx, Alice sending a numbered message every
    50 ms; what was acknowledged must reach Bob (live, or as missed messages
    when he logs in again with the last id he saw)."""

    talks = 0

    def __init__(self, clients, url):
        # Names of their own: a closed client's name may be held a while.
        Conversation.talks += 1
        alice, bob = f"Alice{self.talks}", f"Bob{self.talks}"
        self.names = {alice, bob}
        # Both reconnect as the page does: with the token of their login.
        self.alice = clients(
            url, auth={"username": alice}, reconnection=True, resume=True
        )
        self.alice.wait_for("login")
        self.bob = clients(url, auth={"username": bob}, reconnection=True, resume=True)
        self.bob.wait_for("login")
        self.acked: list[str] = []
        self._stop = threading.Event()
        self._sender = threading.Thread(target=self._send, daemon=True)

    def _send(self):
        n = 0
        while not self._stop.wait(0.05):
            n += 1
            text = f"during the push {n}"
            try:
                ack = self.alice.sio.call("new message", text, timeout=5)
            except Exception:  # noqa: BLE001  (not connected, no ack: not sent)
                continue
            if isinstance(ack, dict) and "id" in ack:
                self.acked.append(text)

    def __enter__(self):
        self._sender.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._sender.join(10)

    def received_by_bob(self):
        texts = {m["message"] for m in self.bob.named("new message")}
        for history in self.bob.named("history"):
            texts |= {m["message"] for m in history["messages"]}
        return texts

    def assert_nothing_lost(self):
        assert self.acked, "no message was acknowledged during the push"
        wait_until(
            lambda: set(self.acked) <= self.received_by_bob(),
            20,
            "Bob to have every acknowledged message",
        )
        # (Users of earlier tests may leave meanwhile; these two never do.)
        for who in (self.alice, self.bob):
            left = {d["username"] for d in who.named("user left")}
            assert not left & self.names, "someone who stayed was announced"
