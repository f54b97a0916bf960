"""The JSON codec socket.io uses for packets: orjson, and malformed input tamed.

python-socketio decodes packet payloads with ``json.loads`` and, on bad JSON,
logs a traceback and drops the packet silently. Here a payload that is not
JSON becomes the event ``malformed packet``, which the catch-all handler
answers with a ``chat error``, so the client learns what happened and the log
stays one line long.
"""

from __future__ import annotations

import orjson

MALFORMED_EVENT = "malformed packet"


def dumps(obj, **_options) -> str:
    """Compact JSON text; python-socketio passes ``separators`` we do not need."""
    return orjson.dumps(obj).decode()


def loads(text, **_options):
    """Decode JSON; anything undecodable is reported as a malformed packet."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return [MALFORMED_EVENT]
