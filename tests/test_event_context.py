"""A socket.io event's Flask context: what handlers see through ``request``,
``current_app``, ``g`` and ``session``, on the short path and on Flask's own
(chat.internals.flask_context)."""

from __future__ import annotations

from flask import current_app, g, request, session
from flask.signals import appcontext_popped

from chat.internals.flask_context import needs_full_context


def _probe(app):
    """A ``probe`` event whose handler reports what it sees."""
    seen = []

    def on_probe(value):
        seen.append(
            {
                "sid": request.sid,
                "namespace": request.namespace,
                "event": request.event,
                "path": request.path,
                "app": current_app._get_current_object(),
                "g_before": dict(vars(g)),
                "session": session._get_current_object(),
            }
        )
        g.value = value
        return {"echo": value}

    app.extensions["socketio"].on_event("probe", on_probe)
    return seen


def test_the_chat_app_takes_the_short_path(app):
    """Nothing the chat registers needs Flask's full context per event; an
    extension that adds a teardown function or a signal receiver would turn
    the short path off, and this test says so."""
    assert not needs_full_context(app)


def test_a_handler_sees_the_same_through_either_context(app, connect):
    """Whatever the path, a handler sees its session id, namespace and event,
    the app, a ``g`` of its own per event and the app's session; the same
    answer goes back as an acknowledgement."""
    seen = _probe(app)
    sock = connect()
    assert sock.emit("probe", 1, callback=True) == {"echo": 1}
    assert sock.emit("probe", 2, callback=True) == {"echo": 2}
    torn_down = []
    app.teardown_request(lambda exc: torn_down.append(exc))
    assert needs_full_context(app)
    assert sock.emit("probe", 3, callback=True) == {"echo": 3}
    assert torn_down == [None], "the full context ran the teardown function"
    sid = app.extensions["socketio"].server.manager.sid_from_eio_sid(sock.eio_sid, "/")
    for number, event in enumerate(seen, start=1):
        assert event["sid"] == sid
        assert event["namespace"] == "/"
        assert event["event"] == {"message": "probe", "args": (number,)}
        assert event["path"].startswith("/socket.io")
        assert event["app"] is app
        assert event["g_before"] == {}, "g is per event, as in a request"
        assert event["session"] is app.session_interface.empty, number


def test_a_signal_receiver_gets_the_full_context(app, connect):
    seen = _probe(app)
    sock = connect()
    popped = []

    def receiver(sender, **_):
        popped.append(sender)

    appcontext_popped.connect(receiver, app)
    try:
        assert sock.emit("probe", 1, callback=True) == {"echo": 1}
    finally:
        appcontext_popped.disconnect(receiver, app)
    assert popped == [app] and len(seen) == 1


def test_an_event_leaves_no_request_in_its_sessions_environ(app, connect):
    """Werkzeug's request puts itself in the environ it reads, and a
    session's environ lives as long as the session: an event's request
    object must not stay there, with everything it holds."""
    _probe(app)
    sock = connect()
    assert sock.emit("probe", 1, callback=True) == {"echo": 1}
    environ = app.extensions["socketio"].server.environ[sock.eio_sid]
    assert environ.get("werkzeug.request") is None


def test_no_context_is_left_bound_after_an_event(app, connect):
    """After an event, the greenlet that handled it is outside any Flask
    context, whether the handler answered or failed."""
    from flask.globals import _cv_app, _cv_request

    _probe(app)

    def fail(*_):
        raise RuntimeError("a bug in a handler")

    app.extensions["socketio"].on_event("fail", fail)
    sock = connect()
    assert sock.emit("probe", 1, callback=True) == {"echo": 1}
    answer = sock.emit("fail", callback=True)
    assert answer["error"] == "server_error"
    assert _cv_app.get(None) is None and _cv_request.get(None) is None
