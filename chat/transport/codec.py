"""The JSON codec socket.io and engine.io use for packets: orjson.

It must raise on bad input like ``json`` does: engine.io relies on that to
tell a JSON payload from a plain string such as the upgrade probe.
"""

from __future__ import annotations

import orjson


def dumps(obj, **_options) -> str:
    """Compact JSON text; python-socketio passes ``separators`` we do not need."""
    return orjson.dumps(obj).decode()


def loads(text, **_options):
    """Decode JSON; raises ``ValueError`` (orjson.JSONDecodeError) on bad input."""
    return orjson.loads(text)
