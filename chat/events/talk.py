"""Talking: messages, typing notices, and answers to events the contract
does not have or a handler that failed."""

from __future__ import annotations

import logging

from flask import request
from flask_socketio import emit

from chat.events.context import (
    app_config,
    chat_state,
    client_of_request,
    current_sid,
    guarded,
    logged_in_member,
    reply,
)
from chat.messages.entries import Muted, SlowMode
from chat.moderation.store import until
from chat.observe import metrics
from chat.validation import Refused, clean_client_id, clean_message

log = logging.getLogger("chat.events")


@guarded("new message")
def on_new_message(text=None, options=None, *_):
    """Store and broadcast a message to the rest of the room.

    The acknowledgement carries the message's id and timestamp, so the
    sender can tell its own messages apart in a later ``history``. While
    Redis cannot store it, the message is kept in the outbox and delivered
    here as ``pending`` (no id yet); ``message stored`` follows.
    """
    member = logged_in_member()
    message = clean_message(text, app_config()["MAX_MESSAGE_CHARS"])
    client_id = clean_client_id(options)
    state = chat_state()
    sid = current_sid()
    _spend_client_budget(state, message)
    try:
        accepted = state.outbox.accept(
            member.room, member.name, message, client_id, sid
        )
    except SlowMode as slow:
        raise Refused(
            "slow_mode", f"slow mode: you can send again in {slow.seconds} s"
        ) from None
    except Muted as muted:
        # The store itself checks, in the same step as the write.
        mute = muted.entry
        raise Refused(
            "muted", f"muted by a moderator{until(mute)}: {mute['reason']}"
        ) from None
    entry = accepted.entry
    metrics.MESSAGES_IN.inc()
    if accepted.status == "duplicate":
        # A resend (a page resends what was not acknowledged when it
        # reconnects). The instance that stored it may have died before
        # publishing it: then the room would get it only from a replay of
        # the stream, after what its sender typed next. So it goes out
        # again, in its sender's order; every instance delivers an id once
        # (chat.messages.delivered). One still waiting in the outbox (no id
        # yet) is the outbox's to announce.
        if state.redis and "id" in entry:
            state.fanout.send(member.room, entry, sid, False)
        return _ack(entry)
    metrics.MESSAGES_OUT.inc()
    state.fanout.send(member.room, entry, sid, accepted.status == "pending")
    return _ack(entry)


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


@guarded("typing", limiter="typing_limiter")
def on_typing(*_):
    """Tell the rest of the room this user is typing."""
    member = logged_in_member()
    emit("typing", {"username": member.name}, to=member.room, include_self=False)


@guarded("stop typing", limiter="typing_limiter")
def on_stop_typing(*_):
    """Tell the rest of the room this user stopped typing."""
    member = logged_in_member()
    emit("stop typing", {"username": member.name}, to=member.room, include_self=False)


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


def on_handler_error(exc):
    """A bug must not kill the connection: log it and tell the client."""
    log.exception(
        "handler failed",
        extra={"sid": getattr(request, "sid", "?"), "reason": "server_error"},
    )
    metrics.REFUSED.labels("server_error").inc()
    chat_state().failures.add()
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
