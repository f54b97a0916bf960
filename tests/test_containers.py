"""The chat as containers, with a real container engine (Podman): the image,
two containers through one Redis, a drain on ``podman stop``, the health
check, a bad setting, compose.yaml and the Kubernetes manifests.

No registry is reachable here: the image's base is made with mmdebstrap
(deploy/containers.py), as the Dockerfile's ``BASE`` allows.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time

import pytest
import yaml

from deploy import containers
from deploy.procs import ROOT, RedisServer, free_port, http_get, wait_until
from tests.support import Conversation

pytestmark = pytest.mark.e2e


def podman(*args, **kwargs):
    return containers.podman(*args, **kwargs)


@pytest.fixture(scope="module")
def image():
    started = time.monotonic()
    containers.base_image()
    based = time.monotonic()
    tag = containers.build(ROOT, "localhost/chat:test")
    built = time.monotonic()
    print(
        f"base image {based - started:.0f} s, chat image {built - based:.0f} s, "
        f"{containers.image_size_mb(tag):.0f} MB"
    )
    return tag


@pytest.fixture
def run_container(image):
    """``run_container(port, **env)``: the image on the host's network."""
    names = []

    def run(port, detach=True, **env):
        name = f"chat-test-{port}"
        names.append(name)
        podman("rm", "--force", name, check=False)
        settings = {"PORT": str(port), "HOST": "127.0.0.1", **env}
        args = ["run", "--name", name, "--network", "host"]
        args += [f"--env={k}={v}" for k, v in settings.items()]
        if detach:
            podman(*args, "--detach", image)
            wait_until(
                lambda: ready(f"http://127.0.0.1:{port}"), 30, f"container {name}"
            )
            return name
        return podman(*args, image, check=False, timeout=60)

    yield run
    for name in names:
        podman("rm", "--force", "--time", "5", name, check=False)


def ready(url):
    answer = http_get(f"{url}/readyz")
    return answer is not None and answer.status_code == 200


def test_the_image_is_small_runs_as_a_user_and_holds_no_build_tools(image):
    size = containers.image_size_mb(image)
    assert size < 260, f"{size:.0f} MB"
    found = podman(
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        image,
        "-c",
        "id -u; for t in gcc cc npm node pip git; do command -v $t; done; "
        "ls /opt/chat/app",
    ).stdout.split()
    assert found[0] == "10001"
    assert found[1:] == sorted(
        ["chat", "gunicorn.conf.py", "pyproject.toml", "static", "templates", "wsgi.py"]
    )
    inspected = json.loads(podman("image", "inspect", image).stdout)[0]
    assert inspected["Config"]["User"] == "10001:10001"
    assert inspected["Healthcheck"]["Test"][0] == "CMD"
    assert "/healthz" in " ".join(inspected["Healthcheck"]["Test"])


def test_two_containers_chat_across_one_redis(tmp_path, run_container, clients):
    redis_server = RedisServer(tmp_path).start()
    try:
        ports = [free_port(), free_port()]
        settings = {"REDIS_URL": redis_server.url, "SECRET_KEY": "containers"}
        for port in ports:
            run_container(port, **settings)
        ann = clients(f"http://127.0.0.1:{ports[0]}", auth={"username": "Ann"})
        assert ann.wait_for("login")["numUsers"] == 1
        bo = clients(f"http://127.0.0.1:{ports[1]}", auth={"username": "Bo"})
        assert bo.wait_for("login")["numUsers"] == 2
        assert ann.wait_for("user joined")["username"] == "Bo"
        ann.say("hello from the first container")
        got = bo.wait_for("new message")
        assert got["username"] == "Ann"
        assert got["message"] == "hello from the first container"
    finally:
        redis_server.stop()


def test_podman_stop_drains_to_the_other_container_and_loses_nothing(
    tmp_path, run_container, nginx, clients
):
    redis_server = RedisServer(tmp_path).start()
    try:
        ports = [free_port(), free_port()]
        settings = {
            "REDIS_URL": redis_server.url,
            "SECRET_KEY": "containers",
            "TRUSTED_PROXIES": "127.0.0.1",
            "PRESENCE_HEARTBEAT_S": "1",
            "PRESENCE_TTL_S": "3",
        }
        names = [run_container(port, **settings) for port in ports]

        class Ports:  # what the nginx fixture reads of an instance
            def __init__(self, port):
                self.port = port

        balancer = nginx([Ports(p) for p in ports])
        talk = Conversation(clients, balancer.url)
        with talk:
            wait_until(lambda: len(talk.acked) >= 5, 20, "messages before the stop")
            stopped = podman("stop", "--time", "30", names[0], timeout=60)
            assert stopped.returncode == 0
            wait_until(lambda: len(talk.acked) > 20, 20, "messages after the stop")
        state = json.loads(podman("inspect", names[0]).stdout)[0]["State"]
        assert state["ExitCode"] == 0, "the drain ended the process cleanly"
        talk.assert_nothing_lost()
    finally:
        redis_server.stop()


def test_the_health_check_turns_healthy(run_container):
    name = run_container(free_port(), SECRET_KEY="containers")
    checked = podman("healthcheck", "run", name, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    health = json.loads(podman("inspect", name).stdout)[0]["State"]["Health"]
    assert health["Status"] == "healthy"


def test_a_bad_setting_stops_the_container_with_its_one_line(run_container):
    result = run_container(free_port(), detach=False, MAX_ROOMS="-1")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "cannot start: MAX_ROOMS='-1': expected a whole number" in output
    assert "Traceback" not in output


def test_compose_brings_up_a_cluster_that_chats_through_its_load_balancer(
    image, tmp_path, clients
):
    redis_image = containers.service_image("localhost/chat-redis:test", "redis-server")
    nginx_image = containers.service_image("localhost/chat-nginx:test", "nginx-light")
    port = free_port()
    env = {
        **containers.env(),
        "REDIS_PASSWORD": "compose-secret",
        "SECRET_KEY": "compose",
        "CHAT_PORT": str(port),
        "CHAT_IMAGE": image,
        "REDIS_IMAGE": redis_image,
        "NGINX_IMAGE": nginx_image,
        "CHAT_REPLICAS": "2",
    }
    compose = [str(ROOT / ".venv/bin/podman-compose"), "-p", f"chat{port}"]
    compose += ["-f", str(ROOT / "compose.yaml")]

    def run(*args, timeout=300):
        return subprocess.run(
            [*compose, *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    started = time.monotonic()
    try:
        up = run("up", "--detach", "--no-build")
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        url = f"http://localhost:{port}"
        wait_until(lambda: ready(url), 60, "the chat through compose's nginx")
        ann = clients(url, auth={"username": "Ann"})
        assert ann.wait_for("login")["numUsers"] == 1
        bo = clients(url, auth={"username": "Bo"}, transports=("polling",))
        assert bo.wait_for("login")["numUsers"] == 2
        ann.say("through compose")
        assert bo.wait_for("new message")["message"] == "through compose"
        print(f"compose up to the first message: {time.monotonic() - started:.0f} s")
        listed = podman("ps", "--format", "{{.Names}}").stdout.split()
        assert len([n for n in listed if n.startswith(f"chat{port}_chat_")]) == 2
        # /metrics is not public through the load balancer.
        assert http_get(f"{url}/metrics").status_code == 404
    finally:
        down = run("down", "--volumes", "--timeout", "30")
        assert down.returncode == 0, down.stderr[-2000:]


def kube_for_podman(tmp_path, image, redis_url, port):
    """The manifests as Podman can play them: host network, the local image,
    the Secret's values; probes off (Podman runs an httpGet probe as curl
    inside the container, which a slim image lacks: the endpoints are
    tested on their own)."""
    docs = []
    for name in ("configmap.yaml", "secret.example.yaml", "deployment.yaml"):
        docs += list(
            yaml.safe_load_all((ROOT / "deploy/kubernetes" / name).read_text())
        )
    for doc in docs:
        if doc["kind"] == "Secret":
            # Podman 4.3 cannot read back a Secret it made from YAML: it goes
            # in as a Podman secret, a JSON map of base64 values, which is
            # what an envFrom secretRef reads.
            values = {"REDIS_URL": redis_url, "SECRET_KEY": "kube"}
            secret = tmp_path / "secret.json"
            secret.write_text(
                json.dumps(
                    {
                        k: base64.b64encode(v.encode()).decode()
                        for k, v in values.items()
                    }
                )
            )
            podman("secret", "rm", doc["metadata"]["name"], check=False)
            podman("secret", "create", doc["metadata"]["name"], str(secret))
        if doc["kind"] == "ConfigMap":
            doc["data"]["ALLOWED_HOSTS"] = "127.0.0.1,localhost"
        if doc["kind"] == "Deployment":
            doc["spec"]["replicas"] = 1
            pod = doc["spec"]["template"]["spec"]
            pod["hostNetwork"] = True
            (container,) = pod["containers"]
            container["image"] = image
            container["imagePullPolicy"] = "Never"
            container.pop("ports")  # no port mappings on the host's network
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                container.pop(probe)
            container.pop("lifecycle")
            container["env"] = [
                {"name": "PORT", "value": str(port)},
                {"name": "HOST", "value": "127.0.0.1"},
            ]
    path = tmp_path / "kube.yaml"
    path.write_text(yaml.safe_dump_all([d for d in docs if d["kind"] != "Secret"]))
    return path


def test_the_kubernetes_manifests_are_valid_and_their_pod_chats(
    image, tmp_path, clients
):
    manifests = sorted(
        p
        for p in (ROOT / "deploy/kubernetes").glob("*.yaml")
        if p.name != "kustomization.yaml"
    )
    checked = subprocess.run(
        [str(ROOT / ".venv/bin/kubernetes-validate"), "--strict", "--quiet"]
        + [str(p) for p in manifests],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # HTTPRoute is a CRD (Gateway API): no schema in the tool, a warning only.
    assert checked.returncode == 0, checked.stdout + checked.stderr
    redis_server = RedisServer(tmp_path).start()
    port = free_port()
    kube = kube_for_podman(tmp_path, image, redis_server.url, port)
    try:
        played = podman("kube", "play", str(kube), check=False, timeout=180)
        assert played.returncode == 0, played.stdout + played.stderr
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: ready(url), 60, "the Deployment's pod")
        user = clients(url, auth={"username": "Kube"})
        assert user.wait_for("login")["numUsers"] == 1
        # The pod runs as the manifest's user, without privileges.
        (pod,) = [
            n
            for n in podman("ps", "--format", "{{.Names}}").stdout.split()
            if n.startswith("chat-pod-") and n.endswith("-chat")
        ]
        assert podman("exec", pod, "id", "-u").stdout.strip() == "10001"
    finally:
        podman("kube", "down", str(kube), check=False, timeout=120)
        podman("secret", "rm", "chat", check=False)
        redis_server.stop()
