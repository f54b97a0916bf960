"""``make cluster``: the deployed host's supervisord configuration, locally."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from deploy.procs import ROOT, free_ports, wait_until

pytestmark = pytest.mark.e2e


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return False
    return True


def ctl(workdir, *args):
    return subprocess.run(
        [str(ROOT / ".venv/bin/supervisorctl"), "-c", str(workdir / "supervisord.conf")]
        + list(args),
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout


def ready(url):
    try:
        return requests.get(f"{url}/readyz", timeout=2).ok
    except requests.RequestException:
        return False


def make_cluster(port: int, workdir, *options: str) -> subprocess.Popen:
    """``make cluster`` with two instances, its output on a pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "deploy.cluster", "--instances", "2", *options]
        + ["--port", str(port), "--workdir", str(workdir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def test_a_killed_instance_fails_over_is_restarted_and_ctrl_c_stops_all(
    tmp_path, clients
):
    port = free_ports(3)
    workdir = tmp_path / "cluster"
    proc = make_cluster(port, workdir)
    try:
        lb = f"http://127.0.0.1:{port}"
        wait_until(lambda: ready(lb), 60, "make cluster to serve")
        alice = clients(lb, auth={"username": "Alice"}, reconnection=True, resume=True)
        alice.wait_for("login")
        bob = clients(lb, auth={"username": "Bob"})
        bob.wait_for("login")
        # The session id names Alice's instance (ROUTE_ID "p<port>").
        home = int(alice.sio.eio.sid.split(".")[0][1:])
        assert home in (port + 1, port + 2)
        pid = int(ctl(workdir, "pid", f"chat-{home}"))
        killed = time.monotonic()
        os.killpg(pid, signal.SIGKILL)
        # Failover: Alice is back, under her name, on the other instance...
        wait_until(lambda: len(alice.named("login")) == 2, 20, "Alice to log in again")
        bob.say("after the kill")
        alice.wait_for("new message", lambda m: m["message"] == "after the kill")
        # ...and supervisord started the killed one again.
        wait_until(
            lambda: (
                ready(f"http://127.0.0.1:{home}")
                and f"chat-{home}" in ctl(workdir, "status")
                and "RUNNING" in ctl(workdir, "status", f"chat-{home}")
            ),
            30,
            "supervisord to restart the instance",
        )
        print(f"kill -9 to serving again: {time.monotonic() - killed:.1f} s")
        assert int(ctl(workdir, "pid", f"chat-{home}")) != pid
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        output = proc.communicate(timeout=90)[0]
    assert proc.returncode == 0, output
    assert "stopping" in output
    for p in (port, port + 1, port + 2):
        assert not listening(p), f"port {p} still served after Ctrl-C"
    assert not (workdir / "supervisord.pid").exists()
    left = subprocess.run(
        ["pgrep", "-f", str(workdir)], capture_output=True, text=True
    ).stdout.split()
    assert left == [], f"processes left running: {left}"


def test_a_cluster_whose_ports_are_taken_says_so_and_does_not_start(tmp_path):
    """Another cluster on the ports: fail with the reason, never report
    someone else's cluster as this one."""
    base = free_ports(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base + 1))
        taken.listen()
        started = subprocess.run(
            [sys.executable, "-m", "deploy.cluster", "--instances", "2"]
            + ["--port", str(base), "--workdir", str(tmp_path / "c")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert started.returncode != 0
    assert f"port {base + 1} is in use" in started.stdout
    assert "CLUSTER_PORT=" in started.stdout
    assert "chat cluster of" not in started.stdout


def test_redis_cluster_mode_survives_a_killed_master(tmp_path, clients):
    """``make cluster REDIS_CLUSTER=1``: three masters and three replicas
    under supervisord; the README's kill of a master is followed by its
    replica, and the chat goes on through nginx."""
    port = free_ports(3)
    workdir = tmp_path / "cluster"
    proc = make_cluster(port, workdir, "--redis-cluster")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        lb = f"http://127.0.0.1:{port}"
        # The cluster formed (every master's replica in sync), as it says.
        wait_until(lambda: "Kill a Redis master" in "".join(lines), 90, "the banner")
        wait_until(lambda: ready(lb), 30, "make cluster to serve")
        assert requests.get(f"{lb}/readyz", timeout=5).json()["mode"] == "cluster"
        alice = clients(lb, auth={"username": "Alice"})
        alice.wait_for("login")
        bob = clients(lb, auth={"username": "Bob"})
        bob.wait_for("login")
        bob.say("before the kill")
        alice.wait_for("new message", lambda m: m["message"] == "before the kill")

        import redis

        nodes = [
            line.split()[0]
            for line in ctl(workdir, "status").splitlines()
            if line.startswith("redis-node-")
        ]
        password = (workdir / "env").read_text().split(":", 3)[2].split("@")[0]
        masters = [
            n
            for n in nodes
            if redis.Redis(port=int(n.rsplit("-", 1)[1]), password=password).info(
                "replication"
            )["role"]
            == "master"
        ]
        assert len(nodes) == 6 and len(masters) == 3
        for master in masters[:1]:
            ctl(workdir, "signal", "KILL", master)
        wait_until(
            lambda: (
                sum(
                    1
                    for n in set(nodes) - {masters[0]}
                    if redis.Redis(
                        port=int(n.rsplit("-", 1)[1]), password=password
                    ).info("replication")["role"]
                    == "master"
                )
                == 3
            ),
            30,
            "a replica to take over",
        )
        wait_until(
            lambda: bob.sio.call("new message", "after the kill", timeout=5).get("id"),
            30,
            "a message to be stored after the failover",
        )
        alice.wait_for("new message", lambda m: m["message"] == "after the kill")
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        proc.wait(90)
        reader.join(10)
        proc.stdout.close()
    assert proc.returncode == 0, "".join(lines)
    left = subprocess.run(
        ["pgrep", "-f", str(workdir)], capture_output=True, text=True
    ).stdout.split()
    assert left == [], f"processes left running: {left}"
