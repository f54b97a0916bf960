"""The moderation API: JSON in and out, for operators and their scripts.

Every request carries ``Authorization: Bearer <token>`` with one of
OPERATOR_TOKENS (compared in constant time; none configured: the API does
not exist). A missing or wrong token gets 401 and nothing else, and no
answer ever repeats a token. Every action is rate-limited per operator,
recorded in the audit trail and logged.

    POST   /api/moderation/bans  {"name" | "address", "reason", "seconds"?, "room"?}
    DELETE /api/moderation/bans       {"name" | "address", "room"?}
    GET    /api/moderation/bans
    POST   /api/moderation/mutes      {"room", "name", "reason", "seconds"?}
    DELETE /api/moderation/mutes      {"room", "name"}
    POST   /api/moderation/kicks      {"room", "name", "reason"}
    POST   /api/moderation/moderators {"room", "name"}
    DELETE /api/moderation/moderators {"room", "name"}
    PUT    /api/moderation/rooms/<room>/slow   {"seconds"}   (0: off)
    DELETE /api/moderation/rooms/<room>/messages/<id>   {"reason"}
    GET    /api/moderation/audit?count=100
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging

from flask import Blueprint, abort, current_app, g, jsonify, request

from chat.messages.entries import is_entry_id
from chat.moderation import actions
from chat.transport.clientaddr import client_key
from chat.validation import Refused, clean_name, clean_room

log = logging.getLogger(__name__)

bp = Blueprint("moderation", __name__, url_prefix="/api/moderation")

MAX_SECONDS = 10 * 365 * 86400


def _operator() -> str | None:
    """``operator-<n>`` for the n-th configured token, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    found = None
    for index, known in enumerate(current_app.config["OPERATOR_TOKENS"]):
        # Every token is compared, so the time says nothing of which matched.
        if hmac.compare_digest(token.encode(), known.encode()):
            found = f"operator-{index + 1}"
    return found


def _refused(status: int, reason: str, message: str):
    answer = jsonify({"error": reason, "message": message})
    answer.status_code = status
    if status == 401:
        answer.headers["WWW-Authenticate"] = 'Bearer realm="moderation"'
    return answer


def operator_only(view):
    @functools.wraps(view)
    def run(*args, **kwargs):
        if not current_app.config["OPERATOR_TOKENS"]:
            abort(404)
        operator = _operator()
        if operator is None:
            return _refused(401, "unauthorized", "An operator token is required.")
        if not current_app.extensions["chat"].operator_actions.allow(operator):
            return _refused(429, "rate_limited", "Too many actions; slow down.")
        g.operator = operator
        try:
            return view(*args, **kwargs)
        except Refused as refusal:
            return _refused(400, refusal.reason, refusal.detail)

    return run


def _body() -> dict:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def _reason(body: dict) -> str:
    return actions.reason_of(body)


def _seconds(body: dict) -> int | None:
    return actions.seconds_of(body, None, MAX_SECONDS)


def _target(body: dict) -> tuple[str, str]:
    """("name", a checked name) or ("address", its client key)."""
    config = current_app.config
    if "name" in body:
        return "name", clean_name(body["name"], config["MAX_NAME_CHARS"])
    address = body.get("address")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise Refused("invalid_target", "Give a name or an address.") from None
    # An IPv6 client is banned by its prefix, as every per-client cap counts it.
    return "address", client_key(address, config["CLIENT_IPV6_PREFIX"])


def _state():
    return current_app.extensions["chat"]


def _room(value) -> str:
    return clean_room(value, current_app.config["MAX_ROOM_CHARS"])


def _name(value) -> str:
    return clean_name(value, current_app.config["MAX_NAME_CHARS"])


@bp.post("/bans")
@operator_only
def ban():
    body = _body()
    kind, value = _target(body)
    reason, seconds = _reason(body), _seconds(body)
    if "room" in body:
        if kind != "name":
            raise Refused("invalid_target", "A ban from one room names a user.")
        room = _room(body["room"])
        actions.ban_from_room(_state(), g.operator, room, value, reason, seconds)
        return {"banned": {"room": room, "name": value, "seconds": seconds}}, 201
    _state().moderation.ban(kind, value, g.operator, reason, seconds)
    actions.record(
        _state(),
        g.operator,
        "ban",
        kind=kind,
        value=value,
        reason=reason,
        seconds=seconds,
    )
    return {"banned": {"kind": kind, "value": value, "seconds": seconds}}, 201


@bp.delete("/bans")
@operator_only
def unban():
    body = _body()
    kind, value = _target(body)
    room = _room(body["room"]) if "room" in body else None
    removed = _state().moderation.unban(kind, value, room=room)
    actions.record(_state(), g.operator, "unban", kind=kind, value=value, room=room)
    return {"unbanned": removed}


@bp.post("/kicks")
@operator_only
def kick():
    body = _body()
    room, name, reason = _room(body.get("room")), _name(body.get("name")), _reason(body)
    actions.ban_from_room(_state(), g.operator, room, name, reason, actions.KICK_S)
    return {"kicked": {"room": room, "name": name, "seconds": actions.KICK_S}}, 201


@bp.post("/moderators")
@operator_only
def add_moderator():
    body = _body()
    room, name = _room(body.get("room")), _name(body.get("name"))
    if not actions.make_moderator(_state(), g.operator, room, name):
        return _refused(
            409, "not_logged_in", f"{name} must be logged in to {room} (their token)."
        )
    return {"moderator": {"room": room, "name": name}}, 201


@bp.delete("/moderators")
@operator_only
def remove_moderator():
    body = _body()
    room, name = _room(body.get("room")), _name(body.get("name"))
    removed = _state().moderation.remove_moderator(room, name)
    actions.record(_state(), g.operator, "not moderator", room=room, name=name)
    return {"removed": removed}


@bp.put("/rooms/<room>/slow")
@operator_only
def slow(room: str):
    seconds = actions.slow_seconds_of(_body())
    actions.set_slow(_state(), g.operator, _room(room), seconds)
    return {"slow": {"room": _room(room), "seconds": seconds}}


@bp.get("/bans")
@operator_only
def bans():
    return {"bans": current_app.extensions["chat"].moderation.bans()}


@bp.post("/mutes")
@operator_only
def mute():
    body = _body()
    room, name = _room(body.get("room")), _name(body.get("name"))
    reason, seconds = _reason(body), _seconds(body)
    actions.mute(_state(), g.operator, room, name, reason, seconds)
    return {"muted": {"room": room, "name": name, "seconds": seconds}}, 201


@bp.delete("/mutes")
@operator_only
def unmute():
    body = _body()
    room, name = _room(body.get("room")), _name(body.get("name"))
    return {"unmuted": actions.unmute(_state(), g.operator, room, name)}


@bp.delete("/rooms/<room>/messages/<entry_id>")
@operator_only
def delete_message(room: str, entry_id: str):
    room = clean_room(room, current_app.config["MAX_ROOM_CHARS"])
    if not is_entry_id(entry_id):
        raise Refused("invalid_id", "Not a message id.")
    reason = _reason(_body())
    return {"deleted": actions.delete(_state(), g.operator, room, entry_id, reason)}


@bp.get("/audit")
@operator_only
def audit():
    count = request.args.get("count", "100")
    count = min(int(count), 1000) if count.isdigit() else 100
    return {"audit": current_app.extensions["chat"].moderation.audit(count)}
