"""Fixtures: the app and test clients for unit tests; real processes for e2e."""

from __future__ import annotations

import pytest

from chat import create_app
from chat.config import TestConfig


@pytest.fixture
def config(request):
    """Unit-test settings, with ``@pytest.mark.settings(NAME=value)`` applied.

    The marker is how a test changes a limit: the ``app`` fixture is built
    from this config before the test body runs.
    """
    settings = TestConfig()
    marker = request.node.get_closest_marker("settings")
    for name, value in (marker.kwargs if marker else {}).items():
        setattr(settings, name, value)
    return settings


@pytest.fixture
def app(config):
    return create_app(config)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def connect(app, client):
    """Open Flask-SocketIO test clients; closes them at the end of the test."""
    opened = []

    def open_client(auth=None):
        socketio = app.extensions["socketio"]
        sock = socketio.test_client(app, flask_test_client=client, auth=auth)
        opened.append(sock)
        return sock

    yield open_client
    for sock in opened:
        if sock.is_connected():
            sock.disconnect()


@pytest.fixture
def login(connect):
    """A test client logged in under ``name``; its received queue starts empty."""

    def log_in(name, room=None):
        sock = connect()
        sock.emit("add user", name, {"room": room} if room else None)
        events = names_of(sock.get_received())
        assert "login" in events, events
        return sock

    return log_in


def names_of(received):
    return [packet["name"] for packet in received]


def events_named(sock, name):
    """The payloads of every ``name`` event ``sock`` has received so far."""
    return [p["args"][0] for p in sock.get_received() if p["name"] == name]


@pytest.fixture
def clients():
    """Open ``ChatClient``s; every one is closed at the end, also on failure."""
    from tests.support import ChatClient

    opened = []

    def open_client(url, **kwargs):
        chat_client = ChatClient(url, **kwargs)
        opened.append(chat_client)
        return chat_client

    yield open_client
    for chat_client in opened:
        chat_client.close()


@pytest.fixture
def gunicorn(tmp_path):
    """Start real gunicorn instances; each is stopped at the end of the test."""
    from deploy.procs import Instance, free_port

    started = []

    def start(env=None, port=None, wait=True):
        instance = Instance(port or free_port(), tmp_path, env)
        started.append(instance)
        return instance.start(wait=wait)

    yield start
    for instance in started:
        instance.stop()


@pytest.fixture
def redis_server(tmp_path):
    """A private redis-server with a password on a free port (never the shared one)."""
    from deploy.procs import RedisServer

    server = RedisServer(tmp_path, unix_socket=True).start()
    yield server
    server.stop()


# Short presence timing so a dead instance is noticed within seconds.
CLUSTER_ENV = {"PRESENCE_HEARTBEAT_S": "1", "PRESENCE_TTL_S": "3"}


@pytest.fixture
def cluster(redis_server, gunicorn):
    """``cluster(n)``: n real instances sharing ``redis_server``."""

    def start(n=2, **env):
        settings = {**CLUSTER_ENV, "REDIS_URL": redis_server.url, **env}
        return [gunicorn(settings) for _ in range(n)]

    return start


@pytest.fixture
def nginx(tmp_path):
    """``nginx(instances, sticky=True, tls=None)``: a load balancer in front of
    them; ``tls=(cert, key)`` serves HTTPS and redirects HTTP to it."""
    from deploy.nginx import Nginx

    started = []

    def start(instances, sticky=True, tls=None):
        balancer = Nginx(tmp_path, [i.port for i in instances], sticky=sticky, tls=tls)
        started.append(balancer)
        return balancer.start()

    yield start
    for balancer in started:
        balancer.stop()


@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate for 127.0.0.1 made with openssl: (cert, key)."""
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return cert, key


# -- browser tests (tests/pages.py) ------------------------------------------
@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """One headless Chromium (Debian's) for the whole session."""
    from playwright.sync_api import sync_playwright

    from tests.pages import ARTIFACTS, CHROMIUM_ARGS, chromium_path

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser):
    """``open_page(url, name=None, **context)``: a page in its own context."""
    contexts = []

    def open_(url, name=None, **options):
        context = browser.new_context(**options)
        contexts.append(context)
        page = context.new_page()
        page.dialogs = []
        page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
        page.goto(url)
        if name is not None:
            from tests.pages import log_in

            log_in(page, name)
        return page

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture(autouse=True)
def close_raw_sockets():
    """Every raw websocket a test opened is closed, also on failure."""
    yield
    from tests.rawws import RawWebSocket

    for raw in RawWebSocket.opened:
        raw.close()
    RawWebSocket.opened.clear()
