"""rediss://: a redis-server that speaks only TLS, with a CA the test makes."""

import subprocess

import pytest

from deploy.procs import RedisServer
from tests.conftest import CLUSTER_ENV

pytestmark = pytest.mark.e2e


@pytest.fixture
def tls_redis(tmp_path):
    """A TLS-only redis-server with a certificate signed by a fresh CA."""
    ca_key, ca, key, csr, cert = (
        tmp_path / name
        for name in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    san = tmp_path / "san.cnf"
    san.write_text("subjectAltName=IP:127.0.0.1\n")
    for argv in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", ca_key, "-out", ca, "-subj", "/CN=chat test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr]
        + ["-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial"]
        + ["-out", cert, "-days", "1", "-extfile", san],
    ):
        subprocess.run(["openssl", *map(str, argv)], check=True, capture_output=True)
    server = RedisServer(tmp_path, tls=(cert, key, ca)).start()
    yield server
    server.stop()


def test_instances_chat_through_a_tls_only_redis(tls_redis, gunicorn, clients):
    assert tls_redis.url.startswith("rediss://")
    env = {**CLUSTER_ENV, "REDIS_URL": tls_redis.url}
    a, b = gunicorn(env), gunicorn(env)
    assert a.ready().status_code == 200 and b.ready().status_code == 200
    alice = clients(a.url)
    alice.login("Alice")
    bob = clients(b.url)
    assert bob.login("Bob")["numUsers"] == 2
    ack = bob.sio.call("new message", "over TLS to Redis")
    assert "id" in ack
    assert alice.wait_for("new message")["message"] == "over TLS to Redis"


def test_an_untrusted_redis_certificate_stops_the_instance_with_one_line(
    tls_redis, gunicorn
):
    # Without the CA, the server's certificate cannot be verified.
    url = tls_redis.url.split("?")[0]
    instance = gunicorn({"REDIS_URL": url}, wait=False)
    assert instance.proc.wait(20) != 0
    log = instance.log()
    assert "cannot start: Redis's TLS certificate was not accepted" in log
    assert "Traceback" not in log
