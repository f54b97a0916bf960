"""The stock Node socket.io-client holds the same conversation with the server."""

import json
import queue
import subprocess
import threading

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.e2e


class NodeClient:
    """``tests/node/interop.js`` in a subprocess; its JSON lines in a queue."""

    def __init__(self, url: str, name: str, transport: str) -> None:
        self.lines: queue.Queue = queue.Queue()
        self.proc = subprocess.Popen(
            ["node", str(ROOT / "tests/node/interop.js"), url, name, transport],
            cwd=ROOT,
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


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_node_and_python_clients_chat_through_the_server(gunicorn, clients, transport):
    server = gunicorn()
    python = clients(server.url, transports=(transport,))
    python.login("Py")
    node = NodeClient(server.url, "Node", transport)
    try:
        assert node.wait_for("login")["numUsers"] == 2
        python.wait_for(
            "user joined", lambda d: d == {"username": "Node", "numUsers": 2}
        )
        python.say("hi Node")
        assert node.wait_for("new message")["message"] == "hi Node"
        python.wait_for("typing", lambda d: d == {"username": "Node"})
        python.wait_for("stop typing", lambda d: d == {"username": "Node"})
        reply = python.wait_for("new message", lambda d: d["username"] == "Node")
        assert reply["message"] == "hello from node"
        python.say("bye")
        python.wait_for("user left", lambda d: d == {"username": "Node", "numUsers": 1})
        assert node.proc.wait(10) == 0
    finally:
        node.close()
