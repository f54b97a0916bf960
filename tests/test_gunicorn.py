"""The real server: gunicorn with the gevent-websocket worker, real clients."""

import os
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from deploy.procs import Instance, free_port
from tests.support import polling_session, presence

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("transports", [("websocket",), ("polling",)])
def test_conversation_end_to_end_over_each_transport(gunicorn, clients, transports):
    server = gunicorn()
    alice = clients(server.url, transports=transports)
    bob = clients(server.url, transports=transports)
    assert alice.login("Alice")["numUsers"] == 1
    assert bob.login("Bob")["numUsers"] == 2
    alice.wait_for(
        "user joined", lambda d: presence(d) == {"username": "Bob", "numUsers": 2}
    )

    alice.sio.emit("typing")
    bob.wait_for("typing", lambda d: presence(d) == {"username": "Alice"})
    alice.sio.emit("stop typing")
    bob.wait_for("stop typing", lambda d: presence(d) == {"username": "Alice"})
    alice.say("hello over " + transports[0])
    message = bob.wait_for("new message")
    assert (message["username"], message["message"]) == (
        "Alice",
        "hello over " + transports[0],
    )

    bob.close()
    alice.wait_for(
        "user left", lambda d: presence(d) == {"username": "Bob", "numUsers": 1}
    )
    assert alice.named("new message") == []


def test_sigterm_stops_gunicorn_cleanly_and_tells_clients(gunicorn, clients):
    server = gunicorn()
    alice = clients(server.url)
    alice.login("Alice")
    assert server.terminate(timeout=15) == 0
    alice.wait_for("disconnect")
    assert "Traceback" not in server.log()
    assert "graceful timeout" not in server.log()


def test_sigterm_stops_the_instance_at_once_not_at_gunicorns_next_check(
    gunicorn, clients
):
    """gunicorn's gevent worker looks at its stop flag once a second, so a
    stop used to wait up to a second (twice, with connections open) on
    nothing; every instance of a rolling deploy paid it. Ours wakes on the
    signal. Three stops, a user logged in at each: within 0.6 s each (about
    0.25 s here; gunicorn's loop took 0.25 to 1.25 s)."""
    for _ in range(3):
        server = gunicorn()
        alice = clients(server.url)
        alice.login("Alice")
        started = time.monotonic()
        assert server.terminate(timeout=15) == 0
        assert time.monotonic() - started < 0.6
        alice.wait_for("disconnect")
        assert "graceful timeout" not in server.log()


def test_huge_frame_closes_only_that_connection(gunicorn, clients):
    server = gunicorn({"MAX_HTTP_BUFFER_BYTES": "10000"})
    alice = clients(server.url)
    bob = clients(server.url)
    alice.login("Alice")
    bob.login("Bob")
    bob.say("x" * 20000)
    bob.wait_for("disconnect")
    carol = clients(server.url)
    assert carol.login("Carol")["numUsers"] == 2
    alice.wait_for("user left", lambda d: d["username"] == "Bob")


@pytest.mark.parametrize("garbage", ['42["new message",', "42[[[[[[[[["])
def test_malformed_packet_gets_a_chat_error_and_others_carry_on(
    gunicorn, clients, garbage
):
    server = gunicorn()
    alice = clients(server.url)
    bob = clients(server.url)
    alice.login("Alice")
    bob.login("Bob")
    session = polling_session(server.url)
    assert requests.post(session, data=garbage, timeout=5).status_code == 200
    reply = requests.get(session, timeout=5).text
    assert reply.startswith('42["chat error"') and "malformed_packet" in reply
    alice.say("still chatting")
    assert bob.wait_for("new message")["message"] == "still chatting"
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("garbage", ["4}{", "4x"])
def test_unparsable_socketio_packet_closes_only_that_session(
    gunicorn, clients, garbage
):
    server = gunicorn()
    alice = clients(server.url)
    alice.login("Alice")
    session = polling_session(server.url)
    requests.post(session, data=garbage, timeout=5)
    assert requests.get(session, timeout=5).status_code == 400
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
    assert alice.sio.connected
    assert "Traceback" not in server.log()
    assert server.terminate(timeout=15) == 0
    assert "graceful timeout" not in server.log()


def test_polling_session_upgrades_to_websocket_as_browsers_do(gunicorn, clients):
    server = gunicorn()
    alice = clients(server.url, transports=("polling", "websocket"))
    bob = clients(server.url, transports=("polling", "websocket"))
    assert alice.sio.transport() == "websocket"
    alice.login("Alice")
    bob.login("Bob")
    alice.say("upgraded")
    assert bob.wait_for("new message")["message"] == "upgraded"


def test_descriptor_limit_is_raised_to_hold_worker_connections(tmp_path):
    """Started with the common soft limit of 1024 open files, the worker can
    still hold WORKER_CONNECTIONS websockets (20,000 by default)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = 65536 if hard == resource.RLIM_INFINITY else hard

    class SoftLimited(Instance):
        def start(self):
            gunicorn = str(self.python_bin / "gunicorn")
            self._spawn(
                ["prlimit", f"--nofile=1024:{hard}", gunicorn, "-c", "gunicorn.conf.py"]
                + ["wsgi:app"],
                env=self.env,
                cwd=self.cwd,
            )
            self.wait_healthy()
            return self

    server = SoftLimited(free_port(), tmp_path).start()
    try:
        [pid] = server.worker_pids()
        limits = Path(f"/proc/{pid}/limits").read_text()
        [line] = [x for x in limits.splitlines() if x.startswith("Max open files")]
        soft = int(line.split()[3])
        assert soft >= min(20000 + 1024, hard)
    finally:
        server.stop()


def test_ctrl_c_stops_the_server_quietly(gunicorn, clients):
    """Ctrl-C on ``make run`` reaches the master and the worker (one process
    group): both stop within seconds, without a traceback."""
    server = gunicorn()
    clients(server.url).login("Alice")
    os.killpg(server.proc.pid, signal.SIGINT)
    assert server.proc.wait(10) == 0
    log = server.log()
    assert "Traceback" not in log and "SystemExit" not in log


def test_gunicorns_own_tls_is_refused_at_start_with_one_line(tmp_path):
    """The websocket transport uses the native socket, which under
    gunicorn's TLS carries the encrypted bytes: every websocket would close
    at its first frame. The instance says so and stops instead."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes"]
        + ["-keyout", str(key), "-out", str(cert), "-days", "1"]
        + ["-subj", "/CN=127.0.0.1"],
        check=True,
        capture_output=True,
    )
    args = f"--certfile {cert} --keyfile {key}"
    server = Instance(free_port(), tmp_path, {"GUNICORN_CMD_ARGS": args})
    server.start(wait=False)
    try:
        assert server.proc.wait(30) == 3
        assert "cannot start: gunicorn's TLS (certfile) is not supported" in (
            server.log()
        )
    finally:
        server.stop()
