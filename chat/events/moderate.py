"""``moderate``: what a room's moderator does from the page, in their room
only. A moderator is the holder of a name an operator made one while it was
logged in (chat.web.moderation): the moderator's token is kept (hashed)
with it, so nobody else can act under the name, even while it is free.

    moderate {"action": "delete", "id", "reason"?}
    moderate {"action": "mute" | "kick" | "ban", "name", "reason"?, "seconds"?}
    moderate {"action": "unmute", "name"}
    moderate {"action": "slow", "seconds"}          (0: off)
"""

from __future__ import annotations

from flask import current_app

from chat.events.context import chat_state, guarded, logged_in_member
from chat.messages.entries import is_entry_id
from chat.moderation import actions
from chat.validation import Refused, clean_name

MAX_SECONDS = 365 * 86400


def _reason(request: dict) -> str:
    return actions.reason_of(request, default="no reason given")


def _seconds(request: dict, default):
    return actions.seconds_of(request, default, MAX_SECONDS)


@guarded("moderate")
def on_moderate(request=None, *_):
    """One moderation action in the moderator's own room."""
    member = logged_in_member()
    state = chat_state()
    if not state.moderation.is_moderator(member.room, member.name, member.token):
        raise Refused("not_moderator", "Only a moderator of this room can do that.")
    request = request if isinstance(request, dict) else {}
    action = request.get("action")
    by, room = f"moderator:{member.name}", member.room
    if action == "delete":
        entry_id = request.get("id")
        if not is_entry_id(entry_id):
            raise Refused("invalid_id", "Not a message id.")
        return {"ok": actions.delete(state, by, room, entry_id, _reason(request))}
    if action == "slow":
        actions.set_slow(state, by, room, actions.slow_seconds_of(request))
        return {"ok": True}
    name = clean_name(request.get("name"), current_app.config["MAX_NAME_CHARS"])
    if state.moderation.is_moderator(room, name):
        raise Refused("is_moderator", "A moderator is not moderated here.")
    if action == "mute":
        reason, seconds = _reason(request), _seconds(request, 600)
        actions.mute(state, by, room, name, reason, seconds)
    elif action == "unmute":
        actions.unmute(state, by, room, name)
    elif action == "kick":
        actions.ban_from_room(state, by, room, name, _reason(request), actions.KICK_S)
    elif action == "ban":
        reason, seconds = _reason(request), _seconds(request, None)
        actions.ban_from_room(state, by, room, name, reason, seconds)
    else:
        raise Refused("unknown_action", "delete, mute, unmute, kick, ban or slow")
    return {"ok": True}
