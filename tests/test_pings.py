"""A session's ping timer in the cases where the session ends around it."""

from __future__ import annotations

import gevent

from chat.internals.engineio_socket import ChatSocket


class _OverflowingWebSocket:
    """A websocket whose backlog is full: writing closes the session, as
    ``LimitedWebSocket.on_overflow`` does."""

    on_overflow = None

    def __init__(self):
        self.closed = False

    def write(self, frame: bytes) -> None:
        self.on_overflow()

    def close(self) -> None:
        self.closed = True


def _session(app) -> ChatSocket:
    eio = app.extensions["socketio"].server.eio
    sock = ChatSocket(eio, "pinged")
    sock.connected = True
    sock.last_ping = None
    return sock


def test_a_ping_that_overflows_the_backlog_ends_the_session_and_arms_nothing(app):
    sock = _session(app)
    ws = _OverflowingWebSocket()
    ws.on_overflow = lambda: sock.close(wait=False, abort=True)
    sock.direct = ws
    sock.last_ping = 1.0
    sock.schedule_ping = lambda: None  # engine.io's, not under test here
    sock.ping_timer = gevent.get_hub().loop.timer(60)
    sock._ping_due()
    assert sock.closed and ws.closed
    assert sock.ping_timer is None


def test_an_overdue_pong_on_a_session_already_closed_does_nothing(app):
    sock = _session(app)
    sock.last_ping = 1.0
    sock.close(wait=False, abort=True)
    sock._pong_overdue()
    assert sock.ping_timer is None
