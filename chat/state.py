"""What one instance keeps, built once per app from its config and handed to
what needs it: presence, history, the outbox, the room cap, the limiters,
and the fan-out of room events.

Single-instance stores when REDIS_URL is unset, Redis-backed ones otherwise.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import gevent

from chat.cluster.clients import is_cluster, redis_client
from chat.cluster.keys import Keys
from chat.limits.admission import Admission
from chat.limits.buckets import RateLimiter
from chat.messages.delivered import Delivered
from chat.messages.fanout import Fanout
from chat.messages.memory import MemoryHistory
from chat.messages.outbox import Outbox
from chat.messages.stream import RedisHistory
from chat.messages.tails import RoomTails
from chat.moderation.store import MemoryModeration, RedisModeration
from chat.observe.tally import ConnectionTally, CountInWindow
from chat.presence.counts import PresenceCounts
from chat.presence.memory import MemoryPresence
from chat.presence.redis_store import RedisPresence
from chat.presence.rooms import MemoryRooms, RedisRooms
from chat.presence.sharded import ShardedPresence


@dataclass
class ChatState:
    """The per-app services the event handlers use."""

    presence: MemoryPresence | RedisPresence
    history: MemoryHistory | RedisHistory
    # Per session: chat events, and typing notices (never a message's cost).
    limiter: RateLimiter
    typing_limiter: RateLimiter
    rooms: MemoryRooms | RedisRooms
    outbox: Outbox
    # Logins in flight and waiting.
    admission: Admission
    # Per client (chat.transport.clientaddr), all its sessions together:
    # chat messages and their bytes.
    client_messages: RateLimiter
    client_bytes: RateLimiter
    instance_id: str
    # The Redis client of presence and history (None on one instance).
    redis: object = None
    # The names of its keys and channels (chat.cluster.keys).
    keys: Keys | None = None
    # Moderation actions per operator: a burst, then a sustained rate.
    operator_actions: RateLimiter = field(default_factory=lambda: RateLimiter(30, 5))
    # Bans, mutes and the audit trail (chat.moderation).
    moderation: MemoryModeration | RedisModeration = field(
        default_factory=MemoryModeration
    )
    # The newest messages of the rooms this instance hears (with Redis).
    tails: RoomTails = field(default_factory=lambda: RoomTails(0))
    delivered: Delivered = field(default_factory=Delivered)
    counts: PresenceCounts = field(default_factory=PresenceCounts)
    # Set by build_state, once the socket.io object exists.
    fanout: Fanout | None = None
    draining: bool = False
    # Most messages one room's replay after a lost subscription delivers.
    replay_limit: int = 1000
    login_locks: dict = field(default_factory=dict)
    # Handler failures (bugs) of the last minute, for /readyz.
    failures: CountInWindow = field(default_factory=lambda: CountInWindow(60.0, 1000))
    # Connects, logins and disconnects, logged as one line per interval.
    tally: ConnectionTally = field(default_factory=ConnectionTally)


def build_state(config, socketio) -> ChatState:
    """Pick in-memory or Redis stores from ``config["REDIS_URL"]``; room events
    go out through ``socketio``."""
    state = _redis_stores(config) if config["REDIS_URL"] else _memory_stores(config)
    state.fanout = Fanout(socketio, state)
    return state


def room_budget(config) -> int:
    """Bytes of history one room may keep in Redis."""
    share = config["HISTORY_MAX_BYTES"] // max(1, config["MAX_ROOMS"])
    return max(1, min(config["HISTORY_ROOM_MAX_BYTES"], share))


def _per_client(per_s: float) -> RateLimiter:
    """A client's budget: two seconds' worth of burst; 0 turns it off."""
    if per_s <= 0:
        return RateLimiter(float("inf"), float("inf"))
    return RateLimiter(2 * per_s, per_s)


def _limits(config) -> dict:
    return {
        "limiter": RateLimiter(config["RATE_BURST"], config["RATE_PER_S"]),
        "typing_limiter": RateLimiter(config["TYPING_BURST"], config["TYPING_PER_S"]),
        "admission": Admission(config["LOGINS_IN_FLIGHT"], config["LOGIN_QUEUE_MAX"]),
        "client_messages": _per_client(config["CLIENT_MESSAGES_PER_S"]),
        "client_bytes": _per_client(config["CLIENT_MESSAGE_BYTES_PER_S"]),
        "instance_id": uuid.uuid4().hex[:12],
        "replay_limit": config["HISTORY_RETAIN"],
    }


def _memory_stores(config) -> ChatState:
    moderation = MemoryModeration()
    history = MemoryHistory(
        config["HISTORY_RETAIN"],
        config["HISTORY_TTL_S"],
        check_send=moderation.check_send,
    )
    return ChatState(
        moderation=moderation,
        presence=MemoryPresence(),
        history=history,
        rooms=MemoryRooms(
            config["MAX_ROOMS"],
            config["HISTORY_TTL_S"],
            config["CLIENT_ROOMS_PER_HOUR"],
        ),
        outbox=Outbox(history),
        **_limits(config),
    )


def _redis_stores(config) -> ChatState:
    limits = _limits(config)
    client = redis_client(
        config["REDIS_URL"], config["REDIS_TIMEOUT_S"], health_check_interval=30
    )
    keys = Keys(config["REDIS_KEY_PREFIX"], is_cluster(config["REDIS_URL"]))
    store_client = redis_client(
        config["REDIS_URL"], config["STORE_TIMEOUT_S"], health_check_interval=30
    )
    moderation = RedisModeration(client, keys, fast=store_client)
    history = RedisHistory(
        client,
        keys,
        config["HISTORY_RETAIN"],
        config["HISTORY_TTL_S"],
        store_client=store_client,
        client_id_ttl_s=config["CLIENT_ID_TTL_S"],
        room_max_bytes=room_budget(config),
        replicas=config["STORE_REPLICAS"],
        replica_timeout_ms=config["STORE_REPLICA_TIMEOUT_MS"],
        moderation_keys=moderation.store_keys,
    )
    presence = (ShardedPresence if keys.cluster else RedisPresence)(
        client,
        keys,
        limits["instance_id"],
        config["PRESENCE_HEARTBEAT_S"],
        config["PRESENCE_TTL_S"],
    )
    rooms = RedisRooms(
        client,
        keys,
        config["MAX_ROOMS"],
        config["HISTORY_TTL_S"],
        config["CLIENT_ROOMS_PER_HOUR"],
    )
    # A leave that uncounts its room says so: the room count's memory of
    # it goes, and only then (a room with history stays counted).
    presence.on_uncounted = rooms.release
    return ChatState(
        presence=presence,
        history=history,
        rooms=rooms,
        outbox=Outbox(
            history,
            config["OUTBOX_MAX_MESSAGES"],
            config["OUTBOX_MAX_BYTES"],
            spawn=gevent.spawn,
            sleep=gevent.sleep,
        ),
        redis=client,
        keys=keys,
        moderation=moderation,
        tails=RoomTails(config["HISTORY_LENGTH"]),
        **limits,
    )
