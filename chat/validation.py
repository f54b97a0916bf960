"""Checks on what clients send, done at the edge before anything is stored.

Each check returns the cleaned value or raises ``Refused`` with a reason code
the client can act on and a sentence a person can read.
"""

from __future__ import annotations

import unicodedata


class Refused(Exception):
    """An input the server will not act on; becomes a ``chat error`` event."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _has_control_chars(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text)


def clean_name(raw: object, max_chars: int) -> str:
    """A display name: a string, trimmed, 1..max_chars, no control characters."""
    if not isinstance(raw, str):
        raise Refused("invalid_name", "The name must be text.")
    name = raw.strip()
    if not name:
        raise Refused("invalid_name", "The name must not be empty.")
    if len(name) > max_chars:
        raise Refused(
            "invalid_name", f"The name is longer than {max_chars} characters."
        )
    if _has_control_chars(name):
        raise Refused("invalid_name", "The name contains control characters.")
    return name


def clean_message(raw: object, max_chars: int) -> str:
    """A chat message: a string, trimmed, 1..max_chars (newlines are allowed)."""
    if not isinstance(raw, str):
        raise Refused("invalid_message", "A message must be text.")
    text = raw.strip()
    if not text:
        raise Refused("invalid_message", "A message must not be empty.")
    if len(text) > max_chars:
        raise Refused(
            "message_too_long", f"A message is at most {max_chars} characters."
        )
    return text


def clean_room(raw: object, max_chars: int, default: str = "lobby") -> str:
    """A room name: optional, trimmed, lower-cased, letters, digits, - and _."""
    if raw is None or raw == "":
        return default
    if not isinstance(raw, str):
        raise Refused("invalid_room", "The room must be text.")
    room = raw.strip().lower()
    if not room or len(room) > max_chars:
        raise Refused("invalid_room", f"A room name is 1 to {max_chars} characters.")
    if not all(ch.isalnum() or ch in "-_" for ch in room):
        raise Refused("invalid_room", "A room name uses letters, digits, - and _.")
    return room
