"""Deploy with git push onto supervisord: smoke check, rolling restart, rollback.

One host serves the whole module (its first push builds the virtual
environment, which takes most of a minute); every test pushes its own
commits on top of whatever serves and asserts what a user or an operator
sees.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from deploy.procs import (
    ROOT,
    RedisServer,
    free_port,
    free_ports,
    http_get,
    wait_until,
)
from tests.support import Conversation

pytestmark = pytest.mark.e2e


def git(*args, cwd):
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


class Host:
    """A host made by ``deploy/host.py init``, and a clone that pushes to it."""

    def __init__(self, root, work, url, ports):
        self.root, self.work, self.url, self.ports = root, work, url, ports

    def ctl(self, *args):
        return subprocess.run(
            [str(self.root / "tools/bin/supervisorctl")]
            + ["-c", str(self.root / "supervisord.conf"), *args],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout

    def push(self):
        pushed = git("push", "deploy", "main", cwd=self.work)
        for line in pushed.stderr.splitlines():
            if "[deploy] serving" in line or "failed" in line:
                print(line.strip())  # push times, shown with pytest -s
        return pushed

    def commit(self, path, old, new, message):
        target = self.work / path
        text = target.read_text()
        assert old in text, f"{old!r} not in {path}"
        target.write_text(text.replace(old, new))
        assert git("commit", "-qam", message, cwd=self.work).returncode == 0

    def commit_broken_login(self):
        """A release whose login raises: the smoke check must refuse it."""
        self.commit(
            "chat/events/login.py",
            "    state = chat_state()\n",
            "    state = chat_state()\n    raise RuntimeError('typo')\n",
            "Break login",
        )

    def served(self):
        return (self.root / "current").resolve().name

    def main(self):
        return git("rev-parse", "main", cwd=self.root / "repo.git").stdout.strip()

    def set_env(self, key, value):
        env = self.root / "env"
        lines = [
            line
            for line in env.read_text().splitlines()
            if not line.startswith(f"{key}=")
        ]
        env.write_text("\n".join([*lines, f"{key}={value}"]) + "\n")


def new_host(base_dir, redis_url, settings=""):
    """``deploy/host.py init`` with two instances on ``redis_url`` (and
    ``settings``), and a clone of this repository that pushes to it."""
    root = base_dir / "host"
    subprocess.run(
        ["python3", str(ROOT / "deploy/host.py"), "init", str(root)],
        check=True,
        capture_output=True,
    )
    lb_port, base = free_port(), free_ports(2)
    (root / "env").write_text(
        f"INSTANCES=2\nBASE_PORT={base}\nLB_PORT={lb_port}\n"
        f"REDIS_URL={redis_url}\nSECRET_KEY=deploy-test\n"
        "PRESENCE_HEARTBEAT_S=1\nPRESENCE_TTL_S=3\n" + settings
    )
    work = base_dir / "work"
    git("clone", "-q", str(ROOT), str(work), cwd=base_dir)
    git("checkout", "-q", "-B", "main", cwd=work)
    git("remote", "add", "deploy", str(root / "repo.git"), cwd=work)
    git("config", "user.email", "test@example.invalid", cwd=work)
    git("config", "user.name", "Deploy Test", cwd=work)
    return Host(root, work, f"http://127.0.0.1:{lb_port}", [base, base + 1])


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    base_dir = tmp_path_factory.mktemp("deploy")
    redis_server = RedisServer(base_dir).start()
    deployed = new_host(base_dir, redis_server.url, "DEPLOY_READY_TIMEOUT_S=8\n")
    root = deployed.root
    first = deployed.push()
    assert first.returncode == 0, first.stderr
    assert "smoke check passed (two clients chatted)" in first.stderr
    assert "starting supervisord" in first.stderr
    balancer_answers(deployed)
    yield deployed
    deployed.ctl("shutdown")
    pid_file = root / "supervisord.pid"
    wait_until(lambda: not pid_file.exists(), 60, "supervisord to stop")
    redis_server.stop()


def balancer_answers(host) -> None:
    """Wait until the host's nginx answers: a push returns once the
    instances are ready, and supervisord may start nginx a moment later."""
    wait_until(lambda: http_get(host.url), 30, "the host's balancer to answer")


def page_title(url):
    page = requests.get(url, timeout=5).text
    return page.split("<title>")[1].split("</title>")[0]


def statuses(host):
    """{program: state} from ``supervisorctl status``."""
    return {
        line.split()[0]: line.split()[1]
        for line in host.ctl("status").splitlines()
        if line.strip()
    }


def instance_ready_at(url):
    try:
        return requests.get(f"{url}/readyz", timeout=2).ok
    except requests.RequestException:
        return False


def instance_ready(port):
    try:
        return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).ok
    except requests.RequestException:
        return False


def test_the_first_push_runs_every_process_under_supervisord(host):
    wait_until(lambda: statuses(host)["nginx"] == "RUNNING", 10, "nginx to run")
    assert statuses(host) == {
        f"chat-{host.ports[0]}": "RUNNING",
        f"chat-{host.ports[1]}": "RUNNING",
        "nginx": "RUNNING",
    }
    assert page_title(host.url) == "Socket.IO Chat"
    assert host.main() == host.served()
    health = requests.get(f"{host.url}/healthz", timeout=5).json()
    assert health["release"] == host.served()


def test_supervisord_restarts_a_killed_instance(host):
    port = host.ports[0]
    pid = int(host.ctl("pid", f"chat-{port}"))
    killed = time.monotonic()
    os.killpg(pid, signal.SIGKILL)
    wait_until(
        lambda: instance_ready(port) and statuses(host)[f"chat-{port}"] == "RUNNING",
        30,
        "supervisord to start the killed instance again",
    )
    print(f"kill -9 to serving again: {time.monotonic() - killed:.1f} s")
    assert int(host.ctl("pid", f"chat-{port}")) != pid


def nginx_in_group(group):
    """pids of nginx processes in process group ``group``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        if head.split("(", 1)[1] == "nginx" and int(tail.split()[2]) == group:
            found.append(int(stat.parent.name))
    return found


def test_a_load_balancer_killed_with_sigkill_comes_back_on_its_port(host, clients):
    """kill -9 of nginx's master leaves its worker holding the port: the
    nginx supervisord starts again must not fail to bind behind it."""
    pid = int(host.ctl("pid", "nginx"))
    assert nginx_in_group(pid), "nginx's worker runs in its master's group"
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: (
            statuses(host)["nginx"] == "RUNNING"
            and int(host.ctl("pid", "nginx")) != pid
        ),
        30,
        "supervisord to start nginx again",
    )
    wait_until(lambda: not nginx_in_group(pid), 10, "the old worker to be gone")
    wait_until(lambda: instance_ready_at(host.url), 20, "nginx to answer again")
    user = clients(host.url, auth={"username": "Lb"})
    assert user.wait_for("login")["numUsers"] >= 1
    errors = (host.root / "nginx" / "nginx-error.log").read_text()
    assert "Address already in use" not in errors


def test_a_push_rolls_one_instance_at_a_time_applies_env_and_nobody_notices(
    host, clients
):
    before = host.served()
    talk = Conversation(clients, host.url)
    host.set_env("MAX_MESSAGE_CHARS", "24")
    host.commit(
        "templates/index.html",
        "<title>Socket.IO Chat",
        "<title>Socket.IO Chat, next",
        "Next title",
    )
    with talk:
        pushed = host.push()
        assert pushed.returncode == 0, pushed.stderr
    for port in host.ports:
        assert f"restarting the instance on {port}" in pushed.stderr
    assert page_title(host.url).startswith("Socket.IO Chat, next")
    assert host.served() != before and host.served() == host.main()
    talk.assert_nothing_lost()
    # The changed env is what the instances run with now.
    user = clients(host.url, auth={"username": "Dave"})
    user.wait_for("login")
    user.say("x" * 25)
    assert "24" in user.wait_for("chat error")["message"]


def test_a_push_costs_stock_clients_a_moment_and_no_message(host):
    """Two stock Node socket.io clients (websocket, reconnection 200 ms to
    1 s) send a message every 200 ms through nginx while a push restarts
    both instances: each is offline at most 3 s at a time, and every
    message is acknowledged. A handshake answered 101 by a draining
    instance and then closed used to hang each for socket.io's 20 s.

    A draining instance answers every event it has read, and those already
    waiting in its socket, before it closes a connection. What is still
    on the wire when the connection closes cannot be answered: the stock
    client then fails that emit at once ("socket has been disconnected"),
    so its sender knows. At most one such message per move, and never a
    message left without an answer."""
    runs = [
        subprocess.Popen(
            ["node", str(ROOT / "tests/node/through_a_deploy.js"), host.url, who, "20"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for who in ("stock-a", "stock-b")
    ]
    try:
        for run in runs:
            assert "loggedIn" in json.loads(run.stdout.readline())
        host.commit(
            "templates/index.html",
            "<title>Socket.IO Chat",
            "<title>Socket.IO Chat, once more",
            "Another title",
        )
        pushed = host.push()
        assert pushed.returncode == 0, pushed.stderr
        results = [json.loads(run.communicate(timeout=60)[0]) for run in runs]
    finally:
        for run in runs:
            run.kill()
    for result in results:
        print(result)
        assert result["offline"], "the push did not move this client"
        assert max(result["offline"]) <= 3.0, result
        refused = result["refused"]
        assert set(refused) <= {"disconnected"}, result
        assert result["acked"] + refused.get("disconnected", 0) == result["sent"]
        assert refused.get("disconnected", 0) <= len(result["offline"]), result


def test_a_release_whose_login_raises_is_refused_by_the_smoke_check(host, clients):
    serving = host.served()
    host.commit_broken_login()
    try:
        refused = host.push()
        assert refused.returncode != 0
        assert "build failed: smoke check, two clients cannot chat" in refused.stderr
        assert "pre-receive hook declined" in refused.stderr
        assert host.served() == serving == host.main()
        user = clients(host.url, auth={"username": "Carol"})
        assert user.wait_for("login")["numUsers"] >= 1
    finally:
        git("reset", "-q", "--hard", "HEAD~1", cwd=host.work)


def test_settings_that_cannot_work_refuse_the_push_with_one_line(host):
    """Two instances without Redis would be two chats that cannot see each
    other: refused before anything is built, and nothing is left behind."""
    serving = host.served()
    redis_url = next(
        line.split("=", 1)[1]
        for line in (host.root / "env").read_text().splitlines()
        if line.startswith("REDIS_URL=")
    )
    host.set_env("REDIS_URL", "")
    assert git("commit", "-q", "--allow-empty", "-m", "Empty", cwd=host.work)
    pushed = git("rev-parse", "HEAD", cwd=host.work).stdout.strip()
    try:
        refused = host.push()
        assert refused.returncode != 0
        assert "[deploy] refused: INSTANCES=2 needs REDIS_URL" in refused.stderr
        assert host.served() == serving
        assert not (host.root / "releases" / pushed).exists()
    finally:
        host.set_env("REDIS_URL", redis_url)
        git("reset", "-q", "--hard", "HEAD~1", cwd=host.work)


def test_a_release_not_ready_after_switching_is_rolled_back(host, clients):
    serving = host.served()
    talk = Conversation(clients, host.url)
    # Passes the smoke check on a spare port; never ready on the second
    # instance's port, so the deploy must undo the first instance's switch.
    line = "        self.TESTING = False\n"
    host.commit(
        "chat/config.py",
        line,
        line + f'        if os.environ.get("PORT") == "{host.ports[1]}":\n'
        "            self.READY_MAX_FAILURES_PER_MIN = -1\n",
        "Never ready on one port",
    )
    try:
        with talk:
            refused = host.push()
        assert refused.returncode != 0
        assert f"the instance on {host.ports[1]} was not ready" in refused.stderr
        assert "serves again" in refused.stderr
        assert host.served() == serving == host.main()
        for port in host.ports:
            health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            assert health.json()["release"] == serving
        talk.assert_nothing_lost()
    finally:
        git("reset", "-q", "--hard", "HEAD~1", cwd=host.work)


def test_rollback_serves_the_previous_release_and_moves_main(host):
    newest = host.served()
    host.commit("README.md", "# Socket.IO chat", "# Socket.IO chat  ", "Touch again")
    assert host.push().returncode == 0
    pushed = host.served()
    assert pushed != newest
    rolled = subprocess.run(
        ["python3", str(host.root / "current/deploy/host.py"), "rollback"]
        + [str(host.root)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert f"rolling back to {newest[:12]}" in rolled.stdout
    assert host.served() == newest == host.main()
    for port in host.ports:
        health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.json()["release"] == newest
    # The next push builds on what serves.
    git("reset", "-q", "--hard", newest, cwd=host.work)
    host.commit("README.md", "# Socket.IO chat", "# Socket.IO chat   ", "Fix forward")
    assert host.push().returncode == 0
