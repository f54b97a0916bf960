"""Behind nginx: sticky sessions make both transports work across instances."""

import json

import pytest
import requests

from tests.support import NodeClient, free_port, presence, wait_until

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


def test_a_session_id_routes_every_request_to_its_instance(cluster, nginx):
    a, b = cluster(2)
    balancer = nginx([a, b])
    with requests.Session() as browser:
        handshake = browser.get(f"{balancer.url}/socket.io/?EIO=4&transport=polling")
        sid = json.loads(handshake.text[1:])["sid"]
        # The sid names its instance (ROUTE_ID); no cookie is involved.
        assert sid.split(".")[0] in {f"p{a.port}", f"p{b.port}"}
        assert not browser.cookies
        url = f"{balancer.url}/socket.io/?EIO=4&transport=polling&sid={sid}"
        assert browser.post(url, data="40").status_code == 200
        assert browser.get(url, timeout=5).text.startswith("40")
        for _ in range(4):
            # Each request reaches the instance that holds the session, which
            # answers an event sent before login with a chat error.
            assert browser.post(url, data='42["typing"]').status_code == 200
            assert "not_logged_in" in browser.get(url, timeout=5).text


def test_new_sessions_go_to_the_instance_with_the_fewest_users(
    cluster, nginx, clients, gunicorn
):
    """After a restart (a deploy) everyone sits on the instance that stayed;
    new sessions, such as reloaded pages, fill the restarted one first."""
    a, b = cluster(2)
    balancer = nginx([a, b])
    env = b.env
    b.terminate()
    for i in range(4):
        clients(balancer.url).login(f"early{i}")
    assert local_users(a) == 4
    b = gunicorn(env, port=b.port)
    # nginx marked b as failed while it was down; it tries it again after
    # fail_timeout (2 s), on a new session.
    late = iter(range(100))
    wait_until(
        lambda: clients(balancer.url).login(f"late{next(late)}") and local_users(b),
        10,
        "a new session to reach the restarted instance",
    )
    on_a = local_users(a)
    for i in range(3):
        clients(balancer.url).login(f"reloaded{i}")
    assert (local_users(a), local_users(b)) == (on_a, 4)


def test_tls_at_the_balancer_redirects_http_and_carries_websockets(
    cluster, nginx, clients, certificate
):
    """The stock JS client, as a page uses it, chats over wss through nginx
    (trusting the certificate) with a user of the cluster.

    (Not python-socketio's client: its threaded transport reads and writes
    one TLS socket from two threads at once, which OpenSSL does not allow,
    and now and then loses its connect packet. That race is the client's;
    the stock JS client has one thread.)
    """
    a, b = cluster(2)
    balancer = nginx([a, b], tls=certificate)
    plain = requests.get(f"{balancer.url}/?room=dev", allow_redirects=False, timeout=5)
    assert plain.status_code == 301
    assert plain.headers["Location"] == f"{balancer.https_url}/?room=dev"
    page = requests.get(balancer.https_url, verify=str(certificate[0]), timeout=5)
    assert "socket.io" in page.text
    python = clients(a.url)
    python.login("Py")
    node = NodeClient(balancer.https_url, "Node", "websocket", ca=certificate[0])
    try:
        assert node.wait_for("login")["numUsers"] == 2
        python.say("hi Node")
        assert node.wait_for("new message")["message"] == "hi Node"
        reply = python.wait_for("new message", lambda d: d["username"] == "Node")
        assert reply["message"] == "hello from node"
    finally:
        node.close()


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


def test_the_edge_limits_count_an_ipv6_client_by_its_64_prefix(tmp_path):
    """nginx's per-client zones key on what the app counts: an IPv4 address,
    or the first 8 bytes (the /64) of an IPv6 one; nginx accepts the map."""
    import subprocess

    from deploy.nginx import nginx_conf
    from deploy.procs import find_tool

    conf = nginx_conf(free_port(), [free_port()], tmp_path)
    assert "limit_conn_zone $chat_client" in conf
    assert "limit_req_zone $chat_client" in conf
    assert '"~^(?s)(?P<prefix>.{8}).{8}$" $prefix;' in conf
    path = tmp_path / "nginx.conf"
    path.write_text(conf)
    checked = subprocess.run(
        [find_tool("nginx"), "-t", "-c", str(path), "-p", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr
