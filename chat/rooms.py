"""How many rooms may exist at once, so a client cannot litter the server.

A room is counted from its first login until HISTORY_TTL_S after its last
login or message (when its history expires too). ``admit`` refuses a new
room while MAX_ROOMS others are counted; rooms already counted are always
admitted. With Redis the count is the cluster's.
"""

from __future__ import annotations

import collections
import logging
import time

import redis

log = logging.getLogger(__name__)

_ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1] - ARGV[2])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) == false
   and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
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

    def __contains__(self, room: str) -> bool:
        return room in self._used

    def __len__(self) -> int:
        return len(self._used)


class MemoryRooms:
    """Rooms of one instance."""

    def __init__(self, max_rooms: int, ttl_s: int, clock=time.time) -> None:
        self._max = max_rooms
        self._used = LastUse(ttl_s, clock)

    def admit(self, room: str) -> bool:
        """Count ``room`` as used now; False if it is new and the cap is reached."""
        self._used.expire()
        if room not in self._used and len(self._used) >= self._max:
            return False
        self._used.touch(room)
        return True


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
        prefix: str,
        max_rooms: int,
        ttl_s: int,
        clock=time.monotonic,
    ) -> None:
        self._key = f"{prefix}rooms"
        self._max = max_rooms
        self._ttl_s = ttl_s
        self._admit = client.register_script(_ADMIT)
        self._recent = LastUse(min(60.0, ttl_s / 10), clock)

    def admit(self, room: str) -> bool:
        """As ``MemoryRooms.admit``; while Redis is down every room is admitted."""
        self._recent.expire()
        if room in self._recent:
            return True
        try:
            admitted = bool(
                self._admit(
                    keys=[self._key],
                    args=[int(time.time()), self._ttl_s, room, self._max],
                )
            )
        except redis.RedisError as exc:
            log.warning("room count unavailable: %s", exc)
            return True
        if admitted:
            self._recent.touch(room)
        return admitted
