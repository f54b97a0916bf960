"""Every setting of the chat, read from the environment once, and checked.

Limits carry their unit in the name. A value that cannot work stops the
process with one line naming the variable, its value and what is expected
(``SettingError``); an environment variable that is not a setting but is
spelled like one gets a warning naming the real one. Tests use
``TestConfig``, which never talks to Redis: the Flask-SocketIO test client
refuses a message queue.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import secrets

log = logging.getLogger(__name__)

# Read from the environment by gunicorn.conf.py, the deploy tooling or the
# platform, not by this module: never "close to a setting".
OTHER_NAMES = frozenset(
    {
        "PORT",
        "HOST",
        "WORKER_CONNECTIONS",
        "GRACEFUL_TIMEOUT_S",
        "ACCESS_LOG",
        "INSTANCES",
        "SENTINEL",
        "REDIS_CLUSTER",
    }
)
REDIS_SCHEMES = (
    "redis",
    "rediss",
    "unix",
    "redis+sentinel",
    "redis+cluster",
    "rediss+cluster",
)


class SettingError(ValueError):
    """A setting whose value cannot work: one line says which and why."""

    def __init__(self, name: str, raw: str, expected: str) -> None:
        super().__init__(f"{name}={raw!r}: expected {expected}")
        self.name = name


def _raw(name: str) -> str | None:
    raw = os.environ.get(name)
    return None if raw is None or raw.strip() == "" else raw.strip()


def _bounds(low, high, unit: str) -> str:
    if high is None:
        return f"{unit} of at least {low}" if low is not None else unit
    return f"{unit} from {low} to {high}"


def _int(name: str, default: int, low: int | None = 0, high: int | None = None) -> int:
    raw = _raw(name)
    if raw is None:
        return default
    expected = _bounds(low, high, "a whole number")
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(name, raw, expected) from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise SettingError(name, raw, expected)
    return value


def _float(
    name: str, default: float, low: float = 0.0, above: float | None = None
) -> float:
    """A number of at least ``low`` (or greater than ``above``, when given)."""
    raw = _raw(name)
    if raw is None:
        return default
    expected = (
        f"a number greater than {above:g}"
        if above is not None
        else f"a number of at least {low:g}"
    )
    try:
        value = float(raw)
    except ValueError:
        raise SettingError(name, raw, expected) from None
    if (
        not math.isfinite(value)
        or value < low
        or (above is not None and value <= above)
    ):
        raise SettingError(name, raw, expected)
    return value


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = _raw(name)
    if raw is None:
        return default
    for choice in choices:
        if raw.lower() == choice.lower():
            return choice
    raise SettingError(name, raw, "one of " + ", ".join(choices))


def _list(name: str, default: str) -> list[str]:
    raw = os.environ.get(name)
    raw = default if raw is None else raw
    return [item.strip() for item in raw.split(",") if item.strip()]


def _networks(name: str, default: str) -> list[str]:
    import ipaddress

    items = _list(name, default)
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise SettingError(
                name,
                os.environ.get(name, default),
                "addresses or networks, comma-separated",
            ) from None
    return items


def _redis_url() -> str | None:
    raw = _raw("REDIS_URL")
    if raw is None:
        return None
    scheme = raw.partition("://")[0].lower()
    if "://" not in raw or scheme not in REDIS_SCHEMES:
        # The value may hold a password: only its scheme is shown.
        shown = f"{scheme}://…" if "://" in raw else "…"
        raise SettingError(
            "REDIS_URL",
            shown,
            "a URL starting " + ", ".join(f"{s}://" for s in REDIS_SCHEMES),
        )
    return raw


def _secret_key(warnings: list[str]) -> str:
    key = os.environ.get("SECRET_KEY")
    if key:
        return key
    # The chat keeps nothing in Flask's session, so a random key costs
    # nothing across restarts; still say so once.
    warnings.append("SECRET_KEY is not set; using a random key for this process")
    return secrets.token_hex(32)


def misspelled(names, environ) -> list[tuple[str, str]]:
    """(variable, the setting it is probably meant to be) for each variable
    of ``environ`` that is not a setting but is spelled almost like one."""
    found = []
    for variable in environ:
        if variable in names or variable in OTHER_NAMES:
            continue
        close = difflib.get_close_matches(variable, names, n=1, cutoff=0.85)
        if close:
            found.append((variable, close[0]))
    return sorted(found)


class Config:
    """Production settings; each one documented in the README."""

    def __init__(self) -> None:
        # Said once logging is set up (``create_app``), in its format.
        self.warnings: list[str] = []
        self.SECRET_KEY = _secret_key(self.warnings)
        # Unset means one instance: presence and history live in this process.
        self.REDIS_URL = _redis_url()
        self.REDIS_CHANNEL = os.environ.get("REDIS_CHANNEL") or "flask-socketio"
        self.REDIS_KEY_PREFIX = os.environ.get("REDIS_KEY_PREFIX") or "chat:"
        if self.REDIS_URL and "+cluster://" in self.REDIS_URL:
            # On a Redis Cluster the rooms are hash tags (chat.cluster.keys):
            # a brace in the prefix or channel would move the tag.
            for name in ("REDIS_KEY_PREFIX", "REDIS_CHANNEL"):
                if {"{", "}"} & set(getattr(self, name)):
                    raise SettingError(
                        name, getattr(self, name), "no { or } on a Redis Cluster"
                    )
        self.REDIS_TIMEOUT_S = _float("REDIS_TIMEOUT_S", 2.0, above=0)
        # A message's store waits this long for Redis, then goes to the outbox
        # (bounded) and is delivered locally as pending.
        self.STORE_TIMEOUT_S = _float("STORE_TIMEOUT_S", 0.2, above=0)
        # A message is acknowledged with its id only once this many Redis
        # replicas confirmed it (WAIT), within STORE_REPLICA_TIMEOUT_MS;
        # until then it is pending in the outbox. 0: the master's word.
        self.STORE_REPLICAS = _int("STORE_REPLICAS", 0)
        self.STORE_REPLICA_TIMEOUT_MS = _int("STORE_REPLICA_TIMEOUT_MS", 100, low=1)
        self.OUTBOX_MAX_MESSAGES = _int("OUTBOX_MAX_MESSAGES", 10000)
        self.OUTBOX_MAX_BYTES = _int("OUTBOX_MAX_BYTES", 16 * 1024 * 1024)
        # How long a clientId is remembered to store a resend once.
        self.CLIENT_ID_TTL_S = _int("CLIENT_ID_TTL_S", 600, low=1)
        # Events waiting to be published to the other instances.
        self.PUBLISH_QUEUE_MAX = _int("PUBLISH_QUEUE_MAX", 10000, low=1)
        # "*" widens CORS to any origin; a comma-separated list names origins.
        cors = os.environ.get("CORS_ORIGINS", "")
        self.CORS_ORIGINS: list[str] | str | None = (
            "*" if cors == "*" else [o for o in cors.split(",") if o] or None
        )
        self.MAX_NAME_CHARS = _int("MAX_NAME_CHARS", 32, low=1)
        self.MAX_MESSAGE_CHARS = _int("MAX_MESSAGE_CHARS", 2000, low=1)
        self.MAX_ROOM_CHARS = _int("MAX_ROOM_CHARS", 32, low=1)
        self.MAX_HTTP_BUFFER_BYTES = _int("MAX_HTTP_BUFFER_BYTES", 64 * 1024, low=1024)
        self.PING_INTERVAL_S = _int("PING_INTERVAL_S", 25, low=1)
        self.PING_TIMEOUT_S = _int("PING_TIMEOUT_S", 20, low=1)
        # Token bucket per connection: a burst, then a sustained rate. Logins
        # and messages share one bucket; typing notices have their own, so a
        # typist never spends the tokens of the message being typed.
        self.RATE_BURST = _int("RATE_BURST", 20, low=1)
        self.RATE_PER_S = _float("RATE_PER_S", 10.0, above=0)
        self.TYPING_BURST = _int("TYPING_BURST", 10, low=1)
        self.TYPING_PER_S = _float("TYPING_PER_S", 5.0, above=0)
        # What one connection may cost before any event handler runs: frames
        # (websocket) or packets (polling) and bytes a second, each with a
        # burst of two seconds' worth. Defaults are over 3x what the event
        # limits above let through, so a fast typist meets `rate_limited`,
        # never a closed connection.
        self.TRANSPORT_PACKETS_PER_S = _float("TRANSPORT_PACKETS_PER_S", 60.0, above=0)
        self.TRANSPORT_BYTES_PER_S = _int("TRANSPORT_BYTES_PER_S", 512 * 1024, low=1)
        self.MAX_PACKETS_PER_POST = _int("MAX_PACKETS_PER_POST", 64, low=1)
        # Per-connection send queue: a client that stops reading is dropped
        # when its queue is full, instead of growing the process.
        self.SEND_QUEUE_MAX_MESSAGES = _int("SEND_QUEUE_MAX_MESSAGES", 1000, low=1)
        self.SEND_QUEUE_MAX_BYTES = _int("SEND_QUEUE_MAX_BYTES", 1024 * 1024, low=1024)
        # Bytes buffered per connection for reading; chat frames are small.
        self.READ_BUFFER_BYTES = _int("READ_BUFFER_BYTES", 1024, low=64)
        # Time limits on each stage of a connection.
        self.REQUEST_HEADER_TIMEOUT_S = _float("REQUEST_HEADER_TIMEOUT_S", 5.0, above=0)
        self.REQUEST_BODY_TIMEOUT_S = _float("REQUEST_BODY_TIMEOUT_S", 5.0, above=0)
        self.CONNECT_TIMEOUT_S = _float("CONNECT_TIMEOUT_S", 5.0, above=0)
        # Per client address; 0 turns a cap off.
        self.MAX_CONNECTIONS_PER_IP = _int("MAX_CONNECTIONS_PER_IP", 200)
        self.MAX_SESSIONS_PER_IP = _int("MAX_SESSIONS_PER_IP", 100)
        # Per-client caps count an IPv6 client by this prefix (one host
        # normally holds a /64); IPv4 by its address.
        self.CLIENT_IPV6_PREFIX = _int("CLIENT_IPV6_PREFIX", 64, low=1, high=128)
        # What one client (all its sessions together) may send: chat
        # messages a second and their bytes a second, each with a burst of
        # two seconds' worth; and new rooms it may open an hour.
        self.CLIENT_MESSAGES_PER_S = _float("CLIENT_MESSAGES_PER_S", 20.0)
        self.CLIENT_MESSAGE_BYTES_PER_S = _int("CLIENT_MESSAGE_BYTES_PER_S", 32 * 1024)
        self.CLIENT_ROOMS_PER_HOUR = _int("CLIENT_ROOMS_PER_HOUR", 20)
        # Proxies whose X-Forwarded-For is believed (addresses or networks).
        self.TRUSTED_PROXIES = _networks("TRUSTED_PROXIES", "")
        # Bearer tokens of the moderation API (chat.web.moderation), any of
        # them; a list so that one can be revoked. Empty: no API.
        self.OPERATOR_TOKENS = _list("OPERATOR_TOKENS", "")
        # The socket.io Admin UI at /admin/ (chat.web.admin): off,
        # production (servers and counts) or development (every socket and
        # event; costs CPU per delivery). Needs OPERATOR_TOKENS.
        self.ADMIN_UI = _choice("ADMIN_UI", "off", ("off", "production", "development"))
        # Who may read /metrics and /healthz's details (after TRUSTED_PROXIES).
        self.INTERNAL_NETWORKS = _networks("INTERNAL_NETWORKS", "127.0.0.0/8,::1/128")
        # Host headers this server answers to ("*": any).
        self.ALLOWED_HOSTS = _list("ALLOWED_HOSTS", "localhost,127.0.0.1,::1")
        self.PRESENCE_HEARTBEAT_S = _float("PRESENCE_HEARTBEAT_S", 5.0, above=0)
        self.PRESENCE_TTL_S = _int("PRESENCE_TTL_S", 15, low=1)
        # On SIGTERM, how long this instance's users stay online while their
        # pages reconnect elsewhere (0: announce them as left at once).
        self.PRESENCE_GRACE_S = _float("PRESENCE_GRACE_S", 10.0)
        # On SIGTERM, how long a session may finish the events it has already
        # sent before its connection is closed as it stands.
        self.DRAIN_EVENTS_S = _float("DRAIN_EVENTS_S", 3.0)
        # A dropped connection's user stays online this long (a reload or a
        # network change comes back silently); a logout leaves at once.
        self.LEAVE_GRACE_S = _float("LEAVE_GRACE_S", 5.0)
        self.HISTORY_LENGTH = _int("HISTORY_LENGTH", 50)
        # A room's pub/sub channel stays subscribed this long after its last
        # local member left (chat/cluster/channels.py).
        self.ROOM_LINGER_S = _float("ROOM_LINGER_S", 10.0, above=0)
        # ``login`` lists who is online only in rooms up to this size.
        self.MAX_USERS_LISTED = _int("MAX_USERS_LISTED", 100)
        self.HISTORY_RETAIN = _int("HISTORY_RETAIN", 1000, low=1)
        # Bytes of history kept in Redis, in all and per room: each room may
        # hold HISTORY_MAX_BYTES / MAX_ROOMS (at most HISTORY_ROOM_MAX_BYTES),
        # its oldest messages going first. The defaults fit the shipped
        # Redis (maxmemory 512mb) with room for presence and dedup keys.
        self.HISTORY_MAX_BYTES = _int("HISTORY_MAX_BYTES", 256 * 1024 * 1024, low=1024)
        self.HISTORY_ROOM_MAX_BYTES = _int(
            "HISTORY_ROOM_MAX_BYTES", 1024 * 1024, low=1024
        )
        # A reconnecting client gets at most this many missed messages.
        self.HISTORY_CATCHUP_MAX = _int("HISTORY_CATCHUP_MAX", 200, low=1)
        # A room's history expires this long after its last message.
        self.HISTORY_TTL_S = _int("HISTORY_TTL_S", 7 * 24 * 3600, low=1)
        # Rooms with users or history at once (cluster-wide with Redis).
        self.MAX_ROOMS = _int("MAX_ROOMS", 1000, low=1)
        # Logins run at most this many at a time (0: no bound); past
        # LOGIN_QUEUE_MAX waiting, new sessions get 503 + Retry-After
        # (0: never). See chat/limits/admission.py.
        self.LOGINS_IN_FLIGHT = _int("LOGINS_IN_FLIGHT", 16)
        self.LOGIN_QUEUE_MAX = _int("LOGIN_QUEUE_MAX", 4000)
        self.LOG_FORMAT = _choice("LOG_FORMAT", "text", ("text", "json"))
        # What is deployed: the deploy tooling sets the commit; logged at
        # start and exported as chat_build_info.
        self.RELEASE = os.environ.get("RELEASE") or "dev"
        # Put at the start of every engine.io session id ("<ROUTE_ID>."), so
        # a load balancer can send a session's requests to this instance by
        # its ``sid`` alone, without a cookie; empty: plain ids.
        self.ROUTE_ID = os.environ.get("ROUTE_ID", "")
        if self.ROUTE_ID and not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", self.ROUTE_ID):
            raise SettingError("ROUTE_ID", self.ROUTE_ID, "1-32 of A-Z a-z 0-9 _ -")
        # /readyz fails when handlers failed (raised) more often than this in
        # the last minute: a release whose handlers are broken is not ready.
        self.READY_MAX_FAILURES_PER_MIN = _int("READY_MAX_FAILURES_PER_MIN", 10)
        self.LOG_LEVEL = _choice(
            "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
        )
        # Connects, logins and disconnects: one INFO line this often with
        # their counts (each has its own line at DEBUG; chat/observe/tally.py).
        self.LOG_SESSIONS_EVERY_S = _float("LOG_SESSIONS_EVERY_S", 10.0)
        self.TESTING = False
        self._check_together()
        for variable, meant in misspelled(self.names(), os.environ):
            self.warnings.append(f"{variable} is not a setting; did you mean {meant}?")

    def _check_together(self) -> None:
        """Settings that only work in relation to one another."""
        if self.STORE_REPLICAS and (
            self.STORE_REPLICA_TIMEOUT_MS >= self.STORE_TIMEOUT_S * 1000
        ):
            raise SettingError(
                "STORE_REPLICA_TIMEOUT_MS",
                str(self.STORE_REPLICA_TIMEOUT_MS),
                f"less than STORE_TIMEOUT_S ({self.STORE_TIMEOUT_S:g} s) in ms",
            )
        if self.PRESENCE_TTL_S <= self.PRESENCE_HEARTBEAT_S:
            raise SettingError(
                "PRESENCE_TTL_S",
                str(self.PRESENCE_TTL_S),
                f"more than PRESENCE_HEARTBEAT_S ({self.PRESENCE_HEARTBEAT_S:g})",
            )

    def names(self) -> list[str]:
        """Every setting's name."""
        return sorted(name for name in vars(self) if name.isupper())


class TestConfig(Config):
    """Unit tests: no Redis (the Flask-SocketIO test client refuses a message
    queue) and a fixed key; a test changes a limit on it before building an app."""

    def __init__(self) -> None:
        super().__init__()
        self.SECRET_KEY = "test"
        self.REDIS_URL = None
        self.TESTING = True
        # No background task per app (a test builds many apps).
        self.LOG_SESSIONS_EVERY_S = 0.0
