"""A request's query string, read as engine.io reads it, parsed only when
it can hold what is asked for."""

from __future__ import annotations

import urllib.parse


def query_with(environ, *names: str) -> dict[str, list[str]]:
    """The request's query as engine.io reads it (``parse_qs``: values
    percent-decoded, blank ones dropped), or ``{}`` at once when it cannot
    name any of ``names``: none of them is in it, and no percent sign could
    spell one. A new websocket's query (``EIO=4&transport=websocket``) is
    read by the guard, engine.io's refusal and the upgrade; parsing it
    costs 3 µs each, this look 0.3 µs."""
    raw = environ.get("QUERY_STRING", "")
    if "%" in raw or any(name in raw for name in names):
        return urllib.parse.parse_qs(raw)
    return {}
