"""Metrics and logs: counts move with use, and never carry user content."""

import gc
import json
import logging

import pytest

from chat.observe.logs import JsonFormatter


def metric(client, name, labels=""):
    """The value of one sample in /metrics (0 when absent)."""
    text = client.get("/metrics").get_data(as_text=True)
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} "):
            return float(line.split()[-1])
    return 0.0


def test_metrics_count_logins_messages_and_refusals(client, login, connect):
    before = {
        "users": metric(client, "chat_logged_in_users"),
        "in": metric(client, "chat_messages_in_total"),
        "refused": metric(client, "chat_refused_total", '{reason="message_too_long"}'),
        "sockets": metric(client, "chat_connected_sockets"),
        "timed": metric(client, "chat_event_seconds_count", '{event="new message"}'),
    }
    alice = login("Alice")
    login("Bob")
    alice.emit("new message", "counted")
    alice.emit("new message", "x" * 5000)
    assert metric(client, "chat_logged_in_users") == before["users"] + 2
    assert metric(client, "chat_connected_sockets") == before["sockets"] + 2
    assert metric(client, "chat_messages_in_total") == before["in"] + 1
    refused = metric(client, "chat_refused_total", '{reason="message_too_long"}')
    assert refused == before["refused"] + 1
    # Both messages timed, the refused one too.
    timed = metric(client, "chat_event_seconds_count", '{event="new message"}')
    assert timed == before["timed"] + 2
    alice.disconnect()
    assert metric(client, "chat_logged_in_users") == before["users"] + 1


def test_every_garbage_collection_pause_is_timed_by_generation(client):
    """A full collection stops every connection of the worker at once: its
    pauses are in /metrics."""
    labels = '{generation="2"}'
    before = metric(client, "chat_gc_pause_seconds_count", labels)
    gc.collect()
    assert metric(client, "chat_gc_pause_seconds_count", labels) == before + 1


def test_metrics_show_the_reused_greenlets_waiting_and_started(client):
    import gevent

    from chat.transport import workers

    gevent.get_hub().loop.run_callback(workers.run_now, len, "job")
    gevent.sleep(0)
    idle = metric(client, "chat_worker_greenlets", '{state="idle"}')
    assert 1 <= idle <= workers.MAX_IDLE
    assert metric(client, "chat_worker_greenlets", '{state="started"}') >= 1


def test_metrics_never_contain_user_content(client, login):
    login("SecretName").emit("new message", "secret text")
    page = client.get("/metrics").get_data(as_text=True)
    assert "SecretName" not in page and "secret text" not in page
    assert client.get("/metrics").content_type.startswith("text/plain")


def test_json_log_format_is_one_object_per_line():
    record = logging.LogRecord(
        "chat.events", logging.INFO, __file__, 1, "login sid=%s", ("abc",), None
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["msg"] == "login sid=abc"
    assert entry["level"] == "INFO" and entry["logger"] == "chat.events"


@pytest.mark.e2e
def test_every_line_is_json_with_fields_and_no_message_text(gunicorn, clients):
    server = gunicorn(
        {
            "LOG_FORMAT": "json",
            "RELEASE": "abc1234",
            "LOG_LEVEL": "DEBUG",
            "LOG_SESSIONS_EVERY_S": "1",
        }
    )
    alice = clients(server.url)
    alice.login("Alice")
    alice.say("private words")
    alice.close()
    from tests.support import wait_until

    def entries():
        return [json.loads(line) for line in server.log().splitlines() if line]

    wait_until(
        lambda: any(e["msg"] == "disconnect" for e in entries()),
        10,
        "the disconnect log",
    )
    found = entries()  # every line parses, gunicorn's own included
    assert any(e["logger"].startswith("gunicorn") for e in found)
    [start] = [e for e in found if e.get("event") == "start"]
    assert start["port"] == str(server.port) and start["release"] == "abc1234"
    assert start["mode"] == "single" and start["pid"] in server.worker_pids()
    # Fields of their own, never inside the message; the instance on each.
    connect = next(e for e in found if e["msg"] == "connect")
    assert connect["sid"] and connect["transport"] == "websocket"
    assert connect["instance"] == start["instance"]
    assert any(e["msg"] == "login" and e.get("room") == "lobby" for e in found)
    assert any(e["msg"] == "disconnect" and e.get("sid") for e in found)
    assert "private words" not in server.log()


@pytest.mark.e2e
def test_json_covers_start_up_warnings_and_access_lines_naming_the_instance(
    gunicorn,
):
    """A container platform collects stdout and stderr: with LOG_FORMAT=json
    every line is JSON, ACCESS_LOG=- gives access lines, and the worker's
    lines (gunicorn's own included) name the instance."""
    from deploy.procs import http_get
    from tests.support import wait_until

    server = gunicorn({"LOG_FORMAT": "json", "ACCESS_LOG": "-", "SECRET_KEY": ""})
    assert http_get(f"{server.url}/healthz").status_code == 200

    def entries():
        return [json.loads(line) for line in server.log().splitlines() if line]

    wait_until(
        lambda: any("/healthz" in e["msg"] for e in entries()), 10, "an access line"
    )
    found = entries()
    [start] = [e for e in found if e.get("event") == "start"]
    warning = [e for e in found if e["msg"].startswith("SECRET_KEY is not set")]
    assert warning and warning[0]["level"] == "WARNING"
    access = [e for e in found if e["logger"] == "gunicorn.access"]
    assert access and all(e["instance"] == start["instance"] for e in access)


@pytest.mark.e2e
def test_at_info_sessions_are_one_line_per_interval_with_counts(gunicorn, clients):
    """A reconnect storm must not cost a log line per connection at INFO."""
    server = gunicorn({"LOG_FORMAT": "json", "LOG_SESSIONS_EVERY_S": "1"})
    for name in ("Alice", "Bob", "Carol"):
        user = clients(server.url)
        user.login(name)
        user.close()
    from tests.support import wait_until

    def tallies():
        lines = [json.loads(line) for line in server.log().splitlines() if line]
        return [e for e in lines if e.get("event") == "sessions"]

    wait_until(lambda: sum(e["disconnects"] for e in tallies()) == 3, 10, "the tally")
    assert sum(e["connects"] for e in tallies()) == 3
    assert sum(e["logins"] for e in tallies()) == 3
    assert all(e["level"] == "INFO" for e in tallies())
    assert '"msg": "login"' not in server.log() and '"msg":"login"' not in server.log()


@pytest.mark.e2e
def test_metrics_name_the_release_and_whether_the_instance_is_degraded(gunicorn):
    import requests

    server = gunicorn({"RELEASE": "abc1234"})
    answer = requests.get(f"{server.url}/metrics", timeout=5)
    assert answer.headers["Content-Type"].count("charset") == 1
    lines = answer.text.splitlines()
    assert 'chat_build_info{release="abc1234",version="0.1.0"} 1.0' in lines
    assert "chat_degraded 0.0" in lines


@pytest.mark.parametrize(
    "upgrade", [{}, {"HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade"}]
)
def test_event_request_contexts_are_not_routed_and_keep_no_exception(app, upgrade):
    """Flask-SocketIO builds a request context from the session's first
    request for every event. Routing it would make Flask keep a NotFound (or
    WebsocketMismatch) and its traceback on each: a reference cycle per
    event, which the full garbage collection then pauses for."""
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(
        path="/socket.io/", query_string="EIO=4&transport=websocket"
    ).get_environ()
    environ.update(upgrade)
    with app.request_context(environ):
        from flask import request

        assert request.routing_exception is None and request.url_rule is None
    with app.test_client() as web:
        # That path is answered by the socket.io middleware, never by Flask.
        assert web.get("/socket.io/?EIO=4&transport=polling").status_code == 200


@pytest.mark.settings(READY_MAX_FAILURES_PER_MIN=2)
def test_readiness_fails_while_handlers_keep_failing(client, connect, monkeypatch):
    """A release whose login raises is alive but not ready: /readyz says so."""
    import chat.events.login

    assert client.get("/readyz").status_code == 200

    def broken(*args):
        raise RuntimeError("a bug in login")

    monkeypatch.setattr(chat.events.login, "_login_serialised", broken)
    sock = connect()
    for _ in range(3):
        sock.emit("add user", "Alice")
    errors = [e for e in sock.get_received() if e["name"] == "chat error"]
    assert [e["args"][0]["reason"] for e in errors] == ["server_error"] * 3
    assert {e["args"][0]["event"] for e in errors} == {"add user"}
    # An acknowledged event learns of the failure in its acknowledgement.
    ack = sock.emit("add user", "Alice", callback=True)
    assert ack == {
        "error": "server_error",
        "message": "The server could not handle that event.",
    }
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.get_json()["status"] == "failing"
    assert client.get("/healthz").status_code == 200
