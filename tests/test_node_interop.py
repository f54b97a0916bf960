"""The stock Node socket.io-client holds the same conversation with the server."""

import pytest

from tests.support import NodeClient

pytestmark = pytest.mark.e2e


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
