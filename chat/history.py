"""Recent messages per room, so a new user sees the conversation and a
reconnecting one gets exactly what it missed.

Ids have the form ``<ms>-<seq>`` (a Redis stream id) and increase across the
cluster; ``MemoryHistory`` makes ids of the same form. ``dropped`` is True when
messages after the client's last id were already trimmed away.
"""

from __future__ import annotations

import collections
import functools
import logging
import time

import redis

from chat.rooms import LastUse

log = logging.getLogger(__name__)


def parse_id(entry_id: str) -> tuple[int, int]:
    """``"17-3"`` -> ``(17, 3)``; anything malformed sorts before every id."""
    try:
        ms, _, seq = entry_id.partition("-")
        return int(ms), int(seq or 0)
    except (AttributeError, ValueError):
        return (-1, -1)


def is_entry_id(value) -> bool:
    """True for an id of the form ``<ms>-<seq>`` (both decimal)."""
    if not isinstance(value, str) or len(value) > 41:
        return False
    ms, sep, seq = value.partition("-")
    return bool(sep) and ms.isdigit() and seq.isdigit() and ms.isascii()


def _entry(entry_id: str | None, username: str, message: str) -> dict:
    ts = parse_id(entry_id)[0] if entry_id else int(time.time() * 1000)
    return {"id": entry_id, "username": username, "message": message, "ts": ts}


class MemoryHistory:
    """History of one instance, ``retain`` messages per room at most."""

    def __init__(self, retain: int, ttl_s: int = 7 * 24 * 3600) -> None:
        self._retain = retain
        self._rooms: dict[str, collections.deque] = {}
        self._written = LastUse(ttl_s)
        self._trimmed: dict[str, tuple[int, int]] = {}
        self._last = (0, 0)

    def _next_id(self) -> str:
        now = int(time.time() * 1000)
        ms, seq = self._last
        self._last = (now, 0) if now > ms else (ms, seq + 1)
        return f"{self._last[0]}-{self._last[1]}"

    def append(self, room: str, username: str, message: str) -> dict:
        """Store a message and return it with its id and server timestamp."""
        for gone in self._written.expire():
            self._rooms.pop(gone, None)
            self._trimmed.pop(gone, None)
        self._written.touch(room)
        entries = self._rooms.setdefault(room, collections.deque())
        entry = _entry(self._next_id(), username, message)
        entries.append(entry)
        while len(entries) > self._retain:
            self._trimmed[room] = parse_id(entries.popleft()["id"])
        return entry

    def recent(self, room: str, count: int) -> list[dict]:
        """The last ``count`` messages, oldest first."""
        entries = self._rooms.get(room, ())
        return list(entries)[-count:] if count > 0 else []

    def since(self, room: str, last_id: str, limit: int) -> tuple[list[dict], bool]:
        """The newest ``limit`` messages after ``last_id``; True if some were lost."""
        after = parse_id(last_id)
        found = [e for e in self._rooms.get(room, ()) if parse_id(e["id"]) > after]
        dropped = self._trimmed.get(room, (-1, -1)) > after or len(found) > limit
        return found[-limit:], dropped


def _survive_outage(fallback):
    """While Redis is down the chat goes on without history; say so in the log."""

    def wrap(method):
        @functools.wraps(method)
        def run(self, room, *args):
            try:
                return method(self, room, *args)
            except redis.RedisError as exc:
                log.warning("history unavailable: %s", exc)
                return fallback(room, *args)

        return run

    return wrap


class RedisHistory:
    """History shared by the cluster: one capped stream per room."""

    def __init__(
        self, client: redis.Redis, prefix: str, retain: int, ttl_s: int = 7 * 24 * 3600
    ) -> None:
        self._r = client
        self._p = prefix
        self._retain = retain
        self._ttl_s = ttl_s

    def _key(self, room: str) -> str:
        return f"{self._p}history:{room}"

    @staticmethod
    def _decode(raw_id: bytes, fields: dict) -> dict:
        return _entry(raw_id.decode(), fields[b"u"].decode(), fields[b"m"].decode())

    @_survive_outage(lambda room, username, message: _entry(None, username, message))
    def append(self, room: str, username: str, message: str) -> dict:
        """XADD with an exact cap, so retention is what the README says.

        The stream expires HISTORY_TTL_S after its last message: rooms
        nobody uses any more do not stay in Redis.
        """
        pipe = self._r.pipeline(transaction=False)
        pipe.xadd(
            self._key(room),
            {"u": username, "m": message},
            maxlen=self._retain,
            approximate=False,
        )
        pipe.expire(self._key(room), self._ttl_s)
        raw_id, _ = pipe.execute()
        return _entry(raw_id.decode(), username, message)

    @_survive_outage(lambda room, count: [])
    def recent(self, room: str, count: int) -> list[dict]:
        """The last ``count`` messages, oldest first."""
        if count <= 0:
            return []
        rows = self._r.xrevrange(self._key(room), count=count)
        return [self._decode(i, f) for i, f in reversed(rows)]

    @_survive_outage(lambda room, after_id, limit: [])
    def after(self, room: str, after_id: str, limit: int) -> list[dict]:
        """Up to ``limit`` messages after ``after_id``, oldest first (for replay)."""
        rows = self._r.xrange(self._key(room), min=f"({after_id}", count=limit)
        return [self._decode(i, f) for i, f in rows]

    @_survive_outage(lambda room, last_id, limit: ([], True))
    def since(self, room: str, last_id: str, limit: int) -> tuple[list[dict], bool]:
        """The newest ``limit`` messages after ``last_id``; True if some were lost."""
        after = parse_id(last_id)
        if after < (0, 0):
            return self.recent(room, limit), True
        start = f"({after[0]}-{after[1]}"
        rows = self._r.xrevrange(self._key(room), min=start, count=limit + 1)
        found = [self._decode(i, f) for i, f in reversed(rows)]
        try:
            info = self._r.xinfo_stream(self._key(room))
            trimmed = parse_id(info["max-deleted-entry-id"].decode())
        except redis.ResponseError:
            trimmed = (-1, -1)
        return found[-limit:], trimmed > after or len(found) > limit
