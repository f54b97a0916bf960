"""Connections: a login from ``auth`` at connect, a leave at disconnect
(after a grace for a dropped connection that will come back), and a name
lost after an outage."""

from __future__ import annotations

import logging

import gevent
from flask_socketio import SocketIO

from chat.events.context import (
    app_config,
    chat_state,
    current_sid,
    refuse,
    serialised,
)
from chat.events.login import login
from chat.internals.flask_context import event_app, event_request
from chat.validation import Refused

log = logging.getLogger("chat.events")


def on_connect(auth=None):
    """Log the connection; log in at once if the client sent a name in ``auth``."""
    chat_state().tally.add("connects")
    if log.isEnabledFor(logging.DEBUG):  # (the query is parsed for it)
        request = event_request()
        transport = request.args.get("transport", "?")
        log.debug("connect", extra={"sid": request.sid, "transport": transport})
    if isinstance(auth, dict) and auth.get("username") is not None:
        try:
            login(
                auth.get("username"),
                auth.get("room"),
                auth.get("token"),
                auth.get("lastId"),
                through_auth=True,
            )
        except Refused as refusal:
            refuse("add user", refusal)


# A connection that dropped rather than logged out (a reload, a network
# change, a restarted instance): its user may be back within seconds.
DROPPED = {
    SocketIO.reason.TRANSPORT_CLOSE,
    SocketIO.reason.TRANSPORT_ERROR,
    SocketIO.reason.PING_TIMEOUT,
}


def on_disconnect(reason=None, *_):
    """Release the user's name and tell the room, unless a newer login took it.

    A dropped connection keeps its user online for LEAVE_GRACE_S first: a
    reloaded page or a phone changing networks logs in again with its token
    and takes the name back, and the room sees neither a leave nor a join.
    Only a client that will come back with its token (``Member.proven``)
    is waited for: nobody else can take the name meanwhile.
    A logout (the client's own disconnect) or a server close leaves at once.
    Waits for a login of this session still in flight, so the name it is
    claiming is released too instead of staying behind as a ghost.
    """
    state = chat_state()
    sid = current_sid()
    state.limiter.forget(sid)
    state.typing_limiter.forget(sid)
    state.tally.add("disconnects")
    log.debug("disconnect", extra={"sid": sid, "reason": reason})
    grace = app_config()["LEAVE_GRACE_S"]
    member = state.presence.local.get(sid)
    if grace > 0 and reason in DROPPED and member is not None and member.proven:
        gevent.spawn_later(grace, _leave_later, event_app(), sid)
    else:
        _leave(state, sid)


def _leave(state, sid: str) -> None:
    with serialised(state, sid):
        member, count, seq = state.presence.leave(sid)
    if member is not None:
        state.fanout.presence("user left", member.room, member.name, count, seq)
        # An empty room without history no longer counts toward MAX_ROOMS
        # (with Redis the leave script uncounts it, and presence tells the
        # room count: chat.state).
        cluster = app_config()["REDIS_URL"]
        if count == 0 and not cluster and not state.history.has_messages(member.room):
            state.rooms.release(member.room)


def _leave_later(app, sid: str) -> None:
    """The end of a dropped connection's grace: leave, unless the name was
    taken back meanwhile (then presence no longer holds this session)."""
    with app.app_context():
        try:
            _leave(app.extensions["chat"], sid)
        except Exception:
            log.exception("leaving after the grace failed", extra={"sid": sid})


def name_lost(app, socketio, member) -> None:
    """After an outage another session holds ``member``'s name: this one is
    logged out (it may still read nothing of the room) and told why."""
    server = socketio.server
    with app.app_context():
        server.leave_room(member.sid, member.room, namespace="/")
        socketio.emit(
            "login error",
            {
                "event": "add user",
                "reason": "name_taken",
                "message": f"The name {member.name!r} is already in use.",
            },
            to=member.sid,
            ignore_queue=True,
        )
