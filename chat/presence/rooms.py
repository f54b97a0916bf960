"""How many rooms may exist at once, so a client cannot litter the server.

A room is counted from its first login until HISTORY_TTL_S after its last
login, or until it has neither members nor history. ``admit`` runs once a
login is otherwise accepted (its name is claimed) and refuses a new room
while MAX_ROOMS others are counted, or when the client (chat.transport.clientaddr)
opened CLIENT_ROOMS_PER_HOUR rooms in the last hour. Never refused: the
default room, and a room with other members or with history. With Redis
the count is the cluster's.
"""

from __future__ import annotations

import collections
import logging
import time

import redis

from chat.cluster.keys import Keys
from chat.limits.buckets import RateLimiter

log = logging.getLogger(__name__)

ADMITTED, FULL, CLIENT_OPENED_TOO_MANY = 1, 0, -1

# KEYS: the rooms, the client's opened count, and (on one Redis) the
# room's users and history. ARGV: now, ttl, room, max rooms, always (1/0),
# rooms a client may open an hour (0: any), occupied (1/0: on a Redis
# Cluster the room's own keys are on another shard, so the caller asks
# them first). The login's own name is already in the room's users.
_ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1] - ARGV[2])
local occupied = ARGV[7] == '1'
if not occupied and KEYS[3] then
  occupied = redis.call('HLEN', KEYS[3]) > 1 or redis.call('EXISTS', KEYS[4]) == 1
end
if redis.call('ZSCORE', KEYS[1], ARGV[3]) == false
   and ARGV[5] ~= '1'
   and not occupied then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
    return 0
  end
  if tonumber(ARGV[6]) > 0 then
    local opened = redis.call('INCR', KEYS[2])
    if opened == 1 then redis.call('EXPIRE', KEYS[2], 3600) end
    if opened > tonumber(ARGV[6]) then return -1 end
  end
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
return 1
"""


class LastUse:
    """Rooms by last use, oldest first: expiry costs only what expires.

    Shared by the in-memory room count and history, which forget a room
    HISTORY_TTL_S after its last use as the Redis versions do.
    """

    def __init__(self, ttl_s: float, clock=time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._used: collections.OrderedDict[str, float] = collections.OrderedDict()

    def touch(self, room: str) -> None:
        """Mark ``room`` used now."""
        self._used[room] = self._clock()
        self._used.move_to_end(room)

    def expire(self) -> list[str]:
        """Forget, and return, the rooms unused for longer than the TTL."""
        now = self._clock()
        gone = []
        while self._used and now - next(iter(self._used.values())) > self._ttl_s:
            gone.append(self._used.popitem(last=False)[0])
        return gone

    def forget(self, room: str) -> None:
        self._used.pop(room, None)

    def __contains__(self, room: str) -> bool:
        return room in self._used

    def __len__(self) -> int:
        return len(self._used)


class MemoryRooms:
    """Rooms of one instance."""

    def __init__(
        self, max_rooms: int, ttl_s: int, per_client_hour: int = 0, clock=time.time
    ) -> None:
        self._max = max_rooms
        self._used = LastUse(ttl_s, clock)
        self._opened = _opened_per_hour(per_client_hour)

    def admit(self, room: str, client: str, occupied: bool, always: bool) -> int:
        """Count ``room`` as used now: ADMITTED, FULL (a new room past the
        cap) or CLIENT_OPENED_TOO_MANY. ``occupied``: it has other members
        or history."""
        self._used.expire()
        if room not in self._used and not (occupied or always):
            if len(self._used) >= self._max:
                return FULL
            if not self._opened.allow(client):
                return CLIENT_OPENED_TOO_MANY
        self._used.touch(room)
        return ADMITTED

    def release(self, room: str) -> None:
        """``room`` has neither members nor history: it no longer counts."""
        self._used.forget(room)


def _opened_per_hour(per_hour: int) -> RateLimiter:
    if per_hour <= 0:
        return RateLimiter(float("inf"), float("inf"))
    return RateLimiter(per_hour, per_hour / 3600)


class RedisRooms:
    """Rooms of the cluster: a sorted set of room -> last use.

    A room this instance counted moments ago is admitted without asking
    Redis again: it is counted (a room leaves the set only HISTORY_TTL_S
    after its last use) and its last use needs no finer grain than a
    minute (a tenth of the TTL, if shorter). In a reconnect storm every
    login was one more round trip for this.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys | str,
        max_rooms: int,
        ttl_s: int,
        per_client_hour: int = 0,
        clock=time.monotonic,
    ) -> None:
        self._r = client
        self._keys = keys if isinstance(keys, Keys) else Keys(keys)
        self._max = max_rooms
        self._ttl_s = ttl_s
        self._per_client_hour = per_client_hour
        self._admit = client.register_script(_ADMIT)
        self._recent = LastUse(min(60.0, ttl_s / 10), clock)

    def admit(self, room: str, client: str, occupied: bool, always: bool) -> int:
        """As ``MemoryRooms.admit`` (Redis sees itself whether the room has
        members or history); while Redis is down every room is admitted."""
        self._recent.expire()
        if room in self._recent:
            return ADMITTED
        keys = [self._keys.rooms, self._keys.opened(client)]
        room_keys = [self._keys.room_users(room), self._keys.history(room)]
        try:
            if self._keys.cluster:
                occupied = occupied or self._occupied(*room_keys)
            else:
                keys += room_keys
            admitted = int(
                self._admit(
                    keys=keys,
                    args=[
                        int(time.time()),
                        self._ttl_s,
                        room,
                        self._max,
                        int(always),
                        self._per_client_hour,
                        int(occupied),
                    ],
                )
            )
        except redis.RedisError as exc:
            log.warning("room count unavailable: %s", exc)
            return ADMITTED
        if admitted == ADMITTED:
            self._recent.touch(room)
        return admitted

    def _occupied(self, users: str, history: str) -> bool:
        """The room has other members or history (one round trip, one slot)."""
        pipe = self._r.pipeline(transaction=False)
        pipe.hlen(users)
        pipe.exists(history)
        members, has_history = pipe.execute()
        return members > 1 or bool(has_history)

    def release(self, room: str) -> None:
        """A leave uncounted ``room`` (the leave script does, for an empty
        room without history; chat.state wires presence to this): the next
        login to it is counted again."""
        self._recent.forget(room)
