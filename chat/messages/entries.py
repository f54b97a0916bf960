"""A message as the chat keeps it: its id, who sent it, its text, its time.

Ids have the form ``<ms>-<seq>`` (a Redis stream id) and increase across the
cluster; the in-memory history makes ids of the same form.
"""

from __future__ import annotations

import hashlib
import time
import uuid

from chat.validation import name_key


class Muted(Exception):
    """The sender is muted in the room (checked by the store itself, in the
    same step as the write): ``entry`` says by whom, why and until when."""

    def __init__(self, entry: dict) -> None:
        super().__init__(entry.get("reason", ""))
        self.entry = entry


class SlowMode(Exception):
    """The room is in slow mode and the sender sent within its interval:
    ``seconds`` until they may send again."""

    def __init__(self, seconds: int) -> None:
        super().__init__(f"{seconds} s")
        self.seconds = seconds


def parse_id(entry_id: str) -> tuple[int, int]:
    """``"17-3"`` -> ``(17, 3)``; anything malformed sorts before every id."""
    try:
        ms, _, seq = entry_id.partition("-")
        return int(ms), int(seq or 0)
    except (AttributeError, ValueError):
        return (-1, -1)


# Both parts of a Redis stream id are unsigned 64-bit integers.
_ID_PART_MAX = 2**64 - 1


def is_entry_id(value) -> bool:
    """True for an id Redis could have given: ``<ms>-<seq>``, both decimal
    and within 64 bits (a larger one would make Redis refuse the read)."""
    if not isinstance(value, str) or len(value) > 41:
        return False
    ms, sep, seq = value.partition("-")
    if not (sep and ms.isdigit() and seq.isdigit() and value.isascii()):
        return False
    return int(ms) <= _ID_PART_MAX and int(seq) <= _ID_PART_MAX


def public(entry: dict) -> dict:
    """What other users may see of a message: never its sender's clientId
    (a page that trusted one could be made to hide its own lines)."""
    if "clientId" not in entry:
        return entry
    return {k: v for k, v in entry.items() if k != "clientId"}


def client_id_key(room: str, username: str, client_id: str) -> str:
    """One key per (room, sender, clientId), whatever characters each holds:
    the parts are hashed together length-prefixed, so ``ann`` with ``x:1``
    and ``ann:x`` with ``1`` are two keys."""
    parts = (room, name_key(username), client_id)
    joined = "".join(f"{len(part)}:{part}" for part in parts)
    return hashlib.sha256(joined.encode()).hexdigest()[:32]


def make_entry(
    entry_id: str | None, username: str, message: str, client_id: str | None = None
) -> dict:
    ts = parse_id(entry_id)[0] if entry_id else int(time.time() * 1000)
    entry = {"id": entry_id, "username": username, "message": message, "ts": ts}
    if client_id:
        entry["clientId"] = client_id
    return entry


def pending_entry(username: str, message: str, client_id: str) -> dict:
    """A message accepted but not stored yet: no id, ``pending: true``, and
    a ``pendingId`` of its own that ``message stored`` names later (the
    clientId stays the sender's)."""
    entry = make_entry(None, username, message, client_id)
    return {**entry, "pending": True, "pendingId": uuid.uuid4().hex}


# What an entry costs in Redis beyond its text: the id, the field names and
# the stream's own bookkeeping (measured: about 60 bytes an entry).
ENTRY_OVERHEAD_BYTES = 64


def entry_size(username: str, message: str, client_id: str | None) -> int:
    """The bytes a stored message counts for in its room's budget."""
    text = len(username.encode()) + len(message.encode())
    return text + len(client_id or "") + ENTRY_OVERHEAD_BYTES
