"""Fixtures: the app and test clients for unit tests; real processes for e2e."""

from __future__ import annotations

import pytest

from chat import create_app, socketio
from chat.config import TestConfig


@pytest.fixture
def config():
    """Unit-test settings; a test may change limits before the app is built."""
    return TestConfig()


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
    from tests.support import Gunicorn, free_port

    started = []

    def start(env=None, port=None, wait=True, cwd=None):
        kwargs = {"cwd": cwd} if cwd else {}
        instance = Gunicorn(port or free_port(), tmp_path, env, **kwargs)
        started.append(instance)
        return instance.start(wait=wait)

    yield start
    for instance in started:
        instance.stop()
