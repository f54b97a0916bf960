"""Checks on what clients send, done at the edge before anything is stored.

Each check returns the cleaned value or raises ``Refused`` with a reason code
the client can act on and a sentence a person can read.
"""

from __future__ import annotations

import re
import unicodedata


class Refused(Exception):
    """An input the server will not act on; becomes a ``chat error`` event."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt, Unicode
# 15.1): characters that render as nothing. The standard library has no
# table for the property, and it is small and stable.
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
# Control, format, line/paragraph separators, surrogates, private use and
# unassigned code points: none of them belongs in a name people read.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Letters and symbols whose glyph is empty: the fillers and blanks of the
# Unicode names (``blank_glyphs`` derives this from the data; a test checks
# that it still does for the Python in use). ``Alice`` + U+2800 looks
# exactly like ``Alice``.
BLANK_GLYPHS = frozenset(
    "\u115f\u1160\u2800\u303f\u3164\uffa0\U0001d159\U0001da7f\U0001da80"
)
# Combining marks allowed on one base character: enough for every script's
# real text after NFKC, too few to stack a name over the lines around it.
MAX_MARKS_PER_CHAR = 3
_ROOM = re.compile(r"[a-z0-9_-]{1,32}")


def blank_glyphs(max_code_point: int = 0x10FFFF) -> frozenset[str]:
    """Letters and symbols (Lo, So) Unicode names as fillers, blanks or
    spaces, and the musical null notehead: what ``BLANK_GLYPHS`` holds."""
    found = set()
    for code in range(max_code_point + 1):
        ch = chr(code)
        if unicodedata.category(ch) not in ("Lo", "So"):
            continue
        name = unicodedata.name(ch, "")
        spacing = name.endswith(" SPACE") and not name.startswith("SYMBOL FOR")
        if name.endswith(("FILLER", "BLANK")) or spacing or "NULL NOTEHEAD" in name:
            found.add(ch)
    return frozenset(found)


def _is_blank(ch: str) -> bool:
    """True for a character that shows nothing where it stands."""
    return ch in BLANK_GLYPHS or _is_invisible(ch)


def _is_visible(ch: str) -> bool:
    """A letter, digit, punctuation mark or symbol with a glyph of its own."""
    return unicodedata.category(ch)[0] in "LNPS" and not _is_blank(ch)


def _marks_stacked(text: str) -> int:
    """The longest run of combining marks in ``text``."""
    longest = run = 0
    for ch in text:
        run = run + 1 if unicodedata.category(ch)[0] == "M" else 0
        longest = max(longest, run)
    return longest


# The default-ignorable ranges as one character class: checked in C, not
# range by range in Python for every character of every message.
_INVISIBLE = re.compile(
    "["
    + "".join(
        f"{re.escape(chr(low))}-{re.escape(chr(high))}"
        for low, high in _DEFAULT_IGNORABLE
    )
    + "]"
)


# What ``name_key`` and ``clean_name`` take out of a name, as character
# classes: removed in C by one ``sub``, not by a Python call per character
# of every name at every login.
_BLANKS = re.compile("[" + "".join(map(re.escape, sorted(BLANK_GLYPHS))) + "]")
_BLANK_OR_INVISIBLE = re.compile(_BLANKS.pattern[:-1] + _INVISIBLE.pattern[1:])


def _is_invisible(ch: str) -> bool:
    return _INVISIBLE.match(ch) is not None


def has_refused_chars(text: str) -> bool:
    """True if ``text`` holds a control, format or default-ignorable character."""
    if text.isascii():
        # In ASCII the only refused characters are the controls (Cc), and
        # they are exactly the ones that are not printable.
        return not text.isprintable()
    return _INVISIBLE.search(text) is not None or any(
        unicodedata.category(ch) in _REFUSED_CATEGORIES for ch in text
    )


def name_key(name: str) -> str:
    """How names are compared: NFKC, casefolded, NFKC again (NFKC_Casefold),
    without blank glyphs, runs of spaces as one: names that look the same
    are the same name."""
    folded = unicodedata.normalize("NFKC", name.casefold())
    if not folded.isascii():
        # (No blank glyph or invisible character is ASCII.)
        folded = _BLANK_OR_INVISIBLE.sub("", folded)
    return " ".join(folded.split())


def clean_name(raw: object, max_chars: int) -> str:
    """A display name: NFKC-normalised, trimmed, 1..max_chars, all visible.

    NFKC makes look-alike spellings of one name (full-width letters,
    ligatures, compatibility forms) the same name; it runs before the
    invisible-character check because it can turn one invisible character
    into another (U+3164 becomes U+1160).
    """
    if not isinstance(raw, str):
        raise Refused("invalid_name", "The name must be text.")
    name = unicodedata.normalize("NFKC", raw).strip()
    if not name:
        raise Refused("invalid_name", "The name must not be empty.")
    if not name.isascii():
        name = _BLANKS.sub("", name).strip()
    if len(name) > max_chars:
        raise Refused(
            "invalid_name", f"The name is longer than {max_chars} characters."
        )
    if has_refused_chars(name):
        raise Refused(
            "invalid_name", "The name contains control or invisible characters."
        )
    if not any(_is_visible(ch) for ch in name):
        raise Refused(
            "invalid_name", "The name needs at least one visible letter or sign."
        )
    # (ASCII has no combining marks.)
    if not name.isascii() and _marks_stacked(name) > MAX_MARKS_PER_CHAR:
        raise Refused(
            "invalid_name",
            f"At most {MAX_MARKS_PER_CHAR} accents or marks on one character.",
        )
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


def clean_client_id(raw: object) -> str | None:
    """The optional ``{clientId}`` of ``new message``: 1..64 printable ASCII."""
    if not isinstance(raw, dict) or raw.get("clientId") is None:
        return None
    client_id = raw["clientId"]
    if (
        not isinstance(client_id, str)
        or not 1 <= len(client_id) <= 64
        or not client_id.isascii()
        or not client_id.isprintable()
    ):
        raise Refused("invalid_client_id", "clientId is 1 to 64 ASCII characters.")
    return client_id


# Where a login without a room goes; always admitted (chat.presence.rooms).
DEFAULT_ROOM = "lobby"


def clean_room(raw: object, max_chars: int = 32, default: str = DEFAULT_ROOM) -> str:
    """A room name: trimmed, lower-cased, then exactly ``[a-z0-9_-]{1,32}``.

    ``max_chars`` may only shorten the 32 of the rule.
    """
    if raw is None or raw == "":
        return default
    if not isinstance(raw, str):
        raise Refused("invalid_room", "The room must be text.")
    room = raw.strip()
    room = room.lower() if room.isascii() else room
    if not _ROOM.fullmatch(room) or len(room) > max_chars:
        raise Refused(
            "invalid_room",
            f"A room name is 1 to {min(max_chars, 32)} of a-z, 0-9, - and _.",
        )
    return room
