"""The direct websocket write path keeps every guarantee of engine.io's queue.

Each test runs gunicorn with the real worker and reads frames as a client
would: order per socket, no interleaved frames, a bounded backlog for a
client that is behind, a clean close while a backlog drains, the polling to
websocket upgrade while messages flow, and nothing left behind once many
connections come and go.
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
import requests

from tests.rawws import RawWebSocket
from tests.support import ChatClient, polling_session, wait_until

pytestmark = pytest.mark.e2e

# The server's kernel send buffer grows to 4 MB on loopback (tcp_wmem): a
# backlog forms only past that.
BURST = 4000
FILLER = "x" * 1990
BIG_BACKLOG = {"SEND_QUEUE_MAX_MESSAGES": "10000", "SEND_QUEUE_MAX_BYTES": str(2**25)}
UNLIMITED = {
    "RATE_BURST": "100000",
    "RATE_PER_S": "100000",
    "TRANSPORT_PACKETS_PER_S": "100000",
    "TRANSPORT_BYTES_PER_S": "100000000",
    "MAX_SESSIONS_PER_IP": "0",
    "MAX_CONNECTIONS_PER_IP": "0",
    "CLIENT_MESSAGES_PER_S": "0",
    "CLIENT_MESSAGE_BYTES_PER_S": "0",
    "CLIENT_ROOMS_PER_HOUR": "0",
}


def gauges(url: str) -> dict[str, float]:
    """The instance's own gauges from /metrics."""
    text = requests.get(f"{url}/metrics", timeout=5).text
    values = {}
    for line in text.splitlines():
        if line.startswith("chat_") and " " in line and "{" not in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def open_fds(server) -> int:
    [pid] = server.worker_pids()
    return len(os.listdir(f"/proc/{pid}/fd"))


def chat_messages(raw: RawWebSocket, count: int) -> list[str]:
    """The next ``count`` ``new message`` texts; any other event is skipped."""
    texts = []
    while len(texts) < count:
        packet = raw.recv_text()
        if packet.startswith('42["new message"'):
            texts.append(json.loads(packet[2:])[1]["message"])
    return texts


@pytest.fixture
def behind(gunicorn, clients):
    """An instance, Alice, and a raw client that has not read while Alice
    sent 8 MB: past every kernel buffer, part of it waits in the server's
    backlog, with its flusher running. Returns (server, alice, raw)."""
    server = gunicorn({**UNLIMITED, **BIG_BACKLOG})
    alice = clients(server.url)
    alice.login("Alice")
    bob = clients(server.url)
    bob.login("Bob")
    raw = RawWebSocket(server.port, rcvbuf=4096)
    raw.open_session({"username": "Slow"})
    alice.wait_for("user joined", lambda d: d["username"] == "Slow")
    for i in range(BURST):
        alice.say(f"{i:04d} {FILLER}")
    alice.say("last")
    bob.wait_for("new message", lambda m: m["message"] == "last", timeout=30)
    assert gauges(server.url)["chat_websocket_flushers"] >= 1
    return server, alice, raw


def test_burst_larger_than_the_socket_buffer_arrives_whole_and_in_order(behind):
    server, alice, reader = behind
    texts = chat_messages(reader, BURST + 1)
    assert [t[:4] for t in texts[:-1]] == [f"{i:04d}" for i in range(BURST)]
    assert texts[-1] == "last"
    wait_until(
        lambda: gauges(server.url)["chat_websocket_flushers"] == 0,
        10,
        "the flusher to finish",
    )
    # Past the backlog, writes go direct again, still in order.
    alice.say("after")
    assert chat_messages(reader, 1) == ["after"]


def test_close_during_a_flush_sends_the_backlog_then_the_close(behind):
    server, alice, leaver = behind
    leaver.send_text("1")  # engine.io CLOSE while the backlog is in flight
    alice.wait_for("user left", lambda d: d["username"] == "Slow")
    # Every frame still parses: the backlog, whole and in order, then the
    # close frame, then the end of the connection.
    texts = []
    while True:
        opcode, payload = leaver.recv_frame()
        if opcode == 8:
            break
        text = payload.decode()
        if text.startswith('42["new message"'):
            texts.append(json.loads(text[2:])[1]["message"])
    assert [t[:4] for t in texts[:-1]] == [f"{i:04d}" for i in range(BURST)]
    assert texts[-1] == "last"
    assert leaver.wait_closed(5) is None  # nothing after the close frame
    wait_until(
        lambda: gauges(server.url)["chat_websocket_flushers"] == 0,
        10,
        "the flusher to finish",
    )


def test_upgrade_from_polling_while_messages_flow_keeps_every_message_in_order(
    gunicorn, clients
):
    server = gunicorn(UNLIMITED)
    alice = clients(server.url)
    alice.login("Alice")
    sent = []
    stop = threading.Event()

    def talk():
        i = 0
        while not stop.is_set() and i < 2000:
            alice.say(f"n{i}")
            sent.append(f"n{i}")
            i += 1
            stop.wait(0.003)

    talker = threading.Thread(target=talk, daemon=True)
    talker.start()
    try:
        bob = ChatClient(server.url, transports=("polling", "websocket"))
        bob.login("Bob")
        wait_until(lambda: bob.sio.transport() == "websocket", 10, "Bob's upgrade")
        bob.wait_for("new message", timeout=10)
        count = len(bob.named("new message"))
        wait_until(
            lambda: len(bob.named("new message")) > count + 50,
            10,
            "messages after the upgrade",
        )
    finally:
        stop.set()
        talker.join(10)
    last = sent[-1]
    bob.wait_for("new message", lambda m: m["message"] == last, timeout=10)
    got = [int(m["message"][1:]) for m in bob.named("new message")]
    # From the first message Bob saw to the last one sent: none missing,
    # none twice, none out of order, across the switch of transport.
    assert got == list(range(got[0], int(last[1:]) + 1))
    bob.close()


def test_a_thousand_connections_leave_no_greenlet_or_descriptor_behind(gunicorn):
    server = gunicorn(UNLIMITED)
    baseline_fds = open_fds(server)
    before = gauges(server.url)
    sockets = []
    for i in range(1000):
        raw = RawWebSocket(server.port)
        raw.open_session()
        login = ["add user", f"u{i}", {"room": f"r{i // 10}"}]
        raw.send_text("42" + json.dumps(login))
        sockets.append(raw)
    for raw in sockets[-10:]:
        while not raw.recv_text().startswith('42["login"'):
            pass
    held = gauges(server.url)
    assert held["chat_open_connections"] >= 1000
    assert held["chat_engineio_sessions"] == 1000
    assert held["chat_logged_in_users"] == 1000
    for raw in sockets:
        raw.close()
    RawWebSocket.opened.clear()

    def released():
        now = gauges(server.url)
        return (
            now["chat_engineio_sessions"] == 0
            and now["chat_logged_in_users"] == 0
            and now["chat_websocket_flushers"] == 0
            and now["chat_open_connections"] <= before["chat_open_connections"]
        )

    wait_until(released, 30, "every connection to be released")
    # The worker's descriptors: listening socket, Redis-less, log files; a
    # few may be in flight (this test's own /metrics request).
    wait_until(lambda: open_fds(server) <= baseline_fds + 2, 10, "descriptors to close")
    assert "Traceback" not in server.log()


def test_pings_come_from_the_timer_and_a_client_that_answers_stays(gunicorn):
    server = gunicorn({"PING_INTERVAL_S": "1", "PING_TIMEOUT_S": "1"})
    alive = RawWebSocket(server.port)
    alive.open_session()
    silent = RawWebSocket(server.port, source="127.0.0.2")
    silent.open_session()
    pings = []
    while len(pings) < 4:  # about four seconds: past the silent one's window
        opcode, payload = alive.recv_frame()
        assert opcode == 1
        if payload == b"2":
            pings.append(time.monotonic())
            alive.send_text("3")
    # One ping per interval, not one per answer.
    assert all(b - a > 0.8 for a, b in zip(pings, pings[1:], strict=False))
    # The one that never answered was dropped within its ping window; the
    # one that did is still in session.
    silent.wait_closed(timeout=2)
    assert gauges(server.url)["chat_engineio_sessions"] == 1


def test_frames_sent_in_one_packet_with_the_upgrade_are_not_lost(gunicorn, clients):
    """The upgrade's probe is read through the HTTP handler's buffer; what
    came in the same TCP packet must survive the switch to direct reads."""
    server = gunicorn()
    alice = clients(server.url)
    alice.login("Alice")
    session = polling_session(server.url)
    sid = session.rsplit("sid=", 1)[1]
    raw = RawWebSocket(
        server.port, path=f"/socket.io/?EIO=4&transport=websocket&sid={sid}"
    )
    login = "42" + json.dumps(["add user", "Pip"])
    raw.sock.sendall(
        RawWebSocket.frame(b"2probe")
        + RawWebSocket.frame(b"5")
        + RawWebSocket.frame(login.encode())
    )
    assert raw.recv_text() == "3probe"
    while not (packet := raw.recv_text()).startswith('42["login"'):
        pass
    assert json.loads(packet[2:])[1]["numUsers"] == 2
    alice.wait_for("user joined", lambda d: d["username"] == "Pip")
    alice.say("hello Pip")
    assert chat_messages(raw, 1) == ["hello Pip"]
