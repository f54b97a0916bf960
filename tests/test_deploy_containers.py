"""Deploy with git push into containers (MODE=containers): every push builds
an image with Podman, smoke-checks a container of it and replaces the
containers one at a time; the same promises as the process mode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from deploy import containers
from deploy.procs import RedisServer, wait_until
from tests.support import Conversation
from tests.test_deploy import (
    balancer_answers,
    git,
    instance_ready,
    new_host,
    page_title,
)

pytestmark = pytest.mark.e2e


def container_pid(port):
    found = containers.podman(
        "inspect", "--format", "{{.State.Pid}}", f"chat-{port}", check=False
    )
    return int(found.stdout.strip() or 0)


def image_of_container(port):
    found = containers.podman("inspect", f"chat-{port}", check=False)
    return json.loads(found.stdout)[0]["ImageName"] if found.returncode == 0 else None


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    base_dir = tmp_path_factory.mktemp("deploy-containers")
    redis_server = RedisServer(base_dir).start()
    deployed = new_host(
        base_dir, redis_server.url, "MODE=containers\nDEPLOY_READY_TIMEOUT_S=20\n"
    )
    root = deployed.root
    started = time.monotonic()
    first = deployed.push()
    assert first.returncode == 0, first.stderr
    print(f"first push into containers: {time.monotonic() - started:.0f} s")
    assert "smoke check passed (two clients chatted)" in first.stderr
    balancer_answers(deployed)
    yield deployed
    subprocess.run(
        ["python3", str(root / "current/deploy/host.py"), "stop", str(root)],
        capture_output=True,
        timeout=180,
    )
    redis_server.stop()


def test_the_first_push_runs_a_container_per_instance(host, clients):
    for port in host.ports:
        assert image_of_container(port) == f"localhost/chat:{host.served()[:12]}"
        assert instance_ready(port)
    assert page_title(host.url) == "Socket.IO Chat"
    user = clients(host.url, auth={"username": "Cara"})
    assert user.wait_for("login")["numUsers"] >= 1


def test_a_push_replaces_the_containers_and_nobody_notices(host, clients):
    talk = Conversation(clients, host.url)
    host.commit(
        "templates/index.html",
        "<title>Socket.IO Chat",
        "<title>Socket.IO Chat, boxed",
        "Boxed title",
    )
    with talk:
        pushed = host.push()
        assert pushed.returncode == 0, pushed.stderr
    for port in host.ports:
        assert f"restarting the instance on {port}" in pushed.stderr
        assert image_of_container(port) == f"localhost/chat:{host.served()[:12]}"
    assert page_title(host.url).startswith("Socket.IO Chat, boxed")
    talk.assert_nothing_lost()


def test_a_release_that_cannot_log_in_is_refused_and_nothing_changes(host, clients):
    serving = host.served()
    host.commit_broken_login()
    try:
        refused = host.push()
        assert refused.returncode != 0
        assert "build failed: smoke check, two clients cannot chat" in refused.stderr, (
            refused.stderr
        )
        assert host.served() == serving == host.main()
        for port in host.ports:
            assert image_of_container(port) == f"localhost/chat:{serving[:12]}"
        user = clients(host.url, auth={"username": "Dan"})
        assert user.wait_for("login")["numUsers"] >= 1
    finally:
        git("reset", "-q", "--hard", "HEAD~1", cwd=host.work)


def test_a_killed_container_comes_back_by_itself(host):
    port = host.ports[0]
    pid = container_pid(port)
    assert pid > 0
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: container_pid(port) not in (0, pid) and instance_ready(port),
        60,
        "Podman to restart the killed container",
    )
