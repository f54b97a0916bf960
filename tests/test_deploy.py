"""Deploy with git push: build, smoke check, rolling restart, refused bad builds."""

import os
import signal
import subprocess

import pytest
import requests

from deploy.procs import ROOT, free_port, wait_until

pytestmark = pytest.mark.e2e


def git(*args, cwd):
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def host(tmp_path, redis_server):
    """A host made by ``deploy/host.py init``: two instances, a private Redis."""
    root = tmp_path / "host"
    subprocess.run(
        ["python3", str(ROOT / "deploy/host.py"), "init", str(root)],
        check=True,
        capture_output=True,
    )
    lb_port, base = free_port(), free_port()
    # Two adjacent free ports for the instances.
    while not all(_free(p) for p in (base, base + 1)):
        base = free_port()
    (root / "env").write_text(
        f"INSTANCES=2\nBASE_PORT={base}\nLB_PORT={lb_port}\n"
        f"REDIS_URL={redis_server.url}\nSECRET_KEY=deploy-test\n"
        "PRESENCE_HEARTBEAT_S=1\nPRESENCE_TTL_S=3\n"
    )
    yield root, f"http://127.0.0.1:{lb_port}"
    pid_file = root / "supervisor.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pid_file.exists(), 60, "the supervisor to stop")


def _free(port):
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def work(tmp_path, host):
    """A clone of this project's HEAD with the host as remote ``deploy``."""
    root, _ = host
    clone = tmp_path / "work"
    git("clone", "-q", str(ROOT), str(clone), cwd=tmp_path)
    git("checkout", "-q", "-B", "main", cwd=clone)
    git("remote", "add", "deploy", str(root / "repo.git"), cwd=clone)
    git("config", "user.email", "test@example.invalid", cwd=clone)
    git("config", "user.name", "Deploy Test", cwd=clone)
    return clone


def commit_change(clone, path, old, new, message):
    target = clone / path
    target.write_text(target.read_text().replace(old, new))
    git("commit", "-qam", message, cwd=clone)


def page_title(url):
    page = requests.get(url, timeout=5).text
    return page.split("<title>")[1].split("</title>")[0]


def test_push_deploys_then_rolls_to_a_new_release_without_losing_the_room(
    host, work, clients
):
    root, url = host
    first = git("push", "-q", "deploy", "main", cwd=work)
    assert first.returncode == 0, first.stderr
    assert "smoke check passed" in first.stderr
    assert page_title(url) == "Socket.IO Chat"

    alice = clients(url, auth={"username": "Alice"}, reconnection=True)
    alice.wait_for("login")
    bob = clients(url, auth={"username": "Bob"}, reconnection=True)
    bob.wait_for("login", lambda d: d["numUsers"] == 2)

    commit_change(
        work,
        "templates/index.html",
        "<title>Socket.IO Chat</title>",
        "<title>Socket.IO Chat, second release</title>",
        "New title",
    )
    second = git("push", "-q", "deploy", "main", cwd=work)
    assert second.returncode == 0, second.stderr
    assert "rolling restart" in second.stderr
    assert page_title(url) == "Socket.IO Chat, second release"

    # Both users were moved off the old instances and are back in the room.
    wait_until(
        lambda: alice.sio.connected and bob.sio.connected,
        20,
        "both clients to be connected after the switch",
    )
    bob.sio.emit("new message", "after the switch")
    message = alice.wait_for(
        "new message", lambda d: d["message"] == "after the switch", timeout=20
    )
    assert message["username"] == "Bob"


def test_push_with_a_broken_build_is_refused_and_the_old_release_serves(host, work):
    root, url = host
    assert git("push", "-q", "deploy", "main", cwd=work).returncode == 0
    commit_change(
        work,
        "wsgi.py",
        "app = create_app()",
        'raise RuntimeError("broken on purpose")',
        "Break the app",
    )
    refused = git("push", "deploy", "main", cwd=work)
    assert refused.returncode != 0
    assert "build failed: smoke check" in refused.stderr
    assert "pre-receive hook declined" in refused.stderr
    assert page_title(url) == "Socket.IO Chat"
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
