"""The moderation API: JSON in and out, for operators and their scripts.

Every request carries ``Authorization: Bearer <token>`` with one of
OPERATOR_TOKENS (compared in constant time; none configured: the API does
not exist). A missing or wrong token gets 401 and nothing else, and no
answer ever repeats a token. Every action is rate-limited per operator,
recorded in the audit trail and logged.

    POST   /api/moderation/bans       {"name" | "address", "reason", "seconds"?}
    DELETE /api/moderation/bans       {"name" | "address"}
    GET    /api/moderation/bans
    POST   /api/moderation/mutes      {"room", "name", "reason", "seconds"?}
    DELETE /api/moderation/mutes      {"room", "name"}
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
from chat.transport.clientaddr import client_key
from chat.validation import Refused, clean_name, clean_room

log = logging.getLogger(__name__)

bp = Blueprint("moderation", __name__, url_prefix="/api/moderation")

MAX_REASON_CHARS = 200
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
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise Refused("invalid_reason", "Say why (reason).")
    return reason.strip()[:MAX_REASON_CHARS]


def _seconds(body: dict) -> int | None:
    seconds = body.get("seconds")
    if seconds is None:
        return None
    if not isinstance(seconds, int) or not 1 <= seconds <= MAX_SECONDS:
        raise Refused("invalid_seconds", f"seconds: 1 to {MAX_SECONDS}, or none")
    return seconds


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


def _record(action: str, **fields) -> None:
    state = current_app.extensions["chat"]
    entry = {"action": action, "by": g.operator, **fields}
    state.moderation.record(entry)
    log.info(
        "moderation: %s",
        action,
        extra={"event": "moderation", "reason": fields.get("reason", "")},
    )


@bp.post("/bans")
@operator_only
def ban():
    body = _body()
    kind, value = _target(body)
    reason, seconds = _reason(body), _seconds(body)
    state = current_app.extensions["chat"]
    state.moderation.ban(kind, value, g.operator, reason, seconds)
    _record("ban", kind=kind, value=value, reason=reason, seconds=seconds)
    return {"banned": {"kind": kind, "value": value, "seconds": seconds}}, 201


@bp.delete("/bans")
@operator_only
def unban():
    kind, value = _target(_body())
    removed = current_app.extensions["chat"].moderation.unban(kind, value)
    _record("unban", kind=kind, value=value)
    return {"unbanned": removed}


@bp.get("/bans")
@operator_only
def bans():
    return {"bans": current_app.extensions["chat"].moderation.bans()}


@bp.post("/mutes")
@operator_only
def mute():
    body = _body()
    config = current_app.config
    room = clean_room(body.get("room"), config["MAX_ROOM_CHARS"])
    name = clean_name(body.get("name"), config["MAX_NAME_CHARS"])
    reason, seconds = _reason(body), _seconds(body)
    current_app.extensions["chat"].moderation.mute(
        room, name, g.operator, reason, seconds
    )
    _record("mute", room=room, name=name, reason=reason, seconds=seconds)
    return {"muted": {"room": room, "name": name, "seconds": seconds}}, 201


@bp.delete("/mutes")
@operator_only
def unmute():
    body = _body()
    config = current_app.config
    room = clean_room(body.get("room"), config["MAX_ROOM_CHARS"])
    name = clean_name(body.get("name"), config["MAX_NAME_CHARS"])
    removed = current_app.extensions["chat"].moderation.unmute(room, name)
    _record("unmute", room=room, name=name)
    return {"unmuted": removed}


@bp.delete("/rooms/<room>/messages/<entry_id>")
@operator_only
def delete_message(room: str, entry_id: str):
    room = clean_room(room, current_app.config["MAX_ROOM_CHARS"])
    if not is_entry_id(entry_id):
        raise Refused("invalid_id", "Not a message id.")
    reason = _reason(_body())
    state = current_app.extensions["chat"]
    removed = state.history.delete(room, entry_id)
    # Pages that show it drop it, whether or not history still had it.
    state.fanout.deleted(room, entry_id)
    _record("delete", room=room, id=entry_id, reason=reason)
    return {"deleted": removed}


@bp.get("/audit")
@operator_only
def audit():
    count = request.args.get("count", "100")
    count = min(int(count), 1000) if count.isdigit() else 100
    return {"audit": current_app.extensions["chat"].moderation.audit(count)}
