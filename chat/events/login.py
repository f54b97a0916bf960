"""Logging in: a name in a room, its token, the room counted, the history
caught up, the room told."""

from __future__ import annotations

import logging
import secrets
import time

from chat.events.context import (
    app_config,
    chat_state,
    client_of_request,
    current_sid,
    guarded,
    reply,
    serialised,
    sio,
)
from chat.messages.catchup import catch_up
from chat.moderation.store import judge, until
from chat.observe import metrics
from chat.presence import rooms
from chat.presence.member import Member, presence_event
from chat.validation import DEFAULT_ROOM, Refused, clean_name, clean_room

log = logging.getLogger("chat.events")


@guarded("add user")
def on_add_user(name=None, options=None, *_):
    """Log in under ``name``; ``options`` may carry room, token and lastId."""
    options = options if isinstance(options, dict) else {}
    login(name, options.get("room"), options.get("token"), options.get("lastId"))


def login(raw_name, raw_room, token, last_id, through_auth=False) -> None:
    """Log this session in. A login through ``auth`` is repeated by the
    client on every reconnect, with its token: such a member (or one that
    brought a token) is ``proven``, and its name is held for it while it is
    away (a dropped connection, a deploy)."""
    state = chat_state()
    sid = current_sid()
    started = time.perf_counter()
    try:
        # One of LOGINS_IN_FLIGHT (chat.limits.admission): in a reconnect storm the
        # users already chatting are not queued behind every login at once.
        with state.admission.login(), serialised(state, sid):
            _login_serialised(
                state, sid, raw_name, raw_room, token, last_id, through_auth
            )
    finally:
        metrics.LOGIN_SECONDS.observe(time.perf_counter() - started)


def _connected(sid: str) -> bool:
    return sio().server.manager.is_connected(sid, "/")


def _login_serialised(
    state, sid, raw_name, raw_room, token, last_id, through_auth
) -> None:
    config = app_config()
    if not _connected(sid):
        return
    if sid in state.presence.local:
        raise Refused("already_logged_in", "This connection is already logged in.")
    name = clean_name(raw_name, config["MAX_NAME_CHARS"])
    room = clean_room(raw_room, config["MAX_ROOM_CHARS"])
    brought_token = _is_token(token)
    proof = token if brought_token else ""
    checks = ()
    if state.presence.checks_in_join:
        # One Redis: the join script reads the bans, the room's moderators
        # and its slow mode itself, before it claims the name (one round
        # trip for the whole login instead of two).
        checks = state.moderation.login_keys(name, client_of_request(), room)
    else:
        ban, moderator, slow = state.moderation.at_login(
            name, client_of_request(), room, proof
        )
        _refuse_banned(ban)
    if not brought_token:
        token = secrets.token_urlsafe(24)
    member = Member(sid, room, name, token, brought_token or through_auth)
    result = state.presence.join(member, config["MAX_USERS_LISTED"], checks)
    if checks:
        # Redis not answering read nothing: nobody refused, nobody moderates.
        ban, moderator, slow = judge(*(result.checked or (None, None, None)), proof)
        _refuse_banned(ban)
    if not result.ok:
        raise Refused("name_taken", f"The name {name!r} is already in use.")
    _admit_room(state, sid, room, result)
    if not _connected(sid):
        # The session closed while Redis answered: undo, or the name stays.
        state.presence.leave(sid)
        return
    # Listing a big room at every login would cost O(users) each time: the
    # join lists only rooms up to MAX_USERS_LISTED (None past that).
    users = result.names
    # Hear the room before reading its history (chat.cluster.channels).
    server = sio().server
    manager = server.manager
    manager.ensure_room(room)
    history, read_up_to, meanwhile = catch_up(
        state, manager, config, room, last_id, sid
    )
    # No yield from here to the end: the socket joins the room right after
    # its history was read, so every later message reaches it live, after
    # the history and never also in it.
    server.enter_room(sid, room, namespace="/")
    count = result.count
    if result.seq is not None:
        # Joins and leaves that reached this instance while the history was
        # read were not delivered to this socket (it was not in the room yet):
        # the login says the newest count instead of the one of its own join.
        count = state.counts.count_now(room, result.seq, result.count)
    state.tally.add("logins")
    log.debug("login", extra={"sid": sid, "room": room, "event": "add user"})
    reply(
        "login",
        {
            "numUsers": count,
            "username": name,
            "room": room,
            "token": token,
            "users": users,
            # The page compares it with its own: a new release offers a reload.
            "release": config["RELEASE"],
            # Additions of moderation: the page shows its controls, and
            # the room's slow mode.
            "moderator": moderator and brought_token,
            "slowMode": slow,
        },
    )
    if not result.replaced_sid:
        joined = presence_event(name, result.count, result.seq)
        server.emit("user joined", joined, to=room, skip_sid=sid, namespace="/")
    reply("history", history)
    if config["REDIS_URL"]:
        state.delivered.note_catch_up(room, sid, read_up_to, meanwhile)
    if result.replaced_sid:
        # The same person's older connection (a page that lost its network,
        # or the tab this one was duplicated from) is told and closed; the
        # room never saw them leave, so no "user joined".
        socketio = sio()
        socketio.emit(
            "taken over",
            {"message": "Your name is now in use in another tab or window."},
            to=result.replaced_sid,
        )
        socketio.server.disconnect(result.replaced_sid, namespace="/")


def _refuse_banned(ban: dict | None) -> None:
    if ban is not None:
        raise Refused("banned", f"You are banned{until(ban)}: {ban['reason']}")


def _admit_room(state, sid: str, room: str, result) -> None:
    """Count the room, now that the login is otherwise accepted; a refusal
    gives the name back (nobody was told of the join yet)."""
    occupied = result.count > 1 or (
        not app_config()["REDIS_URL"] and state.history.has_messages(room)
    )
    always = room == DEFAULT_ROOM
    admitted = state.rooms.admit(room, client_of_request(), occupied, always)
    if admitted == rooms.ADMITTED:
        return
    state.presence.leave(sid)
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
