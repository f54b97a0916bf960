"""socket.io handlers: the chat example's contract, with its inputs checked.

Client -> server: ``add user``, ``new message``, ``typing``, ``stop typing``.
Server -> client: ``login``, ``new message``, ``user joined``, ``user left``,
``typing``, ``stop typing``; and the additions ``login error``, ``chat error``
and ``history``. Every refusal answers the sender and changes nothing else.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import secrets
import time

import gevent
from flask import current_app, request
from flask_socketio import SocketIO, emit, join_room
from gevent.lock import Semaphore

from chat import metrics, rooms, socketio
from chat.history import is_entry_id, parse_id, public
from chat.presence import Member, presence_event
from chat.server import announce
from chat.validation import (
    DEFAULT_ROOM,
    Refused,
    clean_client_id,
    clean_message,
    clean_name,
    clean_room,
)

log = logging.getLogger(__name__)


def _state():
    return current_app.extensions["chat"]


def _refuse(event: str, refusal: Refused) -> None:
    metrics.REFUSED.labels(refusal.reason).inc()
    name = "login error" if event == "add user" else "chat error"
    log.info(
        "refused %s: %s",
        event,
        refusal.reason,
        extra={"sid": request.sid, "event": event, "reason": refusal.reason},
    )
    reply(name, {"event": event, "reason": refusal.reason, "message": refusal.detail})


def reply(event: str, data) -> None:
    """An event to the sender only: it is local, so it never goes through Redis."""
    emit(event, data, ignore_queue=True)


def _member() -> Member:
    member = _state().presence.local.get(request.sid)
    if member is None:
        raise Refused("not_logged_in", "Log in with 'add user' first.")
    return member


def guarded(event: str, limiter: str = "limiter"):
    """Rate-limit, time and catch one handler so no input can crash it.

    ``limiter`` names the state's bucket the event spends: typing notices
    have their own, so they never cost the user a message.
    """

    def wrap(handler):
        @functools.wraps(handler)
        def run(*args):
            started = time.perf_counter()
            try:
                if not getattr(_state(), limiter).allow(request.sid):
                    raise Refused("rate_limited", "Too many events; slow down.")
                return handler(*args)
            except Refused as refusal:
                _refuse(event, refusal)
                # A client that asked for an acknowledgement learns which of
                # its messages was refused, and why.
                return {"error": refusal.reason, "message": refusal.detail}
            finally:
                metrics.EVENT_SECONDS.labels(event).observe(
                    time.perf_counter() - started
                )

        return run

    return wrap


# -- connection ----------------------------------------------------------
@socketio.on("connect")
def on_connect(auth=None):
    """Log the connection; log in at once if the client sent a name in ``auth``."""
    _state().sessions.add("connects")
    log.debug(
        "connect",
        extra={"sid": request.sid, "transport": request.args.get("transport", "?")},
    )
    if isinstance(auth, dict) and auth.get("username") is not None:
        try:
            _login(
                auth.get("username"),
                auth.get("room"),
                auth.get("token"),
                auth.get("lastId"),
                through_auth=True,
            )
        except Refused as refusal:
            _refuse("add user", refusal)


# A connection that dropped rather than logged out (a reload, a network
# change, a restarted instance): its user may be back within seconds.
DROPPED = {
    SocketIO.reason.TRANSPORT_CLOSE,
    SocketIO.reason.TRANSPORT_ERROR,
    SocketIO.reason.PING_TIMEOUT,
}


@socketio.on("disconnect")
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
    state = _state()
    sid = request.sid
    state.limiter.forget(sid)
    state.typing_limiter.forget(sid)
    state.sessions.add("disconnects")
    log.debug("disconnect", extra={"sid": sid, "reason": reason})
    grace = current_app.config["LEAVE_GRACE_S"]
    member = state.presence.local.get(sid)
    if grace > 0 and reason in DROPPED and member is not None and member.proven:
        app = current_app._get_current_object()
        gevent.spawn_later(grace, _leave_later, app, sid)
    else:
        _leave(state, sid)


def _leave(state, sid: str) -> None:
    with _serialised(state, sid):
        member, count, seq = state.presence.leave(sid)
    if member is not None:
        announce("user left", member.room, member.name, count, seq)
        # An empty room without history no longer counts toward MAX_ROOMS
        # (with Redis the leave script uncounts it itself).
        cluster = current_app.config["REDIS_URL"]
        if count == 0 and (cluster or not state.history.has_messages(member.room)):
            state.rooms.release(member.room)


def _leave_later(app, sid: str) -> None:
    """The end of a dropped connection's grace: leave, unless the name was
    taken back meanwhile (then presence no longer holds this session)."""
    with app.app_context():
        try:
            _leave(app.extensions["chat"], sid)
        except Exception:
            log.exception("leaving after the grace failed", extra={"sid": sid})


@contextlib.contextmanager
def _serialised(state, sid: str):
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


# -- the chat contract ---------------------------------------------------
@socketio.on("add user")
@guarded("add user")
def on_add_user(name=None, options=None, *_):
    """Log in under ``name``; ``options`` may carry room, token and lastId."""
    options = options if isinstance(options, dict) else {}
    _login(name, options.get("room"), options.get("token"), options.get("lastId"))


def _login(raw_name, raw_room, token, last_id, through_auth=False) -> None:
    """Log this session in. A login through ``auth`` is repeated by the
    client on every reconnect, with its token: such a member (or one that
    brought a token) is ``proven``, and its name is held for it while it is
    away (a dropped connection, a deploy)."""
    state = _state()
    started = time.perf_counter()
    try:
        # One of LOGINS_IN_FLIGHT (chat.admission): in a reconnect storm the
        # users already chatting are not queued behind every login at once.
        with state.admission.login(), _serialised(state, request.sid):
            _login_serialised(state, raw_name, raw_room, token, last_id, through_auth)
    finally:
        metrics.LOGIN_SECONDS.observe(time.perf_counter() - started)


def _connected(sid: str) -> bool:
    return socketio.server.manager.is_connected(sid, "/")


def _login_serialised(state, raw_name, raw_room, token, last_id, through_auth) -> None:
    config = current_app.config
    if not _connected(request.sid):
        return
    if request.sid in state.presence.local:
        raise Refused("already_logged_in", "This connection is already logged in.")
    name = clean_name(raw_name, config["MAX_NAME_CHARS"])
    room = clean_room(raw_room, config["MAX_ROOM_CHARS"])
    brought_token = _is_token(token)
    if not brought_token:
        token = secrets.token_urlsafe(24)
    member = Member(request.sid, room, name, token, brought_token or through_auth)
    result = state.presence.join(member, config["MAX_USERS_LISTED"])
    if not result.ok:
        raise Refused("name_taken", f"The name {name!r} is already in use.")
    _admit_room(state, room, result)
    if not _connected(request.sid):
        # The session closed while Redis answered: undo, or the name stays.
        state.presence.leave(request.sid)
        return
    # Listing a big room at every login would cost O(users) each time: the
    # join lists only rooms up to MAX_USERS_LISTED (None past that).
    users = result.names
    # Hear the room before reading its history (chat.roomchannels).
    socketio.server.manager.ensure_room(room)
    history, read_up_to, meanwhile = _catch_up(state, room, last_id)
    # No yield from here to the end: the socket joins the room right after
    # its history was read, so every later message reaches it live, after
    # the history and never also in it.
    join_room(room)
    count = result.count
    if result.seq is not None:
        # Joins and leaves that reached this instance while the history was
        # read were not delivered to this socket (it was not in the room yet):
        # the login says the newest count instead of the one of its own join.
        count = state.delivery.count_now(room, result.seq, result.count)
    state.sessions.add("logins")
    log.debug("login", extra={"sid": request.sid, "room": room, "event": "add user"})
    reply(
        "login",
        {
            "numUsers": count,
            "username": name,
            "room": room,
            "token": token,
            "users": users,
            # The page compares it with its own: a new release offers a reload.
            "release": current_app.config["RELEASE"],
        },
    )
    if not result.replaced_sid:
        joined = presence_event(name, result.count, result.seq)
        emit("user joined", joined, to=room, include_self=False)
    reply("history", history)
    if config["REDIS_URL"]:
        state.delivery.note_catch_up(room, request.sid, read_up_to, meanwhile)
    if result.replaced_sid:
        # The same person's older connection (a page that lost its network,
        # or the tab this one was duplicated from) is told and closed; the
        # room never saw them leave, so no "user joined".
        socketio.emit(
            "taken over",
            {"message": "Your name is now in use in another tab or window."},
            to=result.replaced_sid,
        )
        socketio.server.disconnect(result.replaced_sid, namespace="/")


def _admit_room(state, room: str, result) -> None:
    """Count the room, now that the login is otherwise accepted; a refusal
    gives the name back (nobody was told of the join yet)."""
    occupied = result.count > 1 or (
        not current_app.config["REDIS_URL"] and state.history.has_messages(room)
    )
    always = room == DEFAULT_ROOM
    admitted = state.rooms.admit(room, client_of_request(), occupied, always)
    if admitted == rooms.ADMITTED:
        return
    state.presence.leave(request.sid)
    if admitted == rooms.CLIENT_OPENED_TOO_MANY:
        raise Refused(
            "too_many_rooms", "Your network opened too many rooms; try later."
        )
    raise Refused("too_many_rooms", "The server has too many rooms; try later.")


def _is_token(value) -> bool:
    """A token a client may bring: 16 to 64 printable ASCII characters."""
    return (
        isinstance(value, str)
        and 16 <= len(value) <= 64
        and value.isascii()
        and value.isprintable()
    )


def name_lost(app, member) -> None:
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


def _heard(state, room: str, last_id: str | None) -> list[dict] | None:
    """History from the room's newest messages kept here; None if they
    cannot say exactly."""
    config = current_app.config
    if last_id is None:
        return state.recent.newest(room, config["HISTORY_LENGTH"])
    return state.recent.after(room, last_id, config["HISTORY_CATCHUP_MAX"])


def _read(state, room: str, last_id: str | None) -> tuple[list, bool, bool]:
    """History read from the stream: (messages, dropped, newest), where
    ``newest`` says the room's newest messages were read from Redis."""
    config = current_app.config
    if last_id is not None:
        found, dropped = state.history.since(
            room, last_id, config["HISTORY_CATCHUP_MAX"]
        )
        return found, dropped, False
    if not config["REDIS_URL"]:
        return state.history.recent(room, config["HISTORY_LENGTH"]), False, False
    found = state.history.read_recent(room, config["HISTORY_LENGTH"])
    return (found, False, True) if found is not None else ([], False, False)


def _catch_up(state, room: str, last_id) -> tuple[dict, tuple[int, int], frozenset]:
    """The ``history`` payload: recent messages, or those missed since ``last_id``.

    Catch-up is capped at HISTORY_CATCHUP_MAX (the newest of those missed,
    with ``dropped: true``). A ``lastId`` that is not an id is no ``lastId``.
    Messages this instance delivered to the room while the stream was read
    are added: the socket is not in the room yet, and they may be too new
    for what was read. Also returns what the login now has (see
    ``Delivery.note_catch_up``): the newest id read, and the ids added.
    """
    config = current_app.config
    if config["REDIS_URL"]:
        # Noted before the read: a message stored while it runs must reach
        # this user (see chat.server.announce_stored).
        state.delivery.note_login(room, request.sid)
    if not is_entry_id(last_id):
        if last_id is not None:
            log.debug("ignoring a malformed lastId", extra={"sid": request.sid})
        last_id = None
    since, dropped = last_id, False
    # The newest messages as this instance heard them (chat.recent): no
    # read, so nothing can be delivered meanwhile.
    heard = config["REDIS_URL"] and socketio.server.manager.hears(room)
    messages = _heard(state, room, last_id) if heard else None
    if messages is not None:
        metrics.HISTORY_READS.labels("kept").inc()
        meanwhile = []
    else:
        if config["REDIS_URL"]:
            metrics.HISTORY_READS.labels("stream").inc()
        start = state.delivery.open_window(room)
        try:
            messages, dropped, newest = _read(state, room, last_id)
            meanwhile = state.delivery.window(room, start)
        finally:
            state.delivery.close_window(room)
        # A read that nothing was delivered during, of a room still heard,
        # starts the room's kept messages.
        if newest and not meanwhile and socketio.server.manager.hears(room):
            count = config["HISTORY_LENGTH"]
            state.recent.start(room, messages, whole=len(messages) < count)
    read_up_to = max(
        [parse_id(since) if since else (0, 0)]
        + [parse_id(m["id"]) for m in messages[-1:]]
    )
    known = {m["id"] for m in messages}
    added = [m for m in meanwhile if m["id"] not in known]
    if added:
        messages = sorted(messages + added, key=lambda m: parse_id(m["id"]))
    history = {
        "messages": [public(m) for m in messages],
        "dropped": dropped,
        "since": since,
    }
    return history, read_up_to, frozenset(m["id"] for m in added)


@socketio.on("new message")
@guarded("new message")
def on_new_message(text=None, options=None, *_):
    """Store and broadcast a message to the rest of the room.

    The acknowledgement carries the message's id and timestamp, so the
    sender can tell its own messages apart in a later ``history``. While
    Redis cannot store it, the message is kept in the outbox and delivered
    here as ``pending`` (no id yet); ``message stored`` follows.
    """
    member = _member()
    message = clean_message(text, current_app.config["MAX_MESSAGE_CHARS"])
    client_id = clean_client_id(options)
    _spend_client_budget(_state(), message)
    accepted = _state().messages.accept(
        member.room, member.name, message, client_id, request.sid
    )
    entry = accepted.entry
    metrics.MESSAGES_IN.inc()
    if accepted.status == "duplicate":
        # A resend of a message already stored (and delivered): ack only.
        return _ack(entry)
    metrics.MESSAGES_OUT.inc()
    # A pending message goes to this instance's users now; the other
    # instances get it from the outbox, with its id, when Redis is back.
    pending = accepted.status == "pending"
    emit(
        "new message",
        public(entry),
        to=member.room,
        include_self=False,
        ignore_queue=pending,
    )
    return _ack(entry)


def client_of_request() -> str:
    """The client this session counts as (set by chat.sessions)."""
    return request.environ.get("chat.client") or request.remote_addr or "?"


def _spend_client_budget(state, message: str) -> None:
    """One client's messages a second and bytes a second, across all its
    sessions: checked before the message is stored, so a flood from one
    address costs the room and Redis no more than this budget."""
    client = client_of_request()
    size = len(message.encode())
    if not (
        state.client_messages.allow(client) and state.client_bytes.allow(client, size)
    ):
        raise Refused("rate_limited", "Too many messages from your network; slow down.")


def _ack(entry: dict) -> dict:
    if entry.get("pending"):
        return {"clientId": entry["clientId"], "pending": True}
    ack = {"id": entry["id"], "ts": entry["ts"]}
    if "clientId" in entry:
        ack["clientId"] = entry["clientId"]
    return ack


@socketio.on("typing")
@guarded("typing", limiter="typing_limiter")
def on_typing(*_):
    """Tell the rest of the room this user is typing."""
    member = _member()
    emit("typing", {"username": member.name}, to=member.room, include_self=False)


@socketio.on("stop typing")
@guarded("stop typing", limiter="typing_limiter")
def on_stop_typing(*_):
    """Tell the rest of the room this user stopped typing."""
    member = _member()
    emit("stop typing", {"username": member.name}, to=member.room, include_self=False)


@socketio.on("*")
def on_unknown(event, *_):
    """Answer an event the contract does not have, instead of ignoring it."""
    metrics.REFUSED.labels("unknown_event").inc()
    reply(
        "chat error",
        {
            "event": str(event)[:64],
            "reason": "unknown_event",
            "message": "This server does not know that event.",
        },
    )


@socketio.on_error_default
def on_handler_error(exc):
    """A bug must not kill the connection: log it and tell the client."""
    log.exception(
        "handler failed",
        extra={"sid": getattr(request, "sid", "?"), "reason": "server_error"},
    )
    metrics.REFUSED.labels("server_error").inc()
    _state().failures.add()
    # Flask-SocketIO notes the event being handled on the request.
    event = getattr(request, "event", None) or {}
    message = "The server could not handle that event."
    reply(
        "chat error",
        {
            "event": str(event.get("message", ""))[:64],
            "reason": "server_error",
            "message": message,
        },
    )
    # The acknowledgement, when one was asked for: the page marks that
    # message as not sent, with a retry.
    return {"error": "server_error", "message": message}
