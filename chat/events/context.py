"""What every handler shares: the instance's state, answers to the sender,
refusals, and the decorator that rate-limits, times and guards a handler."""

from __future__ import annotations

import contextlib
import functools
import logging
import time

from gevent.lock import Semaphore

from chat.internals.flask_context import event_app, event_request
from chat.observe import metrics
from chat.presence.member import Member
from chat.validation import Refused

log = logging.getLogger("chat.events")


# Handlers read the app and the request through ``event_app`` and
# ``event_request`` rather than Flask's ``current_app`` and ``request``
# proxies: the same objects, at a fifth of the cost per read.


def chat_state():
    """The instance's state (chat.state.ChatState)."""
    return event_app().extensions["chat"]


def sio():
    """The app's Flask-SocketIO object."""
    return event_app().extensions["socketio"]


def app_config():
    """The app's settings (``current_app.config``)."""
    return event_app().config


def current_sid() -> str:
    """The socket.io session id of the event being handled (``request.sid``)."""
    return event_request().sid


def refuse(event: str, refusal: Refused) -> None:
    metrics.REFUSED.labels(refusal.reason).inc()
    name = "login error" if event == "add user" else "chat error"
    log.info(
        "refused %s: %s",
        event,
        refusal.reason,
        extra={"sid": current_sid(), "event": event, "reason": refusal.reason},
    )
    reply(name, {"event": event, "reason": refusal.reason, "message": refusal.detail})


def reply(event: str, data) -> None:
    """An event to the sender only, straight to its session.

    It is local, so it never goes through Redis, nor through the emit
    layers of Flask-SocketIO, python-socketio and the Redis manager that a
    room's broadcast needs (a login sends two of these). A session that
    ended meanwhile gets nothing.
    """
    server = sio().server
    eio_sid = server.manager.eio_sid_from_sid(current_sid(), "/")
    if eio_sid is not None:
        server._reply(eio_sid, event, data)


def logged_in_member() -> Member:
    member = chat_state().presence.local.get(current_sid())
    if member is None:
        raise Refused("not_logged_in", "Log in with 'add user' first.")
    return member


def guarded(event: str, limiter: str = "limiter"):
    """Rate-limit, time and catch one handler so no input can crash it.

    ``limiter`` names the state's bucket the event spends: typing notices
    have their own, so they never cost the user a message.
    """

    # The event's own histogram, looked up once (``labels`` takes a lock
    # and checks its arguments on every call).
    timer = metrics.EVENT_SECONDS.labels(event)

    def wrap(handler):
        @functools.wraps(handler)
        def run(*args):
            started = time.perf_counter()
            try:
                if not getattr(chat_state(), limiter).allow(current_sid()):
                    raise Refused("rate_limited", "Too many events; slow down.")
                return handler(*args)
            except Refused as refusal:
                refuse(event, refusal)
                # A client that asked for an acknowledgement learns which of
                # its messages was refused, and why.
                return {"error": refusal.reason, "message": refusal.detail}
            finally:
                timer.observe(time.perf_counter() - started)

        return run

    return wrap


def client_of_request() -> str:
    """The client this session counts as (set by chat.internals.engineio_server)."""
    request = event_request()
    return request.environ.get("chat.client") or request.remote_addr or "?"


@contextlib.contextmanager
def serialised(state, sid: str):
    """One login (or logout) at a time per session, whatever the transport.

    The POSTs of one long-polling session are handled concurrently. A lock
    exists only while someone holds or waits for it (no memory per idle
    connection).
    """
    entry = state.login_locks.get(sid)
    if entry is None:
        entry = state.login_locks[sid] = [Semaphore(), 0]
    entry[1] += 1
    try:
        with entry[0]:
            yield
    finally:
        entry[1] -= 1
        if entry[1] == 0:
            state.login_locks.pop(sid, None)
