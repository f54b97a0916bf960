"""Behind nginx: sticky sessions make both transports work across instances."""

import json

import pytest
import requests

from tests.support import presence

pytestmark = pytest.mark.e2e


def local_users(instance):
    return instance.health().json()["localUsers"]


@pytest.mark.parametrize("transports", [("websocket",), ("polling",)])
def test_conversation_across_instances_through_nginx(
    cluster, nginx, clients, transports
):
    a, b = cluster(2)
    balancer = nginx([a, b])
    alice = clients(balancer.url, transports=transports)
    bob = clients(balancer.url, transports=transports)
    alice.login("Alice")
    assert bob.login("Bob")["numUsers"] == 2
    # Round-robin put the two users on different instances.
    assert (local_users(a), local_users(b)) == (1, 1)
    alice.wait_for(
        "user joined", lambda d: presence(d) == {"username": "Bob", "numUsers": 2}
    )
    bob.sio.emit("typing")
    alice.wait_for("typing", lambda d: presence(d) == {"username": "Bob"})
    for i in range(5):
        alice.say(f"message {i}")
    for i in range(5):
        bob.wait_for("new message", lambda d, i=i: d["message"] == f"message {i}")
    assert [m["message"] for m in bob.named("new message")] == [
        f"message {i}" for i in range(5)
    ]
    bob.close()
    alice.wait_for(
        "user left", lambda d: presence(d) == {"username": "Bob", "numUsers": 1}
    )


def test_sticky_cookie_pins_a_polling_session_to_one_instance(cluster, nginx):
    a, b = cluster(2)
    balancer = nginx([a, b])
    with requests.Session() as browser:
        handshake = browser.get(f"{balancer.url}/socket.io/?EIO=4&transport=polling")
        pinned = browser.cookies["chat_backend"]
        sid = json.loads(handshake.text[1:])["sid"]
        url = f"{balancer.url}/socket.io/?EIO=4&transport=polling&sid={sid}"
        assert browser.post(url, data="40").status_code == 200
        assert browser.get(url, timeout=5).text.startswith("40")
        for _ in range(4):
            # Each request reaches the instance that holds the session, which
            # answers an event sent before login with a chat error.
            assert browser.post(url, data='42["typing"]').status_code == 200
            assert "not_logged_in" in browser.get(url, timeout=5).text
            assert browser.cookies["chat_backend"] == pinned


def test_without_sticky_sessions_polling_is_refused_with_400(cluster, nginx):
    a, b = cluster(2)
    balancer = nginx([a, b], sticky=False)
    handshake = requests.get(f"{balancer.url}/socket.io/?EIO=4&transport=polling")
    sid = json.loads(handshake.text[1:])["sid"]
    url = f"{balancer.url}/socket.io/?EIO=4&transport=polling&sid={sid}"
    # Round-robin sends the session's next request to the other instance,
    # which has never heard of it.
    refused = requests.post(url, data="40", timeout=5)
    assert refused.status_code == 400
    assert "Invalid session" in refused.text
