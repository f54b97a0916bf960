"""Every setting of the chat, read from the environment once.

Limits carry their unit in the name. Tests use ``TestConfig``, which never
talks to Redis: the Flask-SocketIO test client refuses a message queue.
"""

from __future__ import annotations

import logging
import os
import secrets

log = logging.getLogger(__name__)


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def _secret_key() -> str:
    key = os.environ.get("SECRET_KEY")
    if key:
        return key
    # Sessions are not shared between instances, so a random key only costs
    # Flask session cookies across restarts; still say so once.
    log.warning("SECRET_KEY is not set; using a random key for this process")
    return secrets.token_hex(32)


class Config:
    """Production settings; each one documented in the README."""

    def __init__(self) -> None:
        self.SECRET_KEY = _secret_key()
        # Unset means one instance: presence and history live in this process.
        self.REDIS_URL = os.environ.get("REDIS_URL") or None
        self.REDIS_CHANNEL = os.environ.get("REDIS_CHANNEL") or "flask-socketio"
        self.REDIS_KEY_PREFIX = os.environ.get("REDIS_KEY_PREFIX") or "chat:"
        self.REDIS_TIMEOUT_S = _float("REDIS_TIMEOUT_S", 2.0)
        # "*" widens CORS to any origin; a comma-separated list names origins.
        cors = os.environ.get("CORS_ORIGINS", "")
        self.CORS_ORIGINS: list[str] | str | None = (
            "*" if cors == "*" else [o for o in cors.split(",") if o] or None
        )
        self.MAX_NAME_CHARS = _int("MAX_NAME_CHARS", 32)
        self.MAX_MESSAGE_CHARS = _int("MAX_MESSAGE_CHARS", 2000)
        self.MAX_ROOM_CHARS = _int("MAX_ROOM_CHARS", 32)
        self.MAX_HTTP_BUFFER_BYTES = _int("MAX_HTTP_BUFFER_BYTES", 64 * 1024)
        self.PING_INTERVAL_S = _int("PING_INTERVAL_S", 25)
        self.PING_TIMEOUT_S = _int("PING_TIMEOUT_S", 20)
        # Token bucket per connection: a burst, then a sustained rate.
        self.RATE_BURST = _int("RATE_BURST", 20)
        self.RATE_PER_S = _float("RATE_PER_S", 10.0)
        self.PRESENCE_HEARTBEAT_S = _float("PRESENCE_HEARTBEAT_S", 5.0)
        self.PRESENCE_TTL_S = _int("PRESENCE_TTL_S", 15)
        self.HISTORY_LENGTH = _int("HISTORY_LENGTH", 50)
        # ``login`` lists who is online only in rooms up to this size.
        self.MAX_USERS_LISTED = _int("MAX_USERS_LISTED", 100)
        self.HISTORY_RETAIN = _int("HISTORY_RETAIN", 1000)
        self.LOG_FORMAT = os.environ.get("LOG_FORMAT") or "text"
        self.LOG_LEVEL = os.environ.get("LOG_LEVEL") or "INFO"
        self.TESTING = False


class TestConfig(Config):
    """Unit tests: no Redis (the Flask-SocketIO test client refuses a message
    queue) and a fixed key; a test changes a limit on it before building an app."""

    def __init__(self) -> None:
        super().__init__()
        self.SECRET_KEY = "test"
        self.REDIS_URL = None
        self.TESTING = True
