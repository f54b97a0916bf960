"""What a moderator or an operator does, one function per action, shared by
the operator API (chat.web.moderation) and the page's ``moderate`` event
(chat.events.moderate): each changes the store, tells the room through the
fan-out, and records who did it in the audit trail and the log."""

from __future__ import annotations

import logging

from chat.validation import Refused

log = logging.getLogger(__name__)

# A kicked user cannot log back in to the room for this long.
KICK_S = 60
MAX_REASON_CHARS = 200
MAX_SLOW_S = 3600


# -- what a request says (the API's JSON body, the page's ``moderate``) -----
def reason_of(request: dict, default: str | None = None) -> str:
    """The request's reason, trimmed; without one, ``default`` (or refused
    when there is none)."""
    reason = request.get("reason")
    if isinstance(reason, str) and reason.strip():
        return reason.strip()[:MAX_REASON_CHARS]
    if default is None:
        raise Refused("invalid_reason", "Say why (reason).")
    return default


def seconds_of(request: dict, default: int | None, most: int) -> int | None:
    """How long an action lasts: 1 to ``most`` seconds, or ``default``
    (None: for good)."""
    seconds = request.get("seconds", default)
    if seconds is None:
        return None
    if not isinstance(seconds, int) or not 1 <= seconds <= most:
        raise Refused("invalid_seconds", f"seconds: 1 to {most}, or none")
    return seconds


def slow_seconds_of(request: dict) -> int:
    """A slow mode's interval: 0 (off) to MAX_SLOW_S."""
    seconds = request.get("seconds")
    if not isinstance(seconds, int) or not 0 <= seconds <= MAX_SLOW_S:
        raise Refused("invalid_seconds", f"seconds: 0 (off) to {MAX_SLOW_S}")
    return seconds


def record(state, by: str, action: str, **fields) -> None:
    state.moderation.record({"action": action, "by": by, **fields})
    extra = {"event": "moderation"}
    extra.update({k: fields[k] for k in ("room", "reason") if fields.get(k)})
    log.info("moderation: %s by %s", action, by, extra=extra)


def delete(state, by: str, room: str, entry_id: str, reason: str) -> bool:
    removed = state.history.delete(room, entry_id)
    # Pages that show it drop it, whether or not history still had it.
    state.fanout.deleted(room, entry_id)
    record(state, by, "delete", room=room, id=entry_id, reason=reason)
    return removed


def mute(state, by: str, room: str, name: str, reason: str, seconds) -> None:
    state.moderation.mute(room, name, by, reason, seconds)
    record(state, by, "mute", room=room, name=name, reason=reason, seconds=seconds)


def unmute(state, by: str, room: str, name: str) -> bool:
    removed = state.moderation.unmute(room, name)
    record(state, by, "unmute", room=room, name=name)
    return removed


def ban_from_room(state, by: str, room: str, name: str, reason: str, seconds):
    """Out of ``room`` now (its sessions closed, the room told why), and
    refused at login there for ``seconds`` (None: for good)."""
    state.moderation.ban("name", name, by, reason, seconds, room=room)
    state.fanout.kick(room, name, reason)
    action = "kick" if seconds == KICK_S else "ban"
    record(state, by, action, room=room, name=name, reason=reason, seconds=seconds)


def make_moderator(state, by: str, room: str, name: str) -> bool:
    """``name``, logged in to ``room`` now, becomes its moderator: bound to
    the token of that login. False when nobody holds the name there."""
    token = state.presence.token_of(room, name)
    if token is None:
        return False
    state.moderation.add_moderator(room, name, token)
    record(state, by, "moderator", room=room, name=name)
    return True


def set_slow(state, by: str, room: str, seconds: int) -> None:
    state.moderation.set_slow(room, seconds)
    state.fanout.slow_mode(room, seconds)
    record(state, by, "slow", room=room, seconds=seconds)
