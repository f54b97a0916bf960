"""What one instance keeps: presence, history, the outbox and the limiters.

Built once per app from its config; single-instance stores when REDIS_URL is
unset, Redis-backed ones otherwise.
"""

from __future__ import annotations

import collections
import time
import uuid
from dataclasses import dataclass, field

import gevent

from chat.admission import Admission
from chat.delivery import Delivery
from chat.history import MemoryHistory, RedisHistory
from chat.outbox import MessageStore
from chat.presence import MemoryPresence
from chat.ratelimit import RateLimiter
from chat.recent import RecentMessages
from chat.redis_presence import RedisPresence
from chat.redisconn import redis_client
from chat.rooms import MemoryRooms, RedisRooms
from chat.tally import SessionTally


@dataclass
class ChatState:
    """The per-app services the event handlers use."""

    presence: MemoryPresence | RedisPresence
    history: MemoryHistory | RedisHistory
    limiter: RateLimiter
    typing_limiter: RateLimiter
    rooms: MemoryRooms | RedisRooms
    messages: MessageStore
    instance_id: str
    draining: bool = False
    delivery: Delivery = field(default_factory=Delivery)
    # Most messages one room's replay after a lost subscription delivers.
    replay_limit: int = 1000
    login_locks: dict = field(default_factory=dict)
    # Handler failures (bugs) of the last minute, for /readyz.
    failures: RecentEvents = field(default_factory=lambda: RecentEvents(60.0, 1000))
    # Connects, logins and disconnects, logged as one line per interval.
    sessions: SessionTally = field(default_factory=SessionTally)
    # Logins in flight and waiting (set from the config by build_state).
    admission: Admission = field(default_factory=lambda: Admission(0, 0))
    # The newest messages of the rooms this instance hears (with Redis).
    recent: RecentMessages = field(default_factory=lambda: RecentMessages(0))
    # Per client (chat.clientaddr), all its sessions together: chat
    # messages and their bytes (set from the config by build_state).
    client_messages: RateLimiter = field(default_factory=lambda: RateLimiter(0, 0))
    client_bytes: RateLimiter = field(default_factory=lambda: RateLimiter(0, 0))
    # The Redis client of presence and history (None on one instance).
    redis: object = None


class RecentEvents:
    """How many times something happened within the last ``window_s``.

    Keeps at most ``keep`` timestamps: enough to compare with any threshold
    below it, bounded whatever happens.
    """

    def __init__(self, window_s: float, keep: int) -> None:
        self.window_s = window_s
        self._times: collections.deque = collections.deque(maxlen=keep)

    def add(self) -> None:
        self._times.append(time.monotonic())

    def count(self) -> int:
        since = time.monotonic() - self.window_s
        while self._times and self._times[0] < since:
            self._times.popleft()
        return len(self._times)


def build_state(config) -> ChatState:
    """Pick in-memory or Redis stores from ``config.REDIS_URL``."""
    state = _stores(config)
    state.admission = Admission(config.LOGINS_IN_FLIGHT, config.LOGIN_QUEUE_MAX)
    state.client_messages = _per_client(config.CLIENT_MESSAGES_PER_S)
    state.client_bytes = _per_client(config.CLIENT_MESSAGE_BYTES_PER_S)
    if config.REDIS_URL:
        state.recent = RecentMessages(config.HISTORY_LENGTH)
    return state


def room_budget(config) -> int:
    """Bytes of history one room may keep in Redis."""
    share = config.HISTORY_MAX_BYTES // max(1, config.MAX_ROOMS)
    return max(1, min(config.HISTORY_ROOM_MAX_BYTES, share))


def _per_client(per_s: float) -> RateLimiter:
    """A client's budget: two seconds' worth of burst; 0 turns it off."""
    if per_s <= 0:
        return RateLimiter(float("inf"), float("inf"))
    return RateLimiter(2 * per_s, per_s)


def _stores(config) -> ChatState:
    limiters = (
        RateLimiter(config.RATE_BURST, config.RATE_PER_S),
        RateLimiter(config.TYPING_BURST, config.TYPING_PER_S),
    )
    instance_id = uuid.uuid4().hex[:12]
    if not config.REDIS_URL:
        history = MemoryHistory(config.HISTORY_RETAIN, config.HISTORY_TTL_S)
        return ChatState(
            MemoryPresence(),
            history,
            *limiters,
            MemoryRooms(
                config.MAX_ROOMS, config.HISTORY_TTL_S, config.CLIENT_ROOMS_PER_HOUR
            ),
            MessageStore(history),
            instance_id,
            replay_limit=config.HISTORY_RETAIN,
        )
    client = redis_client(
        config.REDIS_URL, config.REDIS_TIMEOUT_S, health_check_interval=30
    )
    prefix = config.REDIS_KEY_PREFIX
    presence = RedisPresence(
        client, prefix, instance_id, config.PRESENCE_HEARTBEAT_S, config.PRESENCE_TTL_S
    )
    history = RedisHistory(
        client,
        prefix,
        config.HISTORY_RETAIN,
        config.HISTORY_TTL_S,
        store_client=redis_client(
            config.REDIS_URL, config.STORE_TIMEOUT_S, health_check_interval=30
        ),
        client_id_ttl_s=config.CLIENT_ID_TTL_S,
        room_max_bytes=room_budget(config),
    )
    rooms = RedisRooms(
        client,
        prefix,
        config.MAX_ROOMS,
        config.HISTORY_TTL_S,
        config.CLIENT_ROOMS_PER_HOUR,
    )
    messages = MessageStore(
        history,
        config.OUTBOX_MAX_MESSAGES,
        config.OUTBOX_MAX_BYTES,
        spawn=gevent.spawn,
        sleep=gevent.sleep,
    )
    return ChatState(
        presence,
        history,
        *limiters,
        rooms,
        messages,
        instance_id,
        replay_limit=config.HISTORY_RETAIN,
        redis=client,
    )
